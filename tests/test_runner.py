"""The runner end to end: run directories, the stage cache, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.reports import store
from ftlab.runner import execute
from ftlab.runner.rundir import RunDir
from ftlab.runner.spec.load import SpecError, expand_runs

SPEC = """\
name: cachetest
data:
  sft: {{path: data/support_sft.jsonl, overlong: truncate, max_rows: 48, val_fraction: 0.125}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: {steps}, batch_size: 4, max_length: 96,
             logging_steps: 2, save_steps: {save}, precision: fp32}}
output: {{dir: {runs}}}
"""


def _spec(write, sft_data, tmp_path: Path, steps: int = 6, save: int = 50) -> Path:
    return write("spec.yaml", SPEC.format(steps=steps, save=save, runs=tmp_path / "runs"))


def _resume(ref: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`ftlab run --resume REF` in a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", "--resume", ref],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def _run(path: Path, overrides: list[str] | None = None) -> execute.RunResult:
    ((name, spec),) = expand_runs(path, overrides or [])
    rd = execute.create_run(spec, variant=name, spec_file=path, overrides=overrides or [])
    return execute.execute(rd, spec)


@pytest.mark.integration
def test_run_directory_and_index(write, sft_data, tmp_path) -> None:
    res = _run(_spec(write, sft_data, tmp_path))
    rd = RunDir(res.run_dir)
    for name in (
        "run.json",
        "spec.yaml",
        "env.json",
        "status.json",
        "metrics.jsonl",
        "summary.json",
        "stages/sft/stage.json",
        "stages/sft/artifact/adapter_model.safetensors",
    ):
        assert (rd.path / name).is_file(), name
    assert rd.status()["state"] == "completed"
    assert not (rd.path / "stages/sft/checkpoints").exists()  # cleaned after success
    env = json.loads((rd.path / "env.json").read_text())
    assert env["packages"]["torch"] and "cpu_count" in env["hardware"]
    assert [m for m in rd.metrics() if "loss" in m]
    rows = store.list_runs(tmp_path / "runs")
    assert [r["run_id"] for r in rows] == [rd.run_id]
    assert rows[0]["methods"] == "lora" and rows[0]["eval_loss"] < rows[0]["initial_eval_loss"]
    n = store.query(tmp_path / "runs", "SELECT count(*) AS n FROM step_metrics")[0]["n"]
    assert n > 0


@pytest.mark.integration
def test_stage_cache_reuses_and_invalidates(write, sft_data, tmp_path) -> None:
    path = _spec(write, sft_data, tmp_path)
    first = _run(path)
    second = _run(path)
    st = second.stages["sft"]
    assert st["reused_from"] == first.run_dir.name
    assert st["artifact"] == first.stages["sft"]["artifact"]
    assert not (second.run_dir / "metrics.jsonl").exists()  # nothing trained
    third = _run(path, ["stages.sft.train.learning_rate=1e-3"])
    assert third.stages["sft"]["reused_from"] == ""
    assert third.stages["sft"]["hash"] != first.stages["sft"]["hash"]
    assert (third.run_dir / "metrics.jsonl").exists()


@pytest.mark.integration
def test_cli_run_says_reused(write, sft_data, tmp_path) -> None:
    path = _spec(write, sft_data, tmp_path)
    _run(path)
    out = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "reusing cached lora artifact" in out.stdout


@pytest.mark.integration
def test_sigkill_then_resume_finishes_same_steps(write, sft_data, tmp_path) -> None:
    path = _spec(write, sft_data, tmp_path, steps=60, save=5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(runs.glob("*/stages/sft/checkpoints/checkpoint-*/trainer_state.json"))
        if any(int(c.parent.name.split("-")[1]) >= 15 for c in ckpts):
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.time()
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "training finished or stalled before it could be killed"
    (run_dir,) = [p for p in runs.iterdir() if (p / "run.json").exists()]
    rd = RunDir(run_dir)
    assert rd.status()["state"] == "interrupted"  # readable: the pid is gone
    assert rd.stage("sft")["state"] == "running"
    with rd.lock():  # issue 15.7: a second process resuming the same run is refused
        busy = _resume(rd.run_id, tmp_path)
    assert busy.returncode == 1, busy.stderr[-2000:]
    assert f"being run by another process (pid {os.getpid()})" in busy.stderr
    out = _resume(str(run_dir), tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    stage = rd.stage("sft")
    assert stage["state"] == "completed"
    assert "checkpoint-" in stage["resumed_from"]
    assert stage["summary"]["steps"] == 60
    steps = [m["step"] for m in rd.metrics() if "loss" in m]
    assert max(steps) == 60
    assert len(steps) == len(set(steps))  # issue 15.7: no step logged twice after resume
    assert rd.status()["state"] == "completed"
    assert store.list_runs(runs)[0]["state"] == "completed"
    dup = store.query(
        runs,
        "SELECT step, count(*) AS n FROM step_metrics WHERE name = 'loss' GROUP BY step "
        "HAVING count(*) > 1",
    )
    assert dup == []


def _hash(write, tmp_path: Path, overrides: list[str]) -> str:
    from ftlab.runner import data as data_mod

    ((_, spec),) = expand_runs(_spec(write, None, tmp_path), overrides)
    datasets = {"sft": data_mod.load(spec.data["sft"], base_dir=tmp_path, seed=spec.seed)}
    hashes = execute.stage_hashes(spec, spec_dir=tmp_path, model="m", datasets=datasets)
    return hashes["sft"]


def test_stage_hash_covers_only_what_the_method_uses(write, sft_data, tmp_path) -> None:
    """Issue 14.2: `full` ignores adapter settings, LoRA ignores num_virtual_tokens and
    the 4-bit settings; those never retrain a stage. What the method uses still does."""
    full = ["stages.sft.method=full"]
    assert _hash(write, tmp_path, full) == _hash(
        write, tmp_path, [*full, "stages.sft.adapter.dropout=0.3", "stages.sft.adapter.r=64"]
    )
    lora = _hash(write, tmp_path, [])
    assert lora == _hash(write, tmp_path, ["stages.sft.adapter.num_virtual_tokens=4"])
    assert lora == _hash(write, tmp_path, ["stages.sft.adapter.quant_type=fp4"])
    assert lora != _hash(write, tmp_path, ["stages.sft.adapter.dropout=0.3"])
    qlora = ["stages.sft.method=qlora"]
    assert _hash(write, tmp_path, qlora) != _hash(
        write, tmp_path, [*qlora, "stages.sft.adapter.quant_type=fp4"]
    )
    pt = ["stages.sft.method=prompt_tuning"]
    assert _hash(write, tmp_path, pt) == _hash(write, tmp_path, [*pt, "stages.sft.adapter.r=2"])
    assert _hash(write, tmp_path, pt) != _hash(
        write, tmp_path, [*pt, "stages.sft.adapter.num_virtual_tokens=4"]
    )


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_leaves_an_interrupted_run_that_resumes(write, sft_data, tmp_path, sig) -> None:
    """Issue 14.9: Ctrl-C (or a scheduler's SIGTERM) prints how to resume and from which
    checkpoint, exits 130, and leaves the run and its stage `interrupted`; the resumed
    stage still shows its eval loss before training; resuming a completed run does
    nothing."""
    path = _spec(write, sft_data, tmp_path, steps=60, save=5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(runs.glob("*/stages/sft/checkpoints/checkpoint-*/trainer_state.json")):
            proc.send_signal(sig)
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    (run_dir,) = [p for p in runs.iterdir() if (p / "run.json").exists()]
    rd = RunDir(run_dir)
    assert f"interrupted — continue with `ftlab run --resume {rd.run_id}`" in err
    assert "(stage sft continues from checkpoint-" in err
    assert "Traceback" not in err + out
    assert rd.status()["state"] == "interrupted"
    assert rd.stage("sft")["state"] == "interrupted"
    done = _resume(rd.run_id, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = rd.stage("sft")["summary"]
    assert "checkpoint-" in rd.stage("sft")["resumed_from"]
    assert summary["initial_eval_loss"] > summary["eval_loss"]
    assert f"{summary['initial_eval_loss']:.3f} → {summary['eval_loss']:.3f}" in done.stdout
    wall = rd.status()["wall_time_s"]
    again = _resume(rd.run_id, tmp_path)
    assert again.returncode == 0 and "already completed; nothing to resume" in again.stdout
    assert rd.status()["wall_time_s"] == wall  # not run again


@pytest.mark.integration
def test_resume_removes_the_temp_files_a_kill_left(write, sft_data, tmp_path) -> None:
    """Issue 15.11: a kill during an atomic write leaves `status.json.<random>.tmp` (and
    the like in stages/, evals/); resuming the run removes them, and nothing else. The run
    here was killed before its first status.json: it is `interrupted` and resumes."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    path = _spec(write, sft_data, tmp_path, steps=2)
    ((name, spec),) = expand_runs(path)
    rd = execute.create_run(spec, variant=name, spec_file=path, overrides=[])
    (rd.path / "status.json").unlink()
    left = [
        rd.path / "status.json.x8k2m1q9.tmp",
        rd.path / "stages/sft/stage.json.ab12cd_4.tmp",
        rd.path / "evals/ppl/summary.json.zz9y8x7w.tmp",
    ]
    for tmp in left:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text('{"state": "runn')  # cut short by the kill
    notes = rd.path / "notes.tmp"  # not ours: stays
    notes.write_text("mine")
    assert rd.status()["state"] == "interrupted"
    result = CliRunner().invoke(app, ["run", "--resume", str(rd.path)])
    assert result.exit_code == 0, result.output
    assert "was interrupted" in result.output
    assert [t for t in left if t.exists()] == [] and notes.exists()
    assert rd.status()["state"] == "completed"


def test_model_settings_that_change_training_change_the_stage_hash(
    write, sft_data, tmp_path
) -> None:
    """Issue 16: a different chat template (or attention kernel, or weight dtype) trains a
    different model: the cached stage, and the base model's cached evals, must not be
    reused. Defaults keep the hashes runs already have."""
    plain = _hash(write, tmp_path, [])
    assert plain == _hash(write, tmp_path, ["model.chat_template="])
    for override in (
        "model.chat_template=mistral",
        "model.attn_implementation=eager",
        "model.dtype=bfloat16",
    ):
        assert _hash(write, tmp_path, [override]) != plain, override
    ((_, spec),) = expand_runs(_spec(write, None, tmp_path), [])
    ((_, other),) = expand_runs(_spec(write, None, tmp_path), ["model.chat_template=llama2"])
    assert execute.model_identity(spec, "m") == "m"
    assert execute.model_identity(other, "m") != "m"


def test_an_override_given_with_resume_is_refused_not_ignored(tmp_path) -> None:
    """A user resumed with `ftlab run --resume RUN stages.sft.train.max_steps=600`: the
    override was taken for the spec argument and silently dropped, and the run trained
    to its recorded 3000 steps. It is now an error that says what to do instead."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    out = CliRunner().invoke(
        app,
        ["run", "--resume", "some-run", "stages.sft.train.max_steps=600", "--dir", str(tmp_path)],
    )
    assert out.exit_code == 2
    assert "stages.sft.train.max_steps=600 would be ignored" in out.output
    assert "ftlab run SPEC KEY=VALUE" in out.output


@pytest.mark.integration
def test_run_dir_option_is_where_new_runs_go(write, sft_data, tmp_path, monkeypatch) -> None:
    """`ftlab run SPEC --dir D` was accepted and ignored: the runs landed in ./runs (the
    option only reached --resume). It is output.dir now; given with output.dir=…, an
    error says to keep one."""
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    monkeypatch.chdir(tmp_path)
    text = SPEC.format(steps=1, save=50, runs="").replace("output: {dir: }\n", "")
    spec = write("nodir.yaml", text)
    result = CliRunner().invoke(app, ["run", str(spec), "--dir", "elsewhere"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "ftlab.duckdb").exists() and not (tmp_path / "runs").exists()
    both = CliRunner().invoke(app, ["run", str(spec), "--dir", "a", "output.dir=b"])
    assert both.exit_code == 2 and "--dir a and output.dir=b" in both.output, both.output


def test_seeds_reach_the_trained_stages_not_the_judge(write, sft_data, tmp_path) -> None:
    """`seeds: [1, 2]`: one run per seed, each training stage hashed (and trained) per
    seed, except a stage that trains an eval's judge — the instrument keeps `seed`; the
    seed equal to `seed` is the run without `seeds:` (its cache still serves)."""
    from ftlab.runner import data as data_mod

    text = f"""\
name: seeded
seed: 1
seeds: [1, 2]
data:
  sft: {{path: data/support_sft.jsonl, overlong: truncate, max_rows: 48, val_fraction: 0.125}}
stages:
  - {{name: judge, method: full, train: {{max_steps: 2}}}}
  - {{name: sft, method: lora, train: {{max_steps: 2}}}}
evals:
  - {{kind: judge, data: sft, params: {{judge_model: {{stage: judge}}}}}}
output: {{dir: {tmp_path / "runs"}}}
"""
    with pytest.raises(SpecError, match="distinct training seeds \\(1 repeated\\)"):
        expand_runs(write("twice.yaml", text.replace("seeds: [1, 2]", "seeds: [1, 2, 1]")))
    runs = expand_runs(write("seeded.yaml", text))
    assert [(name, spec.train_seed) for name, spec in runs] == [("default", 1), ("default", 2)]
    hashes = []
    for _, spec in runs:
        datasets = {"sft": data_mod.load(spec.data["sft"], base_dir=tmp_path, seed=spec.seed)}
        hashes.append(execute.stage_hashes(spec, spec_dir=tmp_path, model="m", datasets=datasets))
    assert hashes[0]["judge"] == hashes[1]["judge"] and hashes[0]["sft"] != hashes[1]["sft"]
    ((_, plain),) = expand_runs(write("plain.yaml", text.replace("seeds: [1, 2]\n", "")))
    datasets = {"sft": data_mod.load(plain.data["sft"], base_dir=tmp_path, seed=plain.seed)}
    assert execute.stage_hashes(plain, spec_dir=tmp_path, model="m", datasets=datasets) == hashes[0]
