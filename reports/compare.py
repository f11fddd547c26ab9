"""`ftlab compare`: runs side by side from the DuckDB index, each metric with its interval
and, against a baseline run, the difference with a paired test (Holm-corrected across
the runs compared with it).

Runs that differ only by `seed` are one row (mean ± sd across seeds); a difference no
larger than the seed spread is flagged, whatever the per-item test says.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ftlab.reports import stats, store
from ftlab.reports.items import Items
from ftlab.reports.selection import CompareError, hidden_notes, select_runs

STAGE_METRICS = ("eval_loss", "train_loss")  # of the run's last stage; lower is better
IGNORED_KEYS = (
    *("name", "label", "seed", "seeds", "train_seed", "output", "tracking", "search"),
    "description",
    "variants",
)


@dataclass
class Cell:
    value: float
    low: float | None = None
    high: float | None = None
    sd: float | None = None  # across seeds, when the row has several
    diff: stats.Difference | None = None
    p_adjusted: float | None = None
    seed_noise: bool = False

    @property
    def significant(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted < 0.05 and not self.seed_noise


@dataclass
class Row:
    label: str
    run_ids: list[str]
    experiment: str
    methods: str
    params: dict[str, Any]
    state: str
    wall_time_s: float | None
    peak_memory_mb: float | None
    trainable_params: int | None
    study: str | None = None
    trial: int | None = None
    recipe_time_s: float | None = None  # every stage's training time, reused ones' included
    cells: dict[str, Cell] = field(default_factory=dict)
    items: dict[str, Any] = field(default_factory=dict)  # metric → scores over Items.names
    baseline: bool = False
    # what the last stage's losses measure: (objective, held-out data); "" = not recorded
    measures: tuple[str, str] = ("", "")


@dataclass
class Comparison:
    rows: list[Row]
    metrics: list[str]
    higher_is_better: dict[str, bool]
    baseline: Row | None
    notes: list[str] = field(default_factory=list)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            key = v.get("name", i) if isinstance(v, dict) else i
            out |= _flatten(v, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def _fill_new_keys(recipes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A key that older runs' specs lack (the schema grew it since) is not a difference
    when every run that has it agrees on its value: the older runs ran with that default."""
    keys = set().union(*(r.keys() for r in recipes.values())) if recipes else set()
    for key in keys:
        present = [r[key] for r in recipes.values() if key in r]
        if (
            len(present) < len(recipes)
            and len({json.dumps(v, sort_keys=True) for v in present}) == 1
        ):
            for r in recipes.values():
                r.setdefault(key, present[0])
    return recipes


def _recipe(spec_json: str) -> dict[str, Any]:
    spec = json.loads(spec_json or "{}")
    return {k: v for k, v in _flatten(spec).items() if k.split(".")[0] not in IGNORED_KEYS}


def load(
    root: Path, refs: list[str], metrics: list[str] | None, *, all_runs: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], Items]:
    """Everything a comparison reads from DuckDB: runs, last-model eval results, stages and
    per-item scores, on one connection."""
    with store.connect(root, write=False) as con:  # one connection for every query
        runs = select_runs(root, refs, con, all_runs=all_runs)
        ids = [r["run_id"] for r in runs]
        results = store.rows(
            con,
            """SELECT run_id, eval, metric, value, ci_low, ci_high, headline,
                      higher_is_better, target
               FROM eval_results WHERE is_last AND run_id IN (SELECT unnest(?))""",
            [ids],
        )
        stages = store.rows(
            con,
            f"""SELECT run_id, method, position, trainable_params, peak_memory_mb,
                      eval_loss, train_loss, wall_time_s,
                      json_extract_string(summary_json, '$.objective') AS objective,
                      json_extract_string(summary_json, '$.eval_data') AS eval_data
               FROM stages WHERE run_id IN (SELECT unnest(?))
                 AND {store.ON_CHAIN}
               ORDER BY run_id, position""",
            [ids],
        )
        per_item = sorted({f"{r['eval']}.{r['metric']}" for r in results})
        if metrics:
            metrics[:] = [_resolve(m, [*per_item, *STAGE_METRICS]) for m in metrics]
            per_item = [m for m in metrics if m in per_item]
        else:
            per_item = [f"{r['eval']}.{r['metric']}" for r in results if r["headline"]]
            per_item = list(dict.fromkeys(per_item))
        items = Items.load(root, ids, per_item, con)
    return runs, results, stages, items


def _resolve(metric: str, names: list[str]) -> str:
    """`eval.metric` from its full name, or from the metric's or the eval's name when only
    one matches (`-m exact`, `-m json`)."""
    if metric in names:
        return metric
    hits = [n for n in names if metric in n.split(".")]
    if len(hits) > 1:
        raise CompareError(f"metric {metric!r} is ambiguous: {', '.join(hits)}")
    return hits[0] if hits else metric  # an unknown name is reported with the known ones


