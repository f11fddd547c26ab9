"""Per-item scores of compared runs, as dense matrices (runs × items) read from DuckDB:
what the paired tests of `compare` run on."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftlab.reports import store


@dataclass
class Items:
    """Per-item scores of the last model of each run, as one dense matrix per metric
    (runs × items, NaN where a run has no score). DuckDB returns numbers only (items are
    numbered by the order of their ids' hashes); the ids themselves are read only when a
    comparison needs them (runs scored on different items)."""

    metrics: list[str]
    scores: dict[str, Any]  # metric → float array, runs × items
    row_of: dict[str, int]  # run id → matrix row
    root: Path
    query_args: list[Any]
    _names: dict[str, list[str]] | None = None

    SCORED = """FROM eval_samples s
        JOIN (SELECT unnest(?, recursive := true)) w ON s.eval = w.eval
        JOIN (SELECT unnest(?) AS run_id, unnest(range(len(?))) AS r) ids
             ON ids.run_id = s.run_id
        JOIN eval_results e ON e.run_id = s.run_id AND e.eval = s.eval
             AND e.target = s.target AND e.metric = w.metric AND e.is_last
             AND s.metric = e.score"""

    @classmethod
    def load(cls, root: Path, ids: list[str], metrics: list[str], con: Any = None) -> Items:
        row_of = {run_id: k for k, run_id in enumerate(ids)}
        wanted = []
        for k, m in enumerate(metrics):
            ev, _, metric = m.partition(".")
            wanted.append({"m": k, "eval": ev, "metric": metric})
        args = [wanted, ids, ids]
        if not metrics:
            return cls(metrics, {}, row_of, root, args)
        with contextlib.ExitStack() as stack:
            if con is None:
                con = stack.enter_context(store.connect(root, write=False))
            cols = con.execute(
                f"""WITH picked AS MATERIALIZED (
                        SELECT w.m, ids.r, hash(s.item) AS h, s.value {cls.SCORED}),
                    keyed AS (
                        SELECT m, h, row_number() OVER (PARTITION BY m ORDER BY h) - 1 AS i
                        FROM (SELECT DISTINCT m, h FROM picked))
                    SELECT p.m, p.r, k.i, p.value FROM picked p JOIN keyed k USING (m, h)""",
                args,
            ).fetchnumpy()
        scores = {}
        for k, metric in enumerate(metrics):
            sel = cols["m"] == k
            width = int(cols["i"][sel].max()) + 1 if sel.any() else 0
            grid = np.full((len(ids), width), np.nan)
            grid[cols["r"][sel], cols["i"][sel]] = cols["value"][sel]
            scores[metric] = grid
        return cls(metrics, scores, row_of, root, args)

    def names(self, metric: str) -> list[str]:
        """Item ids of a metric's columns (read on first use)."""
        if self._names is None:
            self._names = {m: [] for m in self.metrics}
            with store.connect(self.root, write=False) as con:
                rows = con.execute(
                    f"SELECT DISTINCT w.m, hash(s.item), s.item {self.SCORED} ORDER BY 1, 2",
                    self.query_args,
                ).fetchall()
            for m, _, item in rows:
                self._names[self.metrics[m]].append(item)
        return self._names.get(metric, [])

    def of(self, metric: str, run_ids: list[str]) -> Any:
        """A row's scores: the mean over its runs (seeds) per item; None if never scored."""
        grid = self.scores.get(metric)
        if grid is None or not grid.size:
            return None
        rows = grid[[self.row_of[i] for i in run_ids]]
        if np.isnan(rows).all():
            return None
        if len(run_ids) == 1:
            return rows[0]
        with warnings.catch_warnings():  # an item no seed scored stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(rows, axis=0)

    def per_run(self, metric: str, run_ids: list[str]) -> Any:
        """A row's scores per run (seeds × items); None if never scored."""
        grid = self.scores.get(metric)
        if grid is None or not grid.size:
            return None
        rows = grid[[self.row_of[i] for i in run_ids]]
        return None if np.isnan(rows).all() else rows

    def as_dict(self, metric: str, vector: Any) -> dict[str, float]:
        if vector is None:
            return {}
        return {
            name: float(v)
            for name, v in zip(self.names(metric), vector, strict=True)
            if not np.isnan(v)
        }
