"""Evaluation during training (issue 21): evals on snapshots every N steps, stored per item
with the step, drawn by the report; `select:` keeps the best snapshot as the artifact.

The shipped `experiments/eval_during_training.yaml` is the constructed case: full
fine-tuning of `tiny` on 48 conversations at a constant, high learning rate overfits, so
the held-out loss is lowest in the middle of training and intent accuracy peaks before
the end (measured: 0.125 0.333 0.458 0.533 0.483 0.483 at steps 10…60).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.reports import store

from .conftest import EXPERIMENTS

SPEC = EXPERIMENTS / "eval_during_training.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("edt") / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", str(SPEC), f"output.dir={runs}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return runs, result.stdout


def _stage(runs: Path) -> dict:
    from ftlab.runner.rundir import RunDir

    (run_dir,) = [p for p in runs.iterdir() if p.name.startswith("eval_during_training-")]
    return RunDir(run_dir).stage("sft")


@pytest.mark.slow
@pytest.mark.integration
def test_every_eval_kind_stores_per_item_rows_at_each_step(trained: tuple[Path, str]) -> None:
    runs, _ = trained
    rows = store.query(
        runs,
        """SELECT eval, target, count(DISTINCT item) AS items FROM eval_samples
           GROUP BY eval, target ORDER BY eval, target""",
    )
    got = {(r["eval"], r["target"]): r["items"] for r in rows}
    steps = [f"sft@{s}" for s in (10, 20, 30, 40, 50, 60)]
    for ev, items in (("exact", 8), ("judged", 8), ("heldout", 40), ("intent", 120)):
        for target in [*steps, "sft"]:
            assert got.get((ev, target)) == items, (ev, target, got)
    # the compare table reads only the stage's own model (is_last), never a snapshot
    last = store.query(runs, "SELECT DISTINCT target FROM eval_results WHERE is_last")
    assert [r["target"] for r in last] == ["sft"]


@pytest.mark.slow
@pytest.mark.integration
def test_select_keeps_the_middle_checkpoint_and_export_holds_it(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    from ftlab.runner.export import export
    from ftlab.runner.rundir import RunDir

    runs, stdout = trained
    record = _stage(runs)
    selected = record["summary"]["selected"]
    values = {int(s): v for s, v in selected["values"].items()}
    assert sorted(values) == [10, 20, 30, 40, 50, 60]
    step = selected["step"]
    assert step == max(values, key=values.get)  # the highest intent accuracy
    assert 10 < step < 60 and values[60] < values[step], values  # a middle one, not the last
    snaps = record["summary"]["snapshots"]
    assert record["artifact"]["path"] == snaps[str(step)] and Path(snaps[str(step)]).is_dir()
    # the stored results of the stage's model are the kept step's, not the last's
    res = store.query(
        runs,
        """SELECT eval, target, value FROM eval_results
           WHERE metric IN ('loss', 'support_intent_mc.acc')""",
    )
    got = {(r["eval"], r["target"]): r["value"] for r in res}
    assert got[("intent", "sft")] == pytest.approx(got[("intent", f"sft@{step}")])
    assert got[("heldout", "sft")] == pytest.approx(got[("heldout", f"sft@{step}")])
    assert got[("heldout", "sft")] != pytest.approx(got[("heldout", "sft@60")])
    # held-out loss falls, then rises: overfitting (1.317 1.156 1.151 1.196 1.255 1.291)
    loss = [got[("heldout", f"sft@{s}")] for s in (10, 20, 30, 40, 50, 60)]
    assert min(loss) < loss[0] and min(loss) < loss[-1]
    # the closing table says which step the stage kept
    assert f"kept step {step}/60 (intent.support_intent_mc.acc, max)" in stdout
    # `ftlab export` writes the kept checkpoint's weights
    (run_dir,) = [p for p in runs.iterdir() if p.name.startswith("eval_during_training-")]
    out = export(RunDir(run_dir), tmp_path / "export")
    from safetensors.torch import load_file

    exported = load_file(out / "model.safetensors")
    kept = load_file(Path(snaps[str(step)]) / "model.safetensors")
    last = load_file(Path(snaps["60"]) / "model.safetensors")
    assert all(torch.equal(exported[k], kept[k]) for k in kept)
    assert any(not torch.equal(exported[k], last[k]) for k in last)


@pytest.mark.slow
@pytest.mark.integration
def test_report_draws_each_eval_against_the_step(trained: tuple[Path, str]) -> None:
    from ftlab.reports import html as html_mod

    runs, _ = trained
    page = html_mod.write(runs, ["eval_during_training"], None).read_text()
    assert "Evals during training" in page
    for title in (
        "exact exact_match during sft",
        "heldout loss during sft",
        "judged win_rate",
        "intent support_intent_mc.acc during sft",
    ):
        assert title in page, title
    section = page[page.index("id='during'") :]
    assert section.count("<polyline") >= 4 and "stroke-opacity" in section  # intervals
    # the step select: kept is ringed on each of the stage's curves (a fresh-eyes find)
    step = _stage(runs)["summary"]["selected"]["step"]
    tip = f"kept step {step} (select: intent.support_intent_mc.acc, maximize)"
    assert section.count(f"<title>{tip}</title>") >= 4, section[:3000]


@pytest.mark.parametrize(
    ("edit", "where", "says"),
    [
        (
            {"stages.sft.select.metric": "intnt.support_intent_mc.acc"},
            "stages.0.select.metric",
            "Did you mean 'intent'",
        ),
        ({"evals.0.every": 0}, "stages.0.select.metric", "give eval 'intent' every: N"),
        ({"evals.0.on": ["base"], "evals.0.every": 5}, "evals.0.every", "on a trained stage"),
    ],
)
def test_select_and_every_are_checked(edit: dict, where: str, says: str) -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    overrides = [f"{k}={v}".replace("'", "") for k, v in edit.items()]
    result = CliRunner().invoke(app, ["validate", str(SPEC), *overrides])
    assert result.exit_code != 0, result.output
    assert where in result.output and says in result.output, result.output


@pytest.mark.slow
@pytest.mark.integration
def test_eval_again_keeps_the_snapshots_results(trained: tuple[Path, str], tmp_path) -> None:
    """Fresh-eyes finds: `ftlab eval RUN` dropped every `<stage>@<step>` result, and
    `ftlab eval RUN --evals FILE` refused a run whose stage has `select:`."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    runs, _ = trained
    (run_dir,) = [p for p in runs.iterdir() if p.name.startswith("eval_during_training-")]
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--dir", str(runs)])
    assert result.exit_code == 0, result.output
    rows = store.query(runs, "SELECT DISTINCT target FROM eval_results WHERE eval = 'heldout'")
    assert {r["target"] for r in rows} >= {"sft@10", "sft@30", "sft@60", "sft"}
    extra = tmp_path / "more.yaml"
    extra.write_text("evals:\n  - {name: words, kind: chrf, data: prompts, split: all, limit: 4}\n")
    result = CliRunner().invoke(
        app, ["eval", str(run_dir), "--evals", str(extra), "--dir", str(runs)]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
@pytest.mark.integration
def test_changing_only_select_chooses_again_without_training(trained: tuple[Path, str]) -> None:
    """Fresh-eyes find: a typo fixed in `select:` (or another metric) retrained the stage;
    now the training and its snapshots are reused and only the choice is made again."""
    runs, _ = trained
    result = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", str(SPEC), f"output.dir={runs}",
         "stages.sft.select.metric=heldout.loss"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "select: anew" in result.stdout and "training: step" not in result.stdout
    assert "kept step 30/60 (heldout.loss, min)" in result.stdout  # 1.151, the lowest


@pytest.mark.integration
def test_a_grpo_stage_gets_a_task_metric_at_each_eval_step(tmp_path: Path) -> None:
    """Issue 21: online RL with a task metric while it trains — a reference-answer eval
    every step of a GRPO stage, next to an eval-only (log_only) reward in its step logs."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    from .conftest import DATA

    spec_file = tmp_path / "rl.yaml"
    spec_file.write_text(
        f"name: rltask\ndata:\n  p: {{path: {DATA}/support_eval.jsonl, format: prompts, "
        "max_rows: 8, val_fraction: 0.0}\n"
        "stages:\n  - name: rl\n    method: grpo\n    data: p\n    adapter: {r: 4}\n"
        "    params:\n      rewards: [{name: keywords}, {name: length, log_only: true}]\n"
        "      num_generations: 2\n      max_completion_length: 8\n"
        "    train: {max_steps: 2, batch_size: 4, precision: fp32, learning_rate: 1.0e-3,\n"
        "            logging_steps: 1}\n"
        "evals:\n  - {name: task, kind: chrf, data: p, split: all, limit: 2, every: 1,\n"
        "     params: {generation: {max_new_tokens: 8}}}\n"
        f"output: {{dir: {tmp_path / 'runs'}}}\n"
    )
    ((name, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=name, spec_file=spec_file, overrides=[])
    assert execute.execute(rd, spec).state == "completed"
    rows = store.query(
        tmp_path / "runs",
        "SELECT target, count(*) AS n FROM eval_samples WHERE eval = 'task' AND metric = 'chrf'"
        " GROUP BY target ORDER BY target",
    )
    assert {r["target"]: r["n"] for r in rows} == {"rl": 2, "rl@1": 2, "rl@2": 2}
    steps = [r for r in rd.metrics() if r.get("stage") == "rl" and "reward" in r]
    assert steps and all("rewards/length/mean" in r for r in steps)


def test_plan_counts_the_snapshots_and_says_when_every_is_too_large() -> None:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    result = CliRunner().invoke(app, ["plan", str(SPEC)])
    assert result.exit_code == 0, result.output
    assert "snapshots: 5 (every 10 of 60 steps)" in result.output
    big = [f"evals.{i}.every=100" for i in range(4)]
    result = CliRunner().invoke(app, ["plan", str(SPEC), *big])
    assert "every: 100 ≥ the stage's 60 steps: only its last step" in result.output
