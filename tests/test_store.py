"""The DuckDB index: golden run-directory fixture, idempotent ingest, lock discipline."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ftlab.reports import store

FIXTURE = Path(__file__).parent / "fixtures" / "run_v1"
RUN_ID = "quickstart-base-20261123-104159-e458"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "runs")
    return tmp_path / "runs"


def test_golden_run_dir_ingests(runs: Path) -> None:
    """A run directory written by format 1 keeps indexing the same way."""
    assert store.sync(runs) == (1, 0)
    (row,) = store.list_runs(runs)
    assert row["run_id"] == RUN_ID and row["experiment"] == "quickstart"
    assert row["state"] == "completed" and row["methods"] == "lora"
    assert row["trainable_params"] == 217088
    assert row["eval_loss"] == pytest.approx(5.1196, abs=1e-3)
    assert row["initial_eval_loss"] == pytest.approx(7.7099, abs=1e-3)
    stage = store.query(runs, "SELECT * FROM stages")[0]
    assert stage["hash"] == "9c761d949f36f2480269" and stage["precision"] == "fp32"
    names = {r["name"] for r in store.query(runs, "SELECT DISTINCT name FROM step_metrics")}
    assert {"loss", "eval_loss", "learning_rate", "grad_norm"} <= names


def test_ingest_is_idempotent_and_sync_drops_deleted_runs(runs: Path) -> None:
    store.sync(runs)
    before = store.query(runs, "SELECT count(*) AS n FROM step_metrics")[0]["n"]
    store.ingest_runs(runs, [runs / RUN_ID])
    store.sync(runs)
    assert store.query(runs, "SELECT count(*) AS n FROM step_metrics")[0]["n"] == before
    assert len(store.list_runs(runs)) == 1
    shutil.rmtree(runs / RUN_ID)
    assert store.sync(runs) == (0, 1)
    assert store.list_runs(runs) == []
    assert store.query(runs, "SELECT count(*) AS n FROM step_metrics")[0]["n"] == 0


def test_reader_without_index_gets_empty_result(tmp_path: Path) -> None:
    assert store.list_runs(tmp_path / "nothing-here") == []
    assert not (tmp_path / "nothing-here").exists()  # a reader in the wrong cwd made runs/


def test_interrupted_run_is_indexed_as_such(runs: Path) -> None:
    import json

    status = runs / RUN_ID / "status.json"
    data = json.loads(status.read_text())
    data.update(state="running", pid=2**22 + 12345)  # no such process
    status.write_text(json.dumps(data))
    store.sync(runs)
    assert store.list_runs(runs)[0]["state"] == "interrupted"


def test_a_run_killed_before_its_status_is_interrupted(runs: Path) -> None:
    """Issue 15.11: a run directory with run.json but no status.json (a kill while the
    run was being created) and no process is `interrupted` (resumable), not `unknown`."""
    from ftlab.runner.rundir import RunDir

    (runs / RUN_ID / "status.json").unlink()
    assert RunDir(runs / RUN_ID).status()["state"] == "interrupted"
    store.sync(runs)
    assert store.list_runs(runs)[0]["state"] == "interrupted"


def _hold_writer(root: str, seconds: float, ready) -> None:  # pragma: no cover - subprocess
    with store.connect(Path(root), write=True):
        ready.set()
        time.sleep(seconds)


def _ingest_loop(root: str, n: int) -> None:  # pragma: no cover - subprocess
    for _ in range(n):
        store.ingest_runs(Path(root), [Path(root) / RUN_ID])


def test_reader_waits_for_a_running_ingest_instead_of_failing(runs: Path) -> None:
    store.sync(runs)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=_hold_writer, args=(str(runs), 1.5, ready))
    writer.start()
    assert ready.wait(60)
    start = time.time()
    rows = store.list_runs(runs)  # DuckDB alone would fail at once on the file lock
    assert time.time() - start > 0.5
    assert len(rows) == 1
    writer.join(30)
    assert writer.exitcode == 0


def test_two_writer_processes_never_collide(runs: Path) -> None:
    store.sync(runs)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ingest_loop, args=(str(runs), 5)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(store.list_runs(runs)) == 1


def test_busy_store_times_out_with_a_clear_error(runs: Path) -> None:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=_hold_writer, args=(str(runs), 3, ready))
    writer.start()
    assert ready.wait(60)
    with pytest.raises(store.StoreBusy, match="locked by another ftlab process"):
        store.query(runs, "SELECT 1", timeout=0.3)
    writer.join(30)


def _sync(root: str) -> None:  # pragma: no cover - subprocess
    store.sync(Path(root))


def _open_fifo_writer(fifo: Path, reader: mp.process.BaseProcess) -> int:
    """Open `fifo` for writing once the reader process has opened it (without hanging)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and reader.is_alive():
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it yet
            time.sleep(0.02)
    raise AssertionError(f"the sync never read {fifo}")