def compare(
    root: Path,
    refs: list[str] | None = None,
    *,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    resamples: int = 1000,
    ci: str = "stored",
    all_runs: bool = False,
    each_seed: bool = False,
) -> Comparison:
    """`ci`: `stored` shows each eval's own interval (Wilson for rates, percentile
    bootstrap otherwise); `percentile` or `bca` recomputes it from the per-item scores
    (seeded), for metrics that are the plain mean of their items."""
    if ci not in ("stored", "percentile", "bca"):
        raise CompareError(f"ci {ci!r}: expected stored, percentile or bca")
    metrics = list(metrics) if metrics else None  # resolved in place by load
    runs, results, stages, items = load(root, refs or [], metrics, all_runs=all_runs)
    higher, chosen = _metrics(results, metrics)
    rows = _rows(runs, _cells(runs, results, stages), items, chosen, each_seed)
    notes = _recompute_intervals(rows, ci, resamples) if ci != "stored" else []
    if not all_runs:
        notes += hidden_notes(root, refs or [], runs)
    base = _pick_baseline(rows, baseline)
    if base is not None:
        base.baseline = True
        for metric in chosen:
            notes += _test_against(base, rows, metric, items, resamples)
    return Comparison(rows, chosen, {m: higher[m] for m in chosen}, base, notes)


def _metrics(
    results: list[dict[str, Any]], metrics: list[str] | None
) -> tuple[dict[str, bool], list[str]]:
    """(higher-is-better of every metric the runs have, the metrics to show)."""
    higher: dict[str, bool] = {m: False for m in STAGE_METRICS}
    headline: list[str] = []
    for r in results:
        name = f"{r['eval']}.{r['metric']}"
        higher[name] = bool(r["higher_is_better"])
        if r["headline"] and name not in headline:
            headline.append(name)
    chosen = metrics or [*headline, "eval_loss"]
    unknown = [m for m in chosen if m not in higher]
    if unknown:
        known = ", ".join(sorted(higher))
        raise CompareError(f"no metric {', '.join(unknown)} in these runs; they have: {known}")
    return higher, chosen


