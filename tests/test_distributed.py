"""Multi-process stages on the CPU (torchrun, gloo): the launch path a GPU machine uses.

A 2-process DDP run of LoRA SFT and of DPO trains end to end, writes one set of run files,
and its adapter has the shapes of a 1-process run's; killing one rank ends the stage
with a clear error, and `--resume` finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftlab.runner.rundir import RunDir

from .conftest import DATA

SPEC = """\
name: ddp
seed: 5
model: tiny
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 64, val_fraction: 0.25}}
  prefs: {{path: {data}/support_prefs.jsonl, overlong: truncate, format: preference, max_rows: 48,
          val_fraction: 0.25}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: {steps}, batch_size: 4, max_length: 64,
             eval_steps: 4, logging_steps: 1, save_steps: 2, precision: fp32}}
{dpo}resources: {{processes: 2, strategy: {strategy}}}
variants:
  single: {{resources.processes: 1}}
output: {{dir: {runs}}}
"""
DPO = """\
  - name: dpo
    method: dpo
    from: sft
    data: prefs
    adapter: {r: 4, alpha: 8, dropout: 0.0}
    train: {learning_rate: 5.0e-3, max_steps: 4, batch_size: 4, max_length: 64,
            eval_steps: 4, logging_steps: 1, precision: fp32}
