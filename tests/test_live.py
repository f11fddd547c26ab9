"""Live tracking (issue 20): W&B and MLflow get a run while it trains, a killed run resumes
the same tracker run without logging a step twice, and the state reaches them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.runner import tracking
from ftlab.runner.rundir import RunDir, latest_checkpoint

from .conftest import DATA, wait_for

SPEC = """\
name: live
seed: 5
model: tiny
data:
  sft: {{path: {data}/support_sft.jsonl, overlong: truncate, max_rows: 64, val_fraction: 0.25}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, max_steps: {steps}, batch_size: 4, max_length: 64,
             eval_steps: 8, logging_steps: 1, save_steps: 4, precision: fp32}}
evals:
  - {{name: ppl, kind: perplexity, data: sft}}
tracking: {{wandb: {{project: live-test, mode: offline}}{mlflow}}}
output: {{dir: {runs}, keep_checkpoints: true}}
"""


def _spec(tmp_path: Path, steps: int, mlflow: str = "") -> Path:
    path = tmp_path / "live.yaml"
    runs = tmp_path / "runs"
    path.write_text(SPEC.format(data=DATA, runs=runs, steps=steps, mlflow=mlflow))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    """The run's own W&B service: an earlier in-process test leaves WANDB_SERVICE pointing
    at pytest's service, which would outlive the killed run and hold its id ("run ID … is
    in use" on resume — what a run started from inside another W&B process would see)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return env | {"WANDB_DIR": str(tmp_path / "wandb-home"), "PYTHONUNBUFFERED": "1"}


def _history(folder: Path) -> list[int]:
    return [int(h["_step"]) for h in tracking.read_offline(folder)["history"] if "_step" in h]