def test_a_slow_sync_never_overwrites_a_newer_ingest(runs: Path) -> None:
    """Issue 15.8: `ftlab sync` reads run A, then takes its time on run B; meanwhile run A
    completes and indexes itself. The sync must not write A's old state over the new one
    (it read the run directories before taking the index lock: DuckDB said `running`
    while status.json said `completed`), nor drop a run indexed since it listed them."""
    import json
    import threading

    status = runs / RUN_ID / "status.json"
    status.write_text(json.dumps({"state": "running", "pid": os.getpid(), "error": ""}))
    slow = runs / (RUN_ID[:-4] + "ffff")  # sorts after RUN_ID: the sync reads it second
    shutil.copytree(runs / RUN_ID, slow)
    (slow / "metrics.jsonl").unlink()
    os.mkfifo(slow / "metrics.jsonl")  # the sync blocks here until the test writes it
    sync = mp.get_context("spawn").Process(target=_sync, args=(str(runs),))
    sync.start()
    fifo = _open_fifo_writer(slow / "metrics.jsonl", sync)  # the sync has read RUN_ID
    try:
        status.write_text(json.dumps({"state": "completed", "pid": os.getpid(), "error": ""}))
        fresh = runs / (RUN_ID[:-4] + "0000")  # a run the sync never listed
        shutil.copytree(FIXTURE / RUN_ID, fresh)
        newer = threading.Thread(target=store.ingest_runs, args=(runs, [runs / RUN_ID, fresh]))
        newer.start()  # what `ftlab run` does when the run ends
        newer.join(2)  # done at once, unless the sync holds the index (then it waits)
    finally:
        os.write(fifo, (FIXTURE / RUN_ID / "metrics.jsonl").read_bytes())
        os.close(fifo)
    sync.join(120)
    newer.join(120)
    assert sync.exitcode == 0 and not newer.is_alive()
    states = {r["run_id"]: r["state"] for r in store.list_runs(runs)}
    assert states[RUN_ID] == "completed" and fresh.name in states, states


def _hold(db: Path) -> subprocess.Popen[str]:
    """Another process (a notebook, say) holding the index open read-only."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(db)!r}, read_only=True)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_outside_reader_holding_the_file_gives_a_clear_error_and_a_catch_up(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.6: a process outside ftlab holding runs/ftlab.duckdb makes `ftlab sync`
    say what to do (no traceback); an ingest that found it busy is made by the next
    command that reads the index."""
    store.sync(runs)
    copy = runs / (RUN_ID[:-4] + "ffff")
    shutil.copytree(runs / RUN_ID, copy)
    holder = _hold(runs / store.DB_NAME)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "ftlab.cli", "sync", "--dir", str(runs)],
            capture_output=True,
            text=True,
            env={**os.environ, "FTLAB_INDEX_WAIT_S": "1"},
        )
        assert out.returncode == 1
        assert "another process holds" in out.stderr and "Traceback" not in out.stderr
        monkeypatch.setattr(store, "OUTSIDE_WAIT_S", 0.5)
        with pytest.raises(store.StoreBusy):
            store.ingest_runs(runs, [copy])
    finally:
        holder.communicate("")
    assert (runs / store.UNINDEXED / copy.name).is_file()
    assert {r["run_id"] for r in store.list_runs(runs)} == {RUN_ID, copy.name}
    assert not (runs / store.UNINDEXED / copy.name).exists()