def _cells(
    runs: list[dict[str, Any]], results: list[dict[str, Any]], stages: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per run: its metrics' (value, low, high) and its stages."""
    per_run: dict[str, dict[str, Any]] = {r["run_id"]: {"cells": {}, "stages": []} for r in runs}
    for r in results:
        name = f"{r['eval']}.{r['metric']}"
        per_run[r["run_id"]]["cells"][name] = (r["value"], r["ci_low"], r["ci_high"])
    for s in stages:
        per_run[s["run_id"]]["stages"].append(s)
    for info in per_run.values():
        if info["stages"]:
            last = info["stages"][-1]
            for m in STAGE_METRICS:
                if last[m] is not None:
                    info["cells"][m] = (last[m], None, None)
    return per_run


def _rows(
    runs: list[dict[str, Any]],
    per_run: dict[str, Any],
    items: Items,
    chosen: list[str],
    each_seed: bool = False,
) -> list[Row]:
    """One row per recipe (runs that differ only by seed; with `each_seed` a row per run),
    in the order they were made."""
    ids = [r["run_id"] for r in runs]
    recipes = _fill_new_keys({r["run_id"]: _recipe(r["spec_json"]) for r in runs})
    varying = sorted(
        k
        for k in set().union(*(recipes[i].keys() for i in ids))
        if len({json.dumps(recipes[i].get(k), sort_keys=True) for i in ids}) > 1
    )
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        key = json.dumps([r["experiment"], recipes[r["run_id"]]], sort_keys=True)
        groups.setdefault(key, []).append(r)  # one row per experiment and recipe
    rows = []
    for group in groups.values():
        if len({r["seed"] for r in group}) == len(group) and not each_seed:
            rows.append(_row(group, per_run, items, chosen, varying, recipes))
            continue  # else: a run per row (a repeated trial: the same recipe and seed)
        singles = [_row([r], per_run, items, chosen, varying, recipes) for r in group]
        seeded = len({r["seed"] for r in group}) > 1
        for row, r in zip(singles, group, strict=True):
            row.label += f" seed={r['seed']}" if seeded else ""
        rows += singles
    created = {r["run_id"]: r["created"] or 0.0 for r in runs}
    rows.sort(key=lambda row: min(created[i] for i in row.run_ids))
    experiment = {r["run_id"]: r["experiment"] for r in runs}
    if len(set(experiment.values())) > 1:  # two experiments' `lora` rows are told apart
        for row in rows:
            exp = experiment[row.run_ids[0]]
            row.label = row.label if row.label == exp else f"{exp}/{row.label}"
    repeated = {r.label for r in rows if sum(o.label == r.label for o in rows) > 1}
    for row in rows:  # one label per run: the same variant run again gets its id's end
        if row.label in repeated:
            row.label += f" ·{row.run_ids[0][-4:]}"
    return rows


def _recompute_intervals(rows: list[Row], ci: str, resamples: int) -> list[str]:
    """Intervals from the per-item scores, for metrics that are the mean of their items."""
    kept = set()
    for row in rows:
        for metric, vector in row.items.items():
            cell = row.cells.get(metric)
            values = vector[~np.isnan(vector)]
            if cell is None or cell.sd is not None or not values.size:
                continue
            if abs(float(values.mean()) - cell.value) > 1e-9:  # not a mean of items
                kept.add(metric)
                continue
            cell.low, cell.high = stats.bootstrap_ci(
                values, method=ci, resamples=max(resamples, 2000)
            )
    return [f"{m}: not a plain mean of its items; its own interval is shown" for m in sorted(kept)]


def _test_against(
    base: Row, rows: list[Row], metric: str, items: Items, resamples: int
) -> list[str]:
    """Each row against the baseline on `metric`: a paired test on the items both have
    (one batched bootstrap for the rows scored on every baseline item), Holm-corrected."""
    others = [row for row in rows if row is not base and metric in row.cells]
    ref = base.cells.get(metric)
    if ref is None:
        return []
    notes = []
    if metric in STAGE_METRICS:  # a loss means something only against the same loss
        apart = [r for r in others if _not_comparable(r, base)]
        notes += [f"{metric}: no Δ for {r.label}: {_not_comparable(r, base)}" for r in apart]
        others = [r for r in others if r not in apart]
    b = base.items.get(metric)
    scored = ~np.isnan(b) if b is not None else np.zeros(0, dtype=bool)
    seeded = _two_level(base, others, metric, items, resamples)
    rest = [r for r in others if all(r is not s for s in seeded)]
    full = [
        r
        for r in rest
        if scored.any()
        and r.items.get(metric) is not None
        and not np.isnan(r.items[metric][scored]).any()
    ]
    batched = stats.compare_paired_many(
        [r.items[metric][scored] for r in full],
        b[scored] if b is not None else [],
        resamples=resamples,
    )
    for row, diff in zip(full, batched, strict=True):
        row.cells[metric].diff = diff
    for row in others:
        cell = row.cells[metric]
        if all(row is not r for r in full) and all(row is not r for r in seeded):
            mine, theirs = items.as_dict(metric, row.items.get(metric)), items.as_dict(metric, b)
            cell.diff = (
                stats.compare_paired(mine, theirs, resamples=resamples)
                if mine and theirs
                else stats.Difference(cell.value - ref.value, math.nan, math.nan, math.nan, "", 0)
            )
        assert cell.diff is not None
        if cell.diff.test and (_weighted(row, metric) or _weighted(base, metric)):
            shift = (cell.value - ref.value) - cell.diff.delta  # Δ as the shown values differ
            d = cell.diff
            cell.diff = replace(d, delta=d.delta + shift, low=d.low + shift, high=d.high + shift)
            weighted = (
                f"{metric}: Δ is the difference of the values shown (weighted over tokens); "
                "its test is on the per-item values"
            )
            notes += [weighted] if weighted not in notes else []
        if cell.diff.test and not cell.diff.paired:
            notes.append(f"{row.label} vs {base.label} on {metric}: different items, unpaired")
        cell.seed_noise = stats.within_seed_noise(cell.diff.delta, cell.sd or 0.0, ref.sd or 0.0)
    tested = [(r.cells[metric], d) for r in others if (d := r.cells[metric].diff)]
    for (cell, _), p in zip(tested, stats.holm([d.p for _, d in tested]), strict=True):
        cell.p_adjusted = None if math.isnan(p) else p
    return notes


def _weighted(row: Row, metric: str) -> bool:
    """Whether the row's value is not the plain mean of its item scores (perplexity's loss
    is weighted by tokens): a Δ from the items would not be the difference shown."""
    vector, cell = row.items.get(metric), row.cells.get(metric)
    if vector is None or cell is None or np.isnan(vector).all():
        return False
    return abs(float(np.nanmean(vector)) - cell.value) > 1e-9


def _two_level(
    base: Row, others: list[Row], metric: str, items: Items, resamples: int
) -> list[Row]:
    """Rows tested by the two-level bootstrap (seeds, then items): those where either side
    has several training seeds and every run of both was scored on the same items (`seeds:`
    keeps the data split; runs whose `seed` differs may hold out other items)."""
    done = []
    for row in others:
        if len(row.run_ids) == 1 and len(base.run_ids) == 1:
            continue
        mine, theirs = items.per_run(metric, row.run_ids), items.per_run(metric, base.run_ids)
        if mine is None or theirs is None:
            continue
        both = np.isnan(np.vstack([mine, theirs]))
        if not (both.all(axis=0) | ~both.any(axis=0)).all():  # some runs lack some items
            continue
        row.cells[metric].diff = stats.two_level_bootstrap(mine, theirs, resamples=resamples)
        done.append(row)
    return done


def _row(
    group: list[dict[str, Any]],
    per_run: dict[str, dict[str, Any]],
    items: Items,
    metrics: list[str],
    varying: list[str],
    recipes: dict[str, dict[str, Any]],
) -> Row:
    first = group[0]
    ids = [r["run_id"] for r in group]
    stages = per_run[first["run_id"]]["stages"]
    label = first["variant"] or first["experiment"]
    if first.get("trial") is not None:
        label = f"trial {first['trial']}"
    if len(group) > 1:
        label += f" ×{len(group)} seeds"
    walls = [r["wall_time_s"] for r in group if r["wall_time_s"] is not None]
    recipe = [sum(s["wall_time_s"] or 0.0 for s in per_run[i]["stages"]) for i in ids]
    peaks = [s["peak_memory_mb"] for i in ids for s in per_run[i]["stages"] if s["peak_memory_mb"]]
    row = Row(
        label=label,
        run_ids=ids,
        experiment=first["experiment"],
        methods=" → ".join(s["method"] for s in stages),
        params={k: _used(recipes[first["run_id"]], k) for k in varying},
        state=", ".join(sorted({r["state"] for r in group})),
        wall_time_s=sum(walls) / len(walls) if walls else None,
        recipe_time_s=sum(recipe) / len(recipe) if stages else None,
        peak_memory_mb=max(peaks) if peaks else None,
        trainable_params=stages[-1]["trainable_params"] if stages else None,
        study=first.get("study"),
        trial=first.get("trial"),
        measures=(
            (stages[-1]["objective"] or "", stages[-1]["eval_data"] or "") if stages else ("", "")
        ),
    )
    for metric in metrics:
        values = [per_run[i]["cells"][metric] for i in ids if metric in per_run[i]["cells"]]
        if not values:
            continue
        if len(values) == 1:
            row.cells[metric] = Cell(*values[0])
        else:
            mean, sd, _ = stats.seed_summary([v[0] for v in values])
            row.cells[metric] = Cell(
                mean,
                mean - 1.96 * sd / math.sqrt(len(values)),
                mean + 1.96 * sd / math.sqrt(len(values)),
                sd=sd,
            )
        vector = items.of(metric, ids)
        if vector is not None:
            row.items[metric] = vector
    return row


def _used(recipe: dict[str, Any], key: str) -> Any:
    """The key's value, or None where the run ignores it (adapter settings of a `full`
    stage: showing LoRA's r for full fine-tuning reads as if it had one)."""
    parts = key.split(".")
    adapter = parts[0] == "stages" and len(parts) > 3 and parts[2] == "adapter"
    if adapter and recipe.get(f"stages.{parts[1]}.method") == "full":
        return None
    return recipe.get(key)


def _not_comparable(row: Row, base: Row) -> str:
    """Why the last stages' losses of two rows cannot be compared ('' when they can)."""
    (mine, my_data), (theirs, their_data) = row.measures, base.measures
    if mine and theirs and mine != theirs:  # runs from before stages recorded it: unknown
        return (
            f"its last stage optimises another objective ({mine}; baseline {theirs}), "
            "so their losses are not on one scale"
        )
    if my_data and their_data and my_data != their_data:
        return "its loss is measured on other held-out data than the baseline's"
    return ""


def _pick_baseline(rows: list[Row], baseline: str | None) -> Row | None:
    """The named row, else the first that completed (a failed run is no reference)."""
    if baseline is None:
        done = [r for r in rows if r.state == "completed"]
        return (done or rows)[0] if len(rows) > 1 else None
    for row in rows:  # its label, the label without ' ×3 seeds' / ' seed=1', or a run id
        bare = re.sub(r"( ×\d+ seeds| seed=\S+| ·\w+)+$", "", row.label)
        if baseline in (row.label, bare) or any(i.startswith(baseline) for i in row.run_ids):
            return row
    labels = ", ".join(r.label for r in rows)
    raise CompareError(f"baseline {baseline!r} is not among the compared runs ({labels})")
