"""Live tracking: what a run logs reaches W&B and MLflow while it trains.

A thread in the process that runs the experiment tails the run directory — the step
metrics every method appends to `metrics.jsonl` (trl trainers through their callback,
ftlab's PPO, rank 0 of a multi-process stage), the eval results as they land — and
publishes what is new to the active trackers. One code path for every method; training
never waits on a tracker (a slow or dead server only delays this thread, whose queue is the
file itself), and a tracker that fails is dropped with one note: the run goes on.

Each step is published once. The thread holds the newest step until a later one appears
(a step's train and eval records arrive separately), and `tracking.json` in the run
directory remembers, per tracker, the last step handed to it — written before the step is
sent, so a killed run may lose a step but `--resume` never sends one twice: the resumed
run continues the same tracker run past that step (the steps it trains again up to there
are already in the tracker). At the end the run's state, summary, eval results with their
intervals and per-sample tables are logged; `replay` does the same for a finished run.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import RunDir, read_json, write_json

POLL_S = 2.0
FINISH_TIMEOUT_S = 60.0


class Publisher:
    """Tails one run directory and hands new step metrics and eval results to `sinks`."""

    def __init__(self, run: RunDir, sinks: list[Any]) -> None:
        self.run, self.sinks = run, list(sinks)
        self.saved = read_json(run.path / "tracking.json", {}) or {}
        self._pos, self._base = 0, 0  # where the file was read up to; the last step
        self._offsets: dict[str, int] = {}  # each stage's first global step
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._evals: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ftlab-trackers", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self, final: bool = False) -> None:
        points = self._new_points(final)
        if points:
            self._send(points)
        self._send_evals()

    def _new_points(self, final: bool) -> list[tuple[int, dict[str, Any]]]:
        """Complete steps appended since the last poll, on one global step across stages
        (each stage continues where the last ended, as `tracking._curves` does)."""
        path = self.run.path / "metrics.jsonl"
        size = path.stat().st_size if path.exists() else 0
        if size < self._pos:  # rewritten by a resume (steps after its checkpoint dropped)
            self._pos, self._offsets, self._base, self._pending = 0, {}, 0, None
        chunk = b""
        if size > self._pos:
            with open(path, "rb") as f:
                f.seek(self._pos)
                chunk = f.read(size - self._pos)
        done = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for its end
        self._pos += len(done)
        out: list[tuple[int, dict[str, Any]]] = []
        for line in done.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            stage = rec.get("stage", "")
            self._offsets.setdefault(stage, self._base)
            step = self._offsets[stage] + int(rec.get("step") or 0)
            self._base = max(self._base, step)
            values = {
                f"{stage}/{k}": v
                for k, v in rec.items()
                if k not in ("stage", "step", "epoch", "time") and isinstance(v, int | float)
            }
            if not values:
                continue
            if self._pending and self._pending[0] == step:
                self._pending[1].update(values)
                continue
            if self._pending:
                out.append(self._pending)
            self._pending = (step, values)
        if final and self._pending:
            out.append(self._pending)
            self._pending = None
        return out

    def _send(self, points: list[tuple[int, dict[str, Any]]]) -> None:
        for sink in list(self.sinks):
            last = int(self.saved.get(sink.key, -1))
            new = [(step, values) for step, values in points if step > last]
            if not new:
                continue
            self.saved[sink.key] = new[-1][0]
            write_json(self.run.path / "tracking.json", self.saved)  # before sending
            self._guard(sink, lambda s=sink, n=new: s.log_points(n))

    def _send_evals(self) -> None:
        """Eval results as they land (an eval's summary.json written or rewritten)."""
        from ftlab.runner import tracking

        changed = []
        for f in (self.run.path / "evals").glob("*/summary.json"):
            mtime = f.stat().st_mtime
            if self._evals.get(f.parent.name) != mtime:
                self._evals[f.parent.name] = mtime
                changed.append(f.parent.name)
        if changed:
            values = tracking.eval_summary(self.run, changed)
            for sink in list(self.sinks):
                self._guard(sink, lambda s=sink: s.summary(values))

    def _guard(self, sink: Any, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
            self.sinks.remove(sink)
            print(
                f"note: {sink.name} logging stopped ({type(exc).__name__}: {exc}); the run "
                f"goes on, `ftlab {sink.name.lower().replace('&', '')} log "
                f"{self.run.run_id}` logs it again from its directory"
            )

    def finish(self, state: str) -> None:
        """Stop tailing, send what is left, then the run's summary, tables and state."""
        from ftlab.runner import tracking

        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(FINISH_TIMEOUT_S)
        self.poll(final=True)
        payload = tracking.run_payload(self.run)
        payload["summary"]["state"] = state
        for sink in list(self.sinks):
            self._guard(sink, lambda s=sink: s.finish(payload, state))


def sinks(run: RunDir, tracking_spec: Any, *, live: bool) -> list[Any]:
    """The trackers the spec turns on, each started for this run (a tracker that cannot
    start is left out with a note; `online` W&B without a key is refused earlier)."""
    from ftlab.runner import mlflow_sink, tracking

    out: list[Any] = []
    wb = tracking_spec.wandb
    head = tracking.head(run) if wb.mode != "disabled" or tracking_spec.mlflow else {}
    if wb.mode != "disabled":
        mode, message = tracking.resolve_mode(wb.mode)
        if message:
            print(message)
        try:
            out.append(tracking.WandbSink(run, head, project=wb.project, mode=mode, live=live))
            if live:
                later = " (`ftlab wandb sync` uploads it)" if mode == "offline" else ""
                print(f"W&B: {mode} run {out[-1].id} in project {wb.project}{later}")
        except Exception as exc:  # noqa: BLE001 - the run goes on without it
            print(f"note: W&B did not start ({type(exc).__name__}: {exc}); `ftlab wandb log` later")
    if tracking_spec.mlflow is not None:
        sink = mlflow_sink.start(run, head, tracking_spec.mlflow)
        if sink is not None:
            out.append(sink)
            if live:
                print(f"MLflow: {sink.where()}")
    return out


@contextlib.contextmanager
def publishing(run: RunDir, tracking_spec: Any) -> Iterator[Publisher | None]:
    """Publish the run live while the body trains it; at the end, its state."""
    started = sinks(run, tracking_spec, live=True)
    if not started:
        yield None
        return
    publisher = Publisher(run, started).start()
    try:
        yield publisher
    finally:
        publisher.finish(run.status().get("state") or "failed")


def replay(run: RunDir, to: list[Any]) -> None:
    """Log a finished run from its directory: the steps each tracker lacks, then the end."""
    Publisher(run, to).finish(run.status().get("state") or "failed")


def after_run(run_path: Path, tracking_spec: Any) -> None:
    """`ftlab eval` on a finished run: its trackers get the new results."""
    run = RunDir(run_path)
    replay(run, sinks(run, tracking_spec, live=False))
