"""What stage reuse and pruning save, measured as the Hyperband/ASHA papers measure it:
the trial-hours ftlab's way needs to first reach what a naive sweep finds in the end.

For each sampler seed, the same 30-trial study (same spec, same TPE seed) runs twice —
naive (`output.reuse: false`, no pruner) and ftlab's way (stage and reference log-prob
cache + the spec's pruner). Printed per seed: the naive sweep's trial-hours and final
best; ftlab's final best; the trial-hours ftlab's way had spent when a completed trial
first came within the tolerance of the naive final best, as a fraction of the naive
sweep's trial-hours ("-" if it never did). Then the medians over seeds.

Tolerance: the seed-to-seed spread of the naive final best (its standard deviation over
the sampler seeds) — a difference smaller than what changing the sampler seed does to
the naive sweep's own answer is not one a user could act on.

    python benchmarks/sweep.py [--spec experiments/sweep_quickstart.yaml] [--trials 30]
                               [--seeds 1 2 3] [-v]

Goal: median fraction ≤ 0.35, ftlab's final best not worse than the naive one beyond
the tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sweep:
    hours: float  # trial-hours: the sum of every trial's time, pruned ones included
    best: float
    maximize: bool
    trials: list[tuple[float, float | None]]  # (seconds, value or None), in trial order
    pruned: int
    reused: int

    def hours_to_reach(self, target: float, tol: float) -> float | None:
        spent = 0.0
        for secs, value in self.trials:
            spent += secs
            if value is not None and (
                value >= target - tol if self.maximize else value <= target + tol
            ):
                return spent / 3600
        return None


def run(spec: Path, trials: int, seed: int, *, naive: bool, verbose: bool = False) -> Sweep:
    from ftlab.sweeps import study as study_mod

    with tempfile.TemporaryDirectory() as out:
        overrides = [f"output.dir={out}", f"search.n_trials={trials}", f"search.seed={seed}"]
        if naive:  # every trial trains every stage and computes every reference log-prob
            overrides += ["search.pruner=none", "output.reuse=false"]
        sweep = study_mod.load(spec, overrides)
        study = study_mod.run_sweep(sweep)
    maximize = sweep.spec.search.objectives[0].direction == "maximize"
    rows = []
    for t in sorted(study.get_trials(), key=lambda t: t.number):
        secs = (t.datetime_complete - t.datetime_start).total_seconds()
        done = t.state.name == "COMPLETE" and t.value is not None
        rows.append((secs, t.value if done else None))
        if verbose:
            print(
                f"    trial {t.number:2} {t.state.name:8} {secs:6.1f} s  value "
                f"{t.value if done else float('nan'):9.4f}  reused "
                f"{','.join(t.user_attrs.get('reused_stages', [])) or '-'}"
            )
    values = [v for _, v in rows if v is not None]
    return Sweep(
        hours=sum(s for s, _ in rows) / 3600,
        best=(max if maximize else min)(values) if values else float("nan"),
        maximize=maximize,
        trials=rows,
        pruned=sum(1 for t in study.get_trials() if t.state.name == "PRUNED"),
        reused=sum(1 for t in study.get_trials() if t.user_attrs.get("reused_stages")),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, default=ROOT / "experiments" / "sweep_quickstart.yaml")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per trial")
    args = ap.parse_args()
    started = time.perf_counter()
    pairs: dict[int, tuple[Sweep, Sweep]] = {}
    for i, seed in enumerate(args.seeds, 1):
        print(f"seed {seed} ({i}/{len(args.seeds)}): naive sweep, {args.trials} trials", flush=True)
        naive = run(args.spec, args.trials, seed, naive=True, verbose=args.verbose)
        print(f"seed {seed} ({i}/{len(args.seeds)}): ftlab's way, {args.trials} trials", flush=True)
        ftlab = run(args.spec, args.trials, seed, naive=False, verbose=args.verbose)
        pairs[seed] = (naive, ftlab)
    bests = [n.best for n, _ in pairs.values()]
    tol = statistics.stdev(bests) if len(bests) > 1 else 0.0
    print(f"\ntolerance: the naive final best's standard deviation over seeds = {tol:.4f}")
    print(
        f"{'seed':>4}  {'naive h':>8}  {'naive best':>10}  {'ftlab h':>8}  {'ftlab best':>10}  "
        f"{'h to naive best':>15}  {'fraction':>8}  pruned  reused"
    )
    fractions, gaps = [], []
    for seed, (naive, ftlab) in pairs.items():
        reach = ftlab.hours_to_reach(naive.best, tol)
        fraction = reach / naive.hours if reach is not None else float("inf")
        fractions.append(fraction)
        gaps.append(ftlab.best - naive.best if naive.maximize else naive.best - ftlab.best)
        print(
            f"{seed:>4}  {naive.hours:8.4f}  {naive.best:10.4f}  {ftlab.hours:8.4f}  "
            f"{ftlab.best:10.4f}  {reach if reach is not None else float('nan'):15.4f}  "
            f"{fraction:8.3f}  {ftlab.pruned:6}  {ftlab.reused:6}"
        )
    print(
        f"median fraction of naive trial-hours to reach its final best: "
        f"{statistics.median(fractions):.3f} (goal ≤ 0.35); median final-best gap "
        f"(ftlab − naive, + = ftlab better): {statistics.median(gaps):+.4f} "
        f"(tolerance {tol:.4f}); wall {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