def _start(spec: Path, tmp_path: Path) -> subprocess.Popen[str]:
    """`ftlab run SPEC` in the background, in its own process group (a kill of the group
    takes W&B's service too, as a pre-empted node loses it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftlab.cli", "run", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(tmp_path),
        start_new_session=True,
    )


@pytest.mark.integration
def test_wandb_gets_steps_while_training_and_a_killed_run_resumes_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, steps=160)  # ample time to be killed mid-stage
    proc = _start(spec, tmp_path)
    try:
        runs = tmp_path / "runs"

        def live_rows() -> list[int] | None:
            for log in runs.glob("live-*/wandb/offline-run-*/*.wandb"):
                steps = _history(log.parent)
                if len(steps) >= 3 and latest_checkpoint(log.parents[2] / "stages" / "sft"):
                    return steps
            return None

        seen = wait_for(live_rows)
        run = RunDir(next(runs.glob("live-*")))
        assert run.status()["state"] == "running"  # logged while it trains, not at its end
        assert (run.path / "wandb.json").exists()  # `ftlab wandb show` finds it meanwhile
        assert seen == sorted(set(seen))  # type: ignore[arg-type]
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a pre-empted node loses it
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (first,) = run.path.glob("wandb/offline-run-*")
    before = _history(first)
    assert max(before) < 160, before
    resumed = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", "--resume", run.run_id, "--dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(tmp_path),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert run.stage("sft")["resumed_from"], resumed.stdout[-3000:]
    (second,) = [f for f in run.path.glob("wandb/offline-run-*") if f != first]
    assert list(second.glob("*.wandb")), resumed.stdout[-3000:]
    after = tracking.read_offline(second)
    steps = [int(h["_step"]) for h in after["history"] if "sft/loss" in h]
    assert steps and min(steps) > max(before)  # continues past the kill, no step twice
    assert max(steps) == 160
    assert after["summary"]["state"] == "completed" and "eval/ppl/loss" in after["summary"]
    shown = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "wandb", "show", run.run_id, "--dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "in 2 offline logs (resumed)" in shown.stdout, shown.stdout + shown.stderr
    rows = int(shown.stdout.split(" history rows")[0].rsplit(" ", 1)[-1])
    assert rows == len(_history(first)) + len(after["history"])  # both parts counted
    wandb_id = json.loads((run.path / "wandb.json").read_text())["id"]
    assert tracking.read_offline(first)["id"] == after["id"] == wandb_id  # one W&B run


def _rest(base: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - 127.0.0.1
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.integration
def test_mlflow_server_sees_the_run_live_interrupted_and_resumed(
    tmp_path: Path, mlflow_server: str
) -> None:
    spec = _spec(tmp_path, steps=48, mlflow=f", mlflow: {{uri: '{mlflow_server}'}}")
    proc = _start(spec, tmp_path)
    api = "/api/2.0/mlflow"
    try:

        def live_points() -> list[dict[str, object]] | None:
            try:
                exp = _rest(mlflow_server, f"{api}/experiments/get-by-name?experiment_name=live")
            except OSError:
                return None
            exp_id = exp["experiment"]["experiment_id"]  # type: ignore[index]
            found = _rest(mlflow_server, f"{api}/runs/search", {"experiment_ids": [exp_id]})
            for r in found.get("runs", []):  # type: ignore[attr-defined]
                rid = r["info"]["run_id"]
                hist = _rest(
                    mlflow_server, f"{api}/metrics/get-history?run_id={rid}&metric_key=sft/loss"
                )
                if len(hist.get("metrics", [])) >= 3 and latest_checkpoint(
                    next((tmp_path / "runs").glob("live-*")) / "stages" / "sft"
                ):
                    return [r]
            return None

        (live,) = wait_for(live_points)  # type: ignore[misc]
        assert live["info"]["status"] == "RUNNING"  # visible while it trains
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = RunDir(next((tmp_path / "runs").glob("live-*")))
    assert run.status()["state"] == "interrupted"
    rid = live["info"]["run_id"]
    stopped = _rest(mlflow_server, f"{api}/runs/get?run_id={rid}")["run"]
    tags = {t["key"]: t["value"] for t in stopped["data"]["tags"]}  # type: ignore[index]
    assert stopped["info"]["status"] == "KILLED" and tags["ftlab.state"] == "interrupted"  # type: ignore[index]
    (wb,) = run.path.glob("wandb/offline-run-*")
    assert tracking.read_offline(wb)["summary"]["state"] == "interrupted"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftlab.cli",
            "run",
            "--resume",
            run.run_id,
            "--dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(tmp_path),
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"MLflow: {mlflow_server}/#/experiments/" in resumed.stdout  # where to look
    assert f"W&B: offline run {tracking.wandb_id(run.run_id)}" in resumed.stdout
    exp_id = live["info"]["experiment_id"]
    (done,) = _rest(mlflow_server, f"{api}/runs/search", {"experiment_ids": [exp_id]})["runs"]  # type: ignore[misc]
    assert done["info"]["run_id"] == rid and done["info"]["status"] == "FINISHED"
    data = done["data"]
    params = {p["key"]: p["value"] for p in data["params"]}
    assert params["stages.sft.method"] == "lora" and params["model.name"] == "tiny"
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["ftlab.experiment"] == "live" and tags["ftlab.variant"] == "default"
    assert tags["ftlab.methods"] == "lora" and tags["ftlab.state"] == "completed"
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert metrics["eval/ppl/loss_ci_low"] <= metrics["eval/ppl/loss"]
    hist = _rest(mlflow_server, f"{api}/metrics/get-history?run_id={rid}&metric_key=sft/loss")
    steps = [int(m["step"]) for m in hist["metrics"]]  # type: ignore[attr-defined]
    assert steps == sorted(set(steps)) and max(steps) == 48  # stepwise, none twice
    files = _rest(mlflow_server, f"{api}/artifacts/list?run_id={rid}")
    assert {"spec.yaml", "summary.json", "samples"} <= {f["path"] for f in files["files"]}  # type: ignore[attr-defined]
