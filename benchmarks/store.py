"""The DuckDB index at scale: ingest 1M synthetic per-sample rows (1,000 runs × 2 evals ×
500 items) through Arrow, then run `ftlab compare`'s queries over all 1,000 runs.

    python benchmarks/store.py [--runs 1000] [--items 500]

Targets: ≥ 1M rows/s ingest; < 200 ms for the compare queries over 1,000 runs. The full
`compare()` (queries + a paired test per run and metric) is printed too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import numpy as np
    import pyarrow as pa

    from ftlab.reports import compare, store

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--keep", type=Path, help="build the index in this folder and keep it")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n_runs, n_items = args.runs, args.items
    ids = [f"bench-{i:05d}" for i in range(n_runs)]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs = pa.Table.from_pylist(
            [
                {
                    "run_id": rid,
                    "experiment": "bench",
                    "variant": f"v{i}",
                    "state": "completed",
                    "created": float(i),
                    "finished": float(i) + 60,
                    "wall_time_s": 60.0 + i % 7,
                    "model": "tiny",
                    "seed": 42,
                    "spec_json": json.dumps(
                        {
                            "stages": [
                                {
                                    "name": "sft",
                                    "method": "lora",
                                    "train": {"learning_rate": 1e-4 * (1 + i)},
                                }
                            ]
                        }
                    ),
                    "study": None,
                    "trial": None,
                    "spec_file": "",
                    "run_dir": "",
                    "error": "",
                }
                for i, rid in enumerate(ids)
            ],
            schema=store._arrow_schema("runs"),
        )
        results = pa.Table.from_pylist(
            [
                {
                    "run_id": rid,
                    "eval": ev,
                    "kind": kind,
                    "target": "sft",
                    "is_last": True,
                    "metric": metric,
                    "value": float(rng.random()),
                    "ci_low": 0.0,
                    "ci_high": 1.0,
                    "n": n_items,
                    "headline": True,
                    "higher_is_better": hib,
                    "cached_from": "",
                }
                for rid in ids
                for ev, kind, metric, hib in (
                    ("prefs", "preference", "accuracy", True),
                    ("ppl", "perplexity", "loss", False),
                )
            ],
            schema=store._arrow_schema("eval_results"),
        )
        n = n_runs * 2 * n_items
        samples = pa.table(
            {
                "run_id": pa.array(np.repeat(ids, 2 * n_items)),
                "eval": pa.array(np.tile(np.repeat(["prefs", "ppl"], n_items), n_runs)),
                "target": pa.array(["sft"] * n),
                "item": pa.array(np.tile([f"item{k}" for k in range(n_items)], 2 * n_runs)),
                "metric": pa.array(np.tile(np.repeat(["correct", "loss"], n_items), n_runs)),
                "value": pa.array(
                    np.where(
                        np.tile(np.repeat([True, False], n_items), n_runs),
                        rng.integers(0, 2, n).astype(float),
                        rng.random(n) * 3,
                    )
                ),
            },
            schema=store._arrow_schema("eval_samples"),
        )
        with store.connect(root, write=True) as con:
            started = time.perf_counter()
            con.execute("BEGIN TRANSACTION")
            for table, arrow in (
                ("runs", runs),
                ("eval_results", results),
                ("eval_samples", samples),
            ):
                con.register("incoming", arrow)
                con.execute(f"INSERT INTO {table} SELECT * FROM incoming")
                con.unregister("incoming")
            con.execute("COMMIT")
            took = time.perf_counter() - started
        print(
            f"ingest: {n:,} per-sample rows (+{n_runs:,} runs) in {took:.2f} s = "
            f"{n / took / 1e6:.2f} M rows/s (target ≥ 1 M rows/s)"
        )

        compare.compare(root, ["bench"], resamples=200)  # warm: imports, file cache
        times = []
        for _ in range(5):
            started = time.perf_counter()
            _, _, _, items = compare.load(root, ["bench"], None)
            times.append(time.perf_counter() - started)
        assert items.scores["ppl.loss"].shape == (n_runs, n_items)
        print(
            f"compare queries over {n_runs:,} runs ({n:,} item scores read): "
            f"{min(times) * 1000:.0f} ms best of 5, {sorted(times)[2] * 1000:.0f} ms median "
            "(target < 200 ms)"
        )
        started = time.perf_counter()
        cmp = compare.compare(root, ["bench"])
        full = time.perf_counter() - started
        print(
            f"full compare (queries + {len(cmp.rows) - 1:,} × 2 paired tests, Holm): {full:.2f} s"
        )


if __name__ == "__main__":
    main()
