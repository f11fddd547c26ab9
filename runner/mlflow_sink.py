"""MLflow as a tracker, for teams that self-host (`tracking.mlflow: {uri: …}`).

One ftlab run is one MLflow run in the experiment named after the ftlab experiment (or
the sweep's study): the flattened spec as params, step metrics as `<stage>/<name>` on one
global step (stages as metric prefixes, not nested runs: one row per ftlab run in MLflow's
compare view), tags `ftlab.experiment`, `ftlab.variant`, `ftlab.methods`, `ftlab.run_id`
and `ftlab.state`, eval results (with interval bounds) as metrics, per-sample rows as
tables and the spec and summary as artifacts. `--resume` finds the MLflow run by its
`ftlab.run_id` tag and continues it. Default store: `sqlite:///<output.dir>/mlflow.db`
with artifacts in `<output.dir>/mlartifacts/`.
"""

from __future__ import annotations

import logging
import os
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import RunDir

PROBE_TIMEOUT_S = 3.0
STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # pruned/interrupted/stopped: KILLED


def store_uri(uri: str, runs_dir: Path) -> str:
    return uri or f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


def shown(uri: str) -> str:
    """The URI without user or password, for messages."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        return parts._replace(netloc=parts.hostname or "").geturl()
    return uri


def _key(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)[:250]  # MLflow's allowed characters


class MlflowSink:
    """An MLflow run fed by the publisher (created, or found again on resume)."""

    def __init__(self, run: RunDir, head: dict[str, Any], uri: str, experiment: str) -> None:
        from mlflow import MlflowClient

        self.name, self.uri = "MLflow", uri
        self.client = MlflowClient(tracking_uri=uri)
        self.run_path = run.path
        self.curves: set[str] = set()  # keys logged by step: the summary leaves them alone
        self.sent: dict[str, Any] = {}  # single values already logged
        self.key = f"mlflow:{shown(uri)}"
        name = experiment or head["group"]
        found = self.client.get_experiment_by_name(name)
        local = not uri.startswith(("http://", "https://", "databricks"))
        beside = (
            Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
        )
        where = ((beside or run.path.parent) / "mlartifacts").resolve().as_uri() if local else None
        exp_id = found.experiment_id if found else self.client.create_experiment(name, where)
        self.exp_id, self.exp_name = exp_id, name
        earlier = self.client.search_runs(
            [exp_id], filter_string=f"tags.`ftlab.run_id` = '{run.run_id}'", max_results=1
        )
        if earlier:  # --resume: the same MLflow run goes on
            self.id = earlier[0].info.run_id
            self.client.update_run(self.id, status="RUNNING")
            return
        tags = {
            "ftlab.run_id": run.run_id,
            "ftlab.experiment": head["experiment"],
            "ftlab.variant": head["variant"],
            "ftlab.methods": " → ".join(head["methods"]),
            "ftlab.state": "running",
        }
        self.id = self.client.create_run(exp_id, run_name=run.run_id, tags=tags).info.run_id
        from mlflow.entities import Param

        params = [Param(_key(k), str(v)[:6000]) for k, v in head["config"].items()]
        for i in range(0, len(params), 100):  # MLflow takes 100 params per batch
            self.client.log_batch(self.id, params=params[i : i + 100])

    def where(self) -> str:
        """Where to look, said once at the start of a run."""
        if self.uri.startswith(("http://", "https://")):
            return f"{shown(self.uri)}/#/experiments/{self.exp_id}/runs/{self.id}"
        return (
            f"experiment {self.exp_name} in {self.uri} (`mlflow ui --backend-store-uri {self.uri}`)"
        )

    def log_points(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        """Steps since the last poll, in as few requests as MLflow takes (1000 a batch)."""
        for _, values in points:
            self.curves |= set(values)
        self._log(points)

    def _log(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(_key(k), float(v), now, step)
            for step, values in points
            for k, v in values.items()
        ]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.id, metrics=metrics[i : i + 1000])

    def summary(self, values: dict[str, Any]) -> None:
        """Single values (eval results, stage summaries) as one point each, at step 0 as
        MLflow's own `log_metric` does (so its charts draw them as bars); a value sent
        before is not sent again, and a key with a curve keeps its curve."""
        numbers = {
            k: v
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in self.curves
        }
        new = {k: v for k, v in numbers.items() if self.sent.get(k) != v}
        if new:
            self._log([(0, new)])
            self.sent |= new

    def finish(self, payload: dict[str, Any], state: str) -> None:
        try:
            for point in payload["curves"]:  # also those logged before a --resume
                self.curves |= set(point["values"])
            self.summary(payload["summary"])
            for name, (columns, rows) in payload["tables"].items():
                if rows:
                    data = {c: [_cell(r[i]) for r in rows] for i, c in enumerate(columns)}
                    self.client.log_table(self.id, data=data, artifact_file=f"samples/{name}.json")
            for f in ("spec.yaml", "summary.json"):
                if (self.run_path / f).exists():
                    self.client.log_artifact(self.id, str(self.run_path / f))
            self.client.set_tag(self.id, "ftlab.state", state)
        finally:
            self.client.set_terminated(self.id, status=STATUS.get(state, "KILLED"))


def _cell(v: Any) -> Any:
    return v if v is None or isinstance(v, int | float | str) else str(v)


def _answers(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def start(run: RunDir, head: dict[str, Any], spec: Any) -> MlflowSink | None:
    """The MLflow tracker for this run, or None with a note saying why and what to do."""
    uri = store_uri(spec.uri, run.path.parent)
    if importlib_missing():
        print("note: tracking.mlflow needs the mlflow package: pip install 'ftlab[mlflow]'")
        return None
    if uri.startswith(("http://", "https://")) and not _answers(uri):
        print(
            f"note: MLflow server {shown(uri)} did not answer in {PROBE_TIMEOUT_S:.0f} s; "
            f"not logging to MLflow (`ftlab mlflow log {run.run_id}` logs it later)"
        )
        return None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # never minutes of retries
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # ftlab says it
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow  # noqa: F401 - configures its loggers on import; quieted after

    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return MlflowSink(run, head, uri, spec.experiment)
    except Exception as exc:  # noqa: BLE001 - the run goes on without it
        print(f"note: MLflow did not start ({type(exc).__name__}: {exc}); the run goes on")
        return None


def importlib_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow") is None


def logged_to(run: RunDir) -> list[str]:
    """The MLflow tracking URIs this run was logged to (live or `ftlab mlflow log`), as
    `tracking.json` records them (without credentials)."""
    from ftlab.runner.rundir import read_json

    saved = read_json(run.path / "tracking.json", {}) or {}
    return [k.removeprefix("mlflow:") for k in saved if k.startswith("mlflow:")]


def attach(run: RunDir, uri: str, files: list[Path], folder: str) -> str:
    """Log `files` as artifacts (under `folder`) of the MLflow run this ftlab run was
    logged to at `uri` (found by its `ftlab.run_id` tag). Returns '' or why it did not."""
    if importlib_missing():
        return "the mlflow package is not installed (pip install 'ftlab[mlflow]')"
    if uri.startswith(("http://", "https://")) and not _answers(uri):
        return f"MLflow server {shown(uri)} did not answer"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        ids, filter_string=f"tags.`ftlab.run_id` = '{run.run_id}'", max_results=1
    )
    if not found:
        return f"run {run.run_id} is not in MLflow at {shown(uri)} (`ftlab mlflow log` it first)"
    for path in files:
        client.log_artifact(found[0].info.run_id, str(path), folder)
    return ""