@pytest.mark.integration
def test_a_run_that_finishes_while_the_index_is_held_is_completed(
    write, sft_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.6: `ftlab run` never reports a completed run as failed because the index
    was busy; the run shows up in `ftlab runs` once the holder lets go."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    runs_dir = tmp_path / "runs"
    spec_file = write(
        "s.yaml",
        "name: busy\ndata:\n  sft: {path: data/support_sft.jsonl, overlong: truncate,"
        " max_rows: 16}\n"
        "stages:\n  - {name: sft, method: lora, train: {max_steps: 2, max_length: 64, "
        f"precision: fp32}}}}\noutput: {{dir: {runs_dir}}}\n",
    )
    store.sync(runs_dir)  # creates the (empty) index file the holder opens
    ((name, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
    monkeypatch.setattr(store, "OUTSIDE_WAIT_S", 0.5)
    holder = _hold(runs_dir / store.DB_NAME)
    try:
        result = execute.execute(rd, spec)
    finally:
        holder.communicate("")
    assert result.state == "completed" and rd.status()["state"] == "completed"
    assert [r["run_id"] for r in store.list_runs(runs_dir)] == [rd.run_id]


def test_every_run_argument_takes_an_id_a_prefix_or_a_directory(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.10: `ftlab wandb log RUN` logs into the run's own folder (not ./RUN/),
    `wandb show RUN` takes an id, and a path that is not a run is refused, not created."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    log = cli.invoke(app, ["wandb", "log", RUN_ID[:20], "--mode", "offline"])
    assert log.exit_code == 0, log.output
    assert not (tmp_path / RUN_ID[:20]).exists() and not (tmp_path / RUN_ID).exists()
    assert list((runs / RUN_ID / "wandb").glob("offline-run-*"))
    show = cli.invoke(app, ["wandb", "show", RUN_ID])
    assert show.exit_code == 0, show.output
    assert "offline W&B run" in show.output
    for bad in ("/nonexistent/dir", "nope", str(runs)):
        out = cli.invoke(app, ["wandb", "log", bad, "--mode", "offline"])
        assert out.exit_code == 2, (bad, out.output)
        assert "Traceback" not in out.output
    assert not Path("/nonexistent/dir").exists()


def test_time_columns_say_what_they_time_with_units(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.13: no bare `time` column meaning the last stage in one table and the
    whole run in another; every duration has its unit."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app
    from ftlab.cli.results import print_results
    from ftlab.runner.execute import RunResult
    from ftlab.runner.rundir import RunDir

    store.sync(runs)
    rd = RunDir(runs / RUN_ID)
    print_results(
        [RunResult(rd.path, "base", "completed", {n: rd.stage(n) for n in rd.stage_names()})]
    )
    table = capsys.readouterr().out
    assert "stage time" in table and "recipe time" in table
    stage_s = rd.stage("sft")["summary"]["wall_time_s"]
    assert f"{stage_s:.0f}s" in table
    for args in (["runs", "--dir", str(runs)], ["compare", "--dir", str(runs)]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, out.output
        header = out.output.replace("\n", " ")
        assert ("run time" if args[0] == "runs" else "recipe time") in header, args
        assert " time " not in header.replace("run time", "").replace("recipe time", ""), args
    wall = store.list_runs(runs)[0]["wall_time_s"]
    assert f"{wall:.0f}s" in CliRunner().invoke(app, ["runs", "--dir", str(runs)]).output


def test_a_key_older_runs_lack_is_not_a_difference(runs: Path) -> None:
    """A new user compared runs from before and after the schema grew `model.chat_template`
    and saw a column of `-` vs '' — a difference that is not one."""
    from ftlab.reports.compare import compare

    newer = runs / (RUN_ID[:-4] + "beef")
    shutil.copytree(runs / RUN_ID, newer)
    spec = (newer / "spec.yaml").read_text()
    (newer / "spec.yaml").write_text(
        spec.replace("model:\n", "model:\n  chat_template: ''\n  attn_implementation: auto\n", 1)
    )
    store.sync(runs)
    cmp = compare(runs, [RUN_ID, newer.name])
    assert not any("chat_template" in k or "attn" in k for r in cmp.rows for k in r.params)


def test_golden_eval_records_of_format_1_index_with_their_item_scores(runs: Path) -> None:
    """Eval records written before they carried `item_scores` (and a judge's verdicts as
    verdict_ab / verdict_ba) still index: each aggregate metric with the per-item score it
    averages, each verdict with its position — so comparisons of old runs stay paired."""
    store.sync(runs)
    scores = {
        (r["eval"], r["metric"]): r["score"]
        for r in store.query(runs, "SELECT DISTINCT eval, metric, score FROM eval_results")
    }
    assert scores[("prefs", "accuracy")] == "correct"
    assert scores[("prefs", "accuracy_per_token")] == "correct_per_token"
    assert scores[("judge", "win_rate")] == "win"
    verdicts = store.query(
        runs, "SELECT position, verdict, retried FROM judge_verdicts ORDER BY item, position"
    )
    assert [(v["position"], v["verdict"], v["retried"]) for v in verdicts] == [
        ("ab", "A", False),
        ("ba", "B", True),
        ("ab", "B", False),
        ("ba", "A", True),
    ]
    from ftlab.reports.compare import Items

    items = Items.load(runs, [RUN_ID], ["prefs.accuracy"])
    by_item = items.as_dict("prefs.accuracy", items.of("prefs.accuracy", [RUN_ID]))
    assert by_item == {"item0": 1.0, "item1": 1.0, "item2": 1.0, "item3": 0.0}  # sft's


def test_an_index_of_schema_3_migrates_in_place(tmp_path: Path) -> None:
    """A DuckDB file written by schema 3 (no eval_results.score) gains the column on the
    next writing connection, filled with what its rows' metrics meant."""
    import duckdb

    root = tmp_path / "runs"
    root.mkdir()
    old = store.SCHEMA.replace(", score VARCHAR", "")
    with duckdb.connect(str(root / store.DB_NAME)) as con:
        con.execute(old)
        con.execute("INSERT INTO meta VALUES ('schema_version', '3')")
        con.execute(
            "INSERT INTO eval_results (run_id, eval, metric, value) VALUES "
            "('r', 'prefs', 'accuracy', 0.5), ('r', 'ppl', 'loss', 2.0)"
        )
    with store.connect(root, write=True) as con:
        rows = con.execute("SELECT metric, score FROM eval_results ORDER BY metric").fetchall()
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert rows == [("accuracy", "correct"), ("loss", "loss")]
    assert version == (str(store.SCHEMA_VERSION),)


def _rerun(runs: Path, suffix: str, *, state: str = "completed", created: float = 0.0) -> str:
    """Another run of the golden fixture's recipe (same experiment and variant)."""
    import json

    src = runs / RUN_ID
    run_id = RUN_ID[:-4] + suffix
    shutil.copytree(src, runs / run_id)
    info = json.loads((runs / run_id / "run.json").read_text())
    info.update(run_id=run_id, created=info["created"] + created)
    (runs / run_id / "run.json").write_text(json.dumps(info))
    status = json.loads((runs / run_id / "status.json").read_text())
    (runs / run_id / "status.json").write_text(json.dumps({**status, "state": state}))
    return run_id


def test_a_rerun_experiment_compares_its_latest_run_per_variant(runs: Path) -> None:
    """Issue 19 (found again by a new user): after re-runs every run of a variant was a row
    labelled alike (`base`, `base`, `base`), the report's curves and explorer merged them
    by label, and a failed run became the baseline. Now an experiment compares its latest
    run per variant (saying how many it hid), `all_runs` shows each run under a unique
    label, and a run that did not complete is never the default baseline."""
    from ftlab.reports import compare as compare_mod

    failed = _rerun(runs, "f001", state="failed", created=-100.0)  # older than the golden run
    newer = _rerun(runs, "n002", created=100.0)
    store.sync(runs)
    cmp = compare_mod.compare(runs, ["quickstart"])
    assert [r.run_ids for r in cmp.rows] == [[newer]]
    assert any("2 older runs" in n for n in cmp.notes)
    every = compare_mod.compare(runs, ["quickstart"], all_runs=True)
    labels = [r.label for r in every.rows]
    assert len(set(labels)) == 3 and all(label.startswith("base") for label in labels)
    assert every.baseline is not None and failed not in every.baseline.run_ids


def test_eval_loss_is_compared_only_between_runs_of_one_objective(runs: Path) -> None:
    """Issue 19: ORPO vs DPO "+3.11" and DPO vs LoRA SFT "−4.55" were printed as if
    eval losses of different objectives meant something side by side. A stage records its
    objective and eval data; compare gives no Δ across objectives and says why."""
    import json

    from ftlab.reports import compare as compare_mod

    sft = runs / RUN_ID / "stages" / "sft" / "stage.json"
    record = json.loads(sft.read_text())
    record["summary"]["objective"] = "nll:nll:assistant"
    sft.write_text(json.dumps(record))
    dpo = _rerun(runs, "d003", created=100.0)
    record = runs / dpo / "stages" / "sft" / "stage.json"
    stage = json.loads(record.read_text())
    stage["method"] = "dpo"
    stage["summary"].update(objective="dpo:beta=0.1", eval_loss=0.69)
    record.write_text(json.dumps(stage))
    spec = runs / dpo / "spec.yaml"
    spec.write_text(spec.read_text().replace("method: lora", "method: dpo"))
    store.sync(runs)
    cmp = compare_mod.compare(runs, ["quickstart"], all_runs=True)
    other = next(r for r in cmp.rows if not r.baseline)
    assert other.cells["eval_loss"].value == 0.69 and other.cells["eval_loss"].diff is None
    assert any("eval_loss" in n and "objective" in n for n in cmp.notes), cmp.notes


def test_two_experiments_rows_are_labelled_with_their_experiment(runs: Path) -> None:
    """Issue 19: comparing two experiments showed `base (baseline)` and `base` — two
    different recipes under one name. Rows from several experiments carry theirs."""
    import json

    from ftlab.reports import compare as compare_mod

    other = _rerun(runs, "x004", created=100.0)
    info = json.loads((runs / other / "run.json").read_text())
    (runs / other / "run.json").write_text(json.dumps({**info, "experiment": "json-align"}))
    spec = runs / other / "spec.yaml"
    spec.write_text(spec.read_text().replace("r: 16", "r: 8"))
    store.sync(runs)
    cmp = compare_mod.compare(runs, ["quickstart", "json-align"])
    assert [r.label for r in cmp.rows] == ["quickstart/base", "json-align/base"]
    assert [r.label for r in compare_mod.compare(runs, ["quickstart"]).rows] == ["base"]
    # the same recipe in two experiments is still two rows (not one "×2 seeds" row)
    spec.write_text(spec.read_text().replace("r: 8", "r: 16"))
    store.sync(runs)
    cmp = compare_mod.compare(runs, ["quickstart", "json-align"])
    assert [r.label for r in cmp.rows] == ["quickstart/base", "json-align/base"]


def test_a_cached_rerun_costs_what_its_stages_took_to_train(runs: Path) -> None:
    """A new user saw a re-run whose SFT came from the stage cache priced at its 0.4 s of
    run time, next to the 40 s run that trained it. Compare's cost is the recipe time: each
    stage's training time, a reused stage counted at what it took when trained."""
    import json

    from typer.testing import CliRunner

    from ftlab.cli.main import app
    from ftlab.reports import compare as compare_mod

    rerun = _rerun(runs, "c003", created=100.0)
    status = json.loads((runs / rerun / "status.json").read_text())
    (runs / rerun / "status.json").write_text(json.dumps({**status, "wall_time_s": 0.4}))
    stage_file = runs / rerun / "stages" / "sft" / "stage.json"
    stage = json.loads(stage_file.read_text())
    stage_file.write_text(json.dumps({**stage, "reused_from": RUN_ID}))
    store.sync(runs)
    trained_s = json.loads((runs / RUN_ID / "stages/sft/stage.json").read_text())["summary"][
        "wall_time_s"
    ]
    rows = compare_mod.compare(runs, ["quickstart"], all_runs=True).rows
    assert [r.wall_time_s for r in rows][1] == 0.4
    assert [r.recipe_time_s for r in rows] == [trained_s, trained_s]
    out = CliRunner().invoke(app, ["compare", rerun, "--dir", str(runs)])
    assert out.exit_code == 0, out.output
    assert f"{trained_s:.0f}s" in out.output and "0.4" not in out.output


def test_metrics_are_named_by_their_last_part_as_columns_are(runs: Path) -> None:
    """A new user typed `-m accuracy` (as `-c r` works for columns) and got 'no metric'."""
    from ftlab.reports import compare as compare_mod

    store.sync(runs)
    picked = compare_mod.compare(runs, metrics=["accuracy", "win_rate", "eval_loss"])
    assert picked.metrics == ["prefs.accuracy", "judge.win_rate", "eval_loss"]
    with pytest.raises(compare_mod.CompareError, match="ambiguous: judge.position"):
        compare_mod.compare(runs, metrics=["judge"])


def test_runs_commands_say_what_they_did(runs: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """Fresh-eyes findings: `runs tag` ended its line with 'listed'; `rm` answered 'n' exited
    without a word; `ftlab runs` from another directory printed an empty table and created
    runs/ftlab.duckdb.lock there."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from ftlab.cli import manage
    from ftlab.cli.main import app

    store.sync(runs)
    cli = CliRunner()
    tagged = cli.invoke(app, ["runs", "tag", RUN_ID, "keep", "--dir", str(runs)])
    assert tagged.exit_code == 0 and tagged.output.strip() == f"{RUN_ID}: #keep"
    monkeypatch.setattr(manage, "sys", SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True)))
    kept = cli.invoke(app, ["runs", "rm", RUN_ID, "--dir", str(runs)], input="n\n")
    assert kept.exit_code == 1 and f"nothing removed; {RUN_ID} is kept" in kept.output
    assert (runs / RUN_ID).is_dir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for args in (["runs"], ["compare"], ["report"], ["dashboard"], ["sync"]):
        lost = cli.invoke(app, args)
        assert lost.exit_code == 2 and "no runs directory runs/ here" in lost.output, args
        assert not Path("runs").exists(), args  # `sync` made an empty index here
    by_path = cli.invoke(app, ["compare", str(runs / RUN_ID), "--dir", str(runs)])
    assert by_path.exit_code == 0 and "base" in by_path.output, by_path.output


def test_each_seed_shows_a_row_per_training_seed(runs: Path) -> None:
    """Fresh-eyes finding: runs that differ only by seed were always one 'mean ± sd' row;
    `--all` still grouped them, so one seed's outlier run could not be seen."""
    from ftlab.reports import compare as compare_mod

    seeded = _rerun(runs, "s007", created=100.0)
    with open(runs / seeded / "spec.yaml", "a") as spec:
        spec.write("train_seed: 7\n")
    store.sync(runs)
    assert [r.label for r in compare_mod.compare(runs).rows] == ["base ×2 seeds"]
    named = compare_mod.compare(runs, each_seed=True, baseline="base seed=7").baseline
    assert named is not None and named.run_ids == [seeded]
    # --baseline by the variant's name, not only the full label 'base ×2 seeds'
    assert compare_mod.compare(runs, baseline="base").baseline is not None
    each = compare_mod.compare(runs, each_seed=True)
    assert [(r.label, r.run_ids) for r in each.rows] == [
        ("base seed=42", [RUN_ID]),
        ("base seed=7", [seeded]),
    ]
    assert (
        compare_mod._used(
            {"stages.sft.method": "full", "stages.sft.adapter.r": 8}, "stages.sft.adapter.r"
        )
        is None
    )  # a full fine-tune's row shows no LoRA rank
