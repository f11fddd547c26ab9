"""What stage reuse and pruning save: the same sweep (same sampler seed) run twice —
naive (`output.reuse: false`, no pruner) and ftlab's way (stage and reference log-prob
cache + the spec's pruner) —
printing the trial-hours each used and the best objective each found.

    python benchmarks/sweep.py [--spec experiments/sweep_quickstart.yaml] [--trials 12]

Goal: ftlab's way costs ≤ 40% of the naive sweep at an equal or better best value.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(
    spec: Path,
    trials: int,
    out: Path,
    *,
    naive: bool,
    verbose: bool = False,
    pruner: str | None = None,
    extra: list[str] | None = None,
) -> tuple[float, float, int, int]:
    from ftlab.sweeps import study as study_mod

    overrides = [f"output.dir={out}", f"search.n_trials={trials}", *(extra or [])]
    if naive:  # every trial trains every stage and computes every reference log-prob
        overrides += ["search.pruner=none", "output.reuse=false"]
    elif pruner:
        overrides.append(f"search.pruner={pruner}")
    sweep = study_mod.load(spec, overrides)
    started = time.perf_counter()
    study = study_mod.run_sweep(sweep)
    took = time.perf_counter() - started
    done = [t for t in study.get_trials() if t.value is not None and t.state.name == "COMPLETE"]
    direction = sweep.spec.search.objectives[0].direction
    values = [t.value for t in done]
    best = (max if direction == "maximize" else min)(values) if values else float("nan")
    pruned = sum(1 for t in study.get_trials() if t.state.name == "PRUNED")
    reused = sum(1 for t in study.get_trials() if t.user_attrs.get("reused_stages"))
    if verbose:
        for t in study.get_trials():
            secs = (t.datetime_complete - t.datetime_start).total_seconds()
            steps = max(t.intermediate_values, default=0)
            params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.3g}" for k, v in t.params.items())
            print(
                f"  trial {t.number:2} {t.state.name:8} {secs:6.1f} s  to step {steps:3}  "
                f"value {t.value if t.value is not None else float('nan'):9.4f}  "
                f"reused {','.join(t.user_attrs.get('reused_stages', [])) or '-':4}  {params}"
            )
    return took, best, pruned, reused


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, default=ROOT / "experiments" / "sweep_quickstart.yaml")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per trial")
    ap.add_argument("--only", choices=("naive", "ftlab"), help="run one of the two sweeps")
    ap.add_argument("--pruner", help="ftlab's way with this pruner instead of the spec's")
    ap.add_argument(
        "--set", action="append", default=[], help="override for both sweeps (KEY=VALUE)"
    )
    args = ap.parse_args()
    results = {}
    for label, naive in (
        ("naive (no reuse, no pruning)", True),
        ("ftlab (reuse + pruning)", False),
    ):
        if args.only and args.only != ("naive" if naive else "ftlab"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[label] = run(
                args.spec,
                args.trials,
                Path(tmp),
                naive=naive,
                verbose=args.verbose,
                pruner=args.pruner,
                extra=args.set,
            )
    base = results.get("naive (no reuse, no pruning)", (float("nan"),))[0]
    for label, (took, best, pruned, reused) in results.items():
        print(
            f"{label:30} {took / 3600:6.3f} trial-hours ({took / base:5.1%} of naive), "
            f"best {best:.4f}, pruned {pruned}, trials reusing a stage {reused}"
        )


if __name__ == "__main__":
    main()