"""


def _spec(tmp_path: Path, *, steps: int = 4, dpo: bool = False, strategy: str = "ddp") -> Path:
    path = tmp_path / "ddp.yaml"
    path.write_text(
        SPEC.format(
            data=DATA,
            runs=tmp_path / "runs",
            steps=steps,
            dpo=DPO if dpo else "",
            strategy=strategy,
        )
    )
    return path


def _ftlab(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kw,  # type: ignore[call-overload]
    )


def _runs(tmp_path: Path) -> dict[str, RunDir]:
    out = {}
    for d in (tmp_path / "runs").iterdir():
        if (d / "run.json").exists():
            out[RunDir(d).info()["variant"]] = RunDir(d)
    return out


def _adapter_shapes(run: RunDir, stage: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    path = Path(run.stage(stage)["artifact"]["path"]) / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_ddp_lora_sft_and_dpo(tmp_path: Path) -> None:
    done = _ftlab("run", str(_spec(tmp_path, dpo=True)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "launching 2 process(es) × 1 node(s), ddp" in done.stdout
    runs = _runs(tmp_path)
    ddp, single = runs["default"], runs["single"]
    for stage in ("sft", "dpo"):
        record = ddp.stage(stage)
        assert record["state"] == "completed"
        assert record["summary"]["world_size"] == 2 and record["summary"]["strategy"] == "ddp"
        assert _adapter_shapes(ddp, stage) == _adapter_shapes(single, stage)
        launch = ddp.path / "stages" / stage / "launch"
        assert json.loads((launch / "launch.json").read_text())["world_size"] == 2
        assert not list(launch.glob("rank*.err"))
    # one set of run files: each logged step once, one artifact, one stage record
    steps = [(m["stage"], m["step"]) for m in ddp.metrics() if "loss" in m]
    assert len(steps) == len(set(steps)) and ("sft", 4) in steps and ("dpo", 4) in steps
    assert "world_size" not in single.stage("sft")["summary"]
    # max_steps bounds both (2 processes see twice the examples per step)
    assert ddp.stage("sft")["summary"]["steps"] == single.stage("sft")["summary"]["steps"] == 4


def _worker_pids(parent: int) -> list[int]:
    """Processes running `ftlab.runner.worker` under `parent` (torchrun's children)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ftlab.runner.worker" in cmd and "torch.distributed.run" not in cmd:
            out.append(int(proc.name))
    return sorted(out)


@pytest.mark.integration
@pytest.mark.slow
def test_killed_rank_ends_the_stage_and_resume_finishes_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, steps=40)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli", "run", str(spec), "--variant", "default"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 300
        checkpoints: list[Path] = []
        while time.time() < deadline and not checkpoints:
            time.sleep(1)
            checkpoints = list((tmp_path / "runs").glob("ddp-default-*/stages/sft/checkpoints/*"))
        assert checkpoints, "no checkpoint appeared"
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, workers
        killed = time.time()
        os.kill(workers[-1], signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
        took = time.time() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and took < 60, (took, output[-2000:])
    assert "torchrun job exited" in output or "failed" in output
    (run,) = _runs(tmp_path).values()
    assert run.status()["state"] == "failed"
    assert not _worker_pids(proc.pid)  # no hung survivors
    resumed = _ftlab("run", "--resume", run.run_id, "--dir", str(tmp_path / "runs"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    record = run.stage("sft")
    assert record["state"] == "completed" and record["resumed_from"]
    assert record["summary"]["steps"] == 40


def test_sharding_strategies_on_cpu_are_refused_not_ignored(tmp_path: Path) -> None:
    """accelerate trains CPU processes as plain data parallel whatever the strategy says;
    ftlab refuses instead of silently running DDP (FSDP/ZeRO are tested on GPUs). GPUs
    are hidden from the run, so this holds on a GPU machine too."""
    done = _ftlab(
        "run",
        str(_spec(tmp_path, strategy="fsdp")),
        "--variant",
        "default",
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 1
    assert "resources.strategy fsdp needs CUDA" in done.stdout + done.stderr


@pytest.mark.integration
def test_a_sweep_trial_can_be_a_multi_process_job(tmp_path: Path) -> None:
    """`--gpus-per-trial 2` makes each trial a 2-process run through the same launcher
    (on CPU: 2 gloo processes)."""
    spec = _spec(tmp_path, steps=2)
    text = spec.read_text().replace("resources: {processes: 2, strategy: ddp}\n", "")
    text = text.replace("variants:\n  single: {resources.processes: 1}\n", "")
    spec.write_text(
        text + "search:\n  n_trials: 1\n  pruner: none\n  space:\n    stages.sft.adapter.r: [4]\n"
    )
    done = _ftlab("sweep", str(spec), "--gpus-per-trial", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = _runs(tmp_path).values()
    assert run.stage("sft")["summary"]["world_size"] == 2
    assert "launching 2 process(es)" in done.stdout


@pytest.mark.integration
def test_the_pruner_stops_a_multi_process_trial(tmp_path: Path) -> None:
    """A trial whose stage runs on 2 processes is still pruned: rank 0 reports each
    evaluation to the study, and every rank stops at the step the pruner decides; the run
    ends `pruned` (not failed) and the study goes on."""
    from optuna.trial import TrialState

    from ftlab.sweeps import study as study_mod

    spec = _spec(tmp_path, steps=8)
    text = spec.read_text().replace("variants:\n  single: {resources.processes: 1}\n", "")
    spec.write_text(
        text + "search:\n  n_trials: 3\n  sampler: random\n  pruner: median\n  space:\n"
        "    stages.sft.train.learning_rate: [5.0e-3, 1.0e-7]\n    stages.sft.adapter.r: [4, 8]\n"
    )
    sweep = study_mod.load(spec)
    study = study_mod.open_study(sweep)
    lr, r = "stages.sft.train.learning_rate", "stages.sft.adapter.r"
    for params in ({lr: 5e-3, r: 4}, {lr: 5e-3, r: 8}, {lr: 1e-7, r: 4}):
        study.enqueue_trial(params)
    study_mod.run_sweep(sweep)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
    assert sorted(trials[0].intermediate_values) == [4, 8]  # reported from rank 0
    assert sorted(trials[2].intermediate_values) == [4]  # stopped at its first evaluation
    pruned = RunDir(tmp_path / "runs" / trials[2].user_attrs["run_id"])
    assert pruned.status()["state"] == "pruned"
    launch_dir = pruned.path / "stages" / "sft" / "launch"
    assert json.loads((launch_dir / "stopped.json").read_text())["state"] == "pruned"
    assert not list(launch_dir.glob("rank*.err"))  # every rank stopped cleanly
    assert max(m["step"] for m in pruned.metrics() if "loss" in m) < 8


def test_multi_node_launch_command_and_main_address_check() -> None:
    from ftlab.runner import launch
    from ftlab.runner.spec.schema import ResourcesSpec

    spec = type("S", (), {})()
    spec.resources = ResourcesSpec(processes=8, nodes=2, node_rank=1, main_address="n0:29500")
    cmd = launch.command(spec, Path("/runs/r"), "sft", None)
    assert "--nproc_per_node=8" in cmd and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert "--master_addr=n0" in cmd and "--master_port=29500" in cmd
    assert cmd[-4:] == ["-m", "ftlab.runner.worker", "/runs/r", "sft"]
    spec.resources = ResourcesSpec(processes=8, nodes=2, main_address="n0")
    with pytest.raises(launch.StageLaunchError, match="host:port"):
        launch.command(spec, Path("/runs/r"), "sft", None)


def test_spec_checks_for_distributed_runs(tmp_path: Path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    path = _spec(tmp_path)
    text = path.read_text().replace("{processes: 2, strategy: ddp}", "{processes: 2, nodes: 2}")
    path.write_text(text)
    with pytest.raises(SpecError, match="resources.main_address"):
        load_spec(path)
