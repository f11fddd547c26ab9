"""The cost of live tracking: the same tiny LoRA SFT through ftlab with no tracker and with
W&B (offline) and MLflow (local SQLite store) logging live, every step a metric record.

Both in this one process, ABBA order; per-step time from optimizer step to optimizer step
(the same callback as benchmarks/overhead.py), warm-up steps skipped. The trackers run in
a thread of this process (and W&B's service in its own), so what they cost the trainer is
CPU and GIL time, which this measures.

    python benchmarks/tracking.py [--model tiny] [--steps 60] [--rounds 2]

Goal (issue 20): per-step ratio tracked / untracked ≤ 1.03.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from overhead import StepTimer, spec_text

TRACKERS = {
    "both": "tracking: {wandb: {project: bench, mode: offline}, mlflow: {}}\n",
    "wandb": "tracking: {wandb: {project: bench, mode: offline}}\n",
    "mlflow": "tracking: {mlflow: {}}\n",
}


def run(
    model: str, steps: int, warmup: int, work: Path, trackers: str
) -> tuple[list[float], float]:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    path = work / f"spec-{time.time_ns()}.yaml"
    text = spec_text(model, steps, work / f"runs-{time.time_ns()}")
    text = text.replace("logging_steps: 5", "logging_steps: 1")  # the worst case: every step
    path.write_text(text + TRACKERS.get(trackers, ""))
    ((name, spec),) = expand_runs(path)
    timer = StepTimer(warmup)
    start = time.perf_counter()
    rd = execute.create_run(spec, variant=name, spec_file=path, overrides=[])
    execute.execute(rd, spec, extra_callbacks=[timer])
    return timer.times, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trackers", choices=sorted(TRACKERS), default="both")
    args = parser.parse_args()

    from ftlab.cli.main import _quiet_libraries

    _quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WANDB_DIR"] = tmp
        per_step: dict[bool, list[float]] = {False: [], True: []}
        wall: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.rounds):
            for tracked in (False, True) if i % 2 == 0 else (True, False):  # ABBA
                which = args.trackers if tracked else "none"
                times, total = run(args.model, args.steps, args.warmup, Path(tmp), which)
                per_step[tracked] += times
                wall[tracked].append(total)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    print(
        f"\nmodel {args.model}, LoRA r=16, batch 4, {args.steps} steps × {args.rounds} rounds, "
        f"a metric record every step (first {args.warmup} steps of each run skipped)"
    )
    for tracked, name in ((False, "no tracker"), (True, f"{args.trackers} live")):
        print(
            f"  {name:18} median step {med[tracked] * 1000:8.2f} ms   "
            f"mean end-to-end {statistics.mean(wall[tracked]):6.2f} s"
        )
    print(f"per-step time ratio tracked / untracked = {med[True] / med[False]:.3f}  (goal ≤ 1.03)")


if __name__ == "__main__":
    main()
