"""`ftlab report`: one self-contained HTML page over runs in the DuckDB index.

Sections: leaderboard (every metric with its interval, Δ vs the baseline with a paired
test), metric-vs-cost scatter with the Pareto front, training and eval-loss curves
overlaid, alignment curves (rewards, margins, KL), for sweeps the optimisation history
and parameter importances, and a per-sample explorer showing the items where two runs
disagree, with both outputs and the judge's verdicts.

Charts are inline SVG drawn in Python (`charts.py`); the explorer is a few lines of inline
JavaScript over inline JSON. Nothing is fetched when the page opens.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from ftlab.reports import store
from ftlab.reports.charts import PALETTE, bar_chart, esc, line_chart, scatter_chart
from ftlab.reports.compare import Comparison, Row, compare
from ftlab.reports.page import CSS, EXPLORER, PAGE, SCRIPT
from ftlab.reports.units import fmt_mb, fmt_num, fmt_s

ALIGNMENT = ("reward", "kl", "margin")  # step metrics shown as alignment curves
MAX_ITEMS = 300  # per eval and run in the explorer
MAX_TEXT = 1500  # characters of a prompt or reply shown in the explorer


def breakable(name: Any) -> str:
    """`name` escaped, with line-break opportunities after `.` and `_`: a header such as
    `sft.train.learning_rate` may wrap instead of widening its column."""
    return re.sub(r"([._])", r"\1<wbr>", esc(name))


def _fmt(v: Any, spec: str = ".3f") -> str:
    return fmt_num(v, spec, missing="–")


# ---------------------------------------------------------------- data


def _curves(root: Path, ids: list[str]) -> list[dict[str, Any]]:
    return store.query(
        root,
        """SELECT run_id, stage, step, name, value FROM step_metrics
           WHERE run_id IN (SELECT unnest(?)) AND value IS NOT NULL AND isfinite(value)
           ORDER BY run_id, stage, step""",
        [ids],
    )


def _explorer_data(root: Path, cmp: Comparison) -> dict[str, Any]:
    """Per eval: run label → item → {scores, record}, for the last model of each run."""
    ids = {i: row.label for row in cmp.rows for i in row.run_ids[:1]}
    rows = store.query(
        root,
        """SELECT i.run_id, i.eval, i.item, i.record_json,
                  (SELECT to_json(map(list(s.metric), list(s.value))) FROM eval_samples s
                   WHERE s.run_id = i.run_id AND s.eval = i.eval AND s.target = i.target
                         AND s.item = i.item) AS scores
           FROM eval_items i
           JOIN eval_results r ON r.run_id = i.run_id AND r.eval = i.eval
                AND r.target = i.target AND r.is_last AND r.headline
           WHERE i.run_id IN (SELECT unnest(?))""",
        [list(ids)],
    )
    data: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        per_run = data.setdefault(r["eval"], {}).setdefault(ids[r["run_id"]], {})
        if len(per_run) >= MAX_ITEMS:
            continue
        record = json.loads(r["record_json"] or "{}")
        shown: dict[str, Any] = {}
        for k, v in record.items():
            if isinstance(v, str):
                shown[k] = v[:MAX_TEXT]
            elif isinstance(v, dict) and "verdict" in v:
                shown[k] = {"verdict": v.get("verdict"), "raw": str(v.get("raw", ""))[:300]}
        per_run[r["item"]] = {"scores": json.loads(r["scores"] or "{}"), "record": shown}
    return data


def _sweep_section(root: Path, cmp: Comparison) -> str:
    trials = [r for r in cmp.rows if r.trial is not None]
    if len(trials) < 2:
        return ""
    runs = store.query(root, "SELECT spec_json FROM runs WHERE run_id = ?", [trials[0].run_ids[0]])
    spec = json.loads(runs[0]["spec_json"] or "{}")
    objectives = (spec.get("search") or {}).get("objectives") or [{"metric": "eval_loss"}]
    objective = objectives[0].get("metric", "eval_loss")
    maximize = objectives[0].get("direction") == "maximize"
    values = {}
    if objective in ("wall_time_s", "peak_memory_mb"):
        cells = {r.trial: getattr(r, objective) for r in trials}
    else:
        try:
            obj = compare(root, [r.run_ids[0] for r in trials], metrics=[objective])
        except ValueError:  # the objective is not among the indexed metrics
            return ""
        by_id = {row.run_ids[0]: row.cells.get(objective) for row in obj.rows}
        cells = {r.trial: (c.value if (c := by_id.get(r.run_ids[0])) else None) for r in trials}
    for row in trials:
        if cells.get(row.trial) is not None and row.state == "completed":
            values[row.trial] = (float(cells[row.trial]), row)  # type: ignore[arg-type]
    if not values:
        return ""
    history = sorted((t, v) for t, (v, _) in values.items())
    best, best_line = None, []
    for t, v in history:
        best = v if best is None else (max(best, v) if maximize else min(best, v))
        best_line.append((float(t), best))
    chart = line_chart(
        [("trial value", [(float(t), v) for t, v in history]), ("best so far", best_line)],
        f"Optimisation history ({objective}, {'max' if maximize else 'min'})",
        xlabel="trial",
        ylabel=objective,
    )
    bars = _importance(list(values.values()))
    note = (
        "Importance: the share of the objective's variance across completed trials "
        "explained by each parameter (η², one-way; numeric values in quartile bins) — "
        "few trials make it rough."
    )
    return (
        "<section id='sweep'><h2>Sweep</h2>"
        f"<p>{len(values)} completed of {len(trials)} trials; objective {esc(objective)}.</p>"
        f"<div class='charts'>{chart}{bar_chart(bars, 'Parameter importance (η²)')}</div>"
        f"<p class='note'>{esc(note)}</p></section>"
    )


def _importance(values: list[tuple[float, Row]]) -> list[tuple[str, float]]:
    """Share of the objective's variance explained by each parameter's values (η²)."""
    params = sorted({k for _, row in values for k in row.params})
    ys = [v for v, _ in values]
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys) or 1.0
    bars = []
    for p in params:
        groups: dict[str, list[float]] = {}
        for v, row in values:
            groups.setdefault(
                _bucket(row.params.get(p), [r.params.get(p) for _, r in values]), []
            ).append(v)
        between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
        bars.append((p.split(".", 1)[-1], between / total))
    return sorted(bars, key=lambda b: -b[1])


def _bucket(v: Any, all_values: list[Any]) -> str:
    nums = sorted({x for x in all_values if isinstance(x, int | float)})
    if not isinstance(v, int | float) or len(nums) <= 4:
        return json.dumps(v)
    cuts = [nums[int(len(nums) * q)] for q in (0.25, 0.5, 0.75)]
    return str(sum(v >= c for c in cuts))


# ---------------------------------------------------------------- page


def _leaderboard(cmp: Comparison) -> str:
    params = list(dict.fromkeys(k for r in cmp.rows for k in r.params))
    head = ["run", "methods", *[breakable(k.split(".", 1)[-1]) for k in params]]
    for m in cmp.metrics:
        ev, _, metric = m.partition(".")
        arrow = "↑" if cmp.higher_is_better[m] else "↓"
        name = f"{breakable(ev)}<br>{breakable(metric)}" if metric else breakable(m)
        head.append(f"{name} {arrow}")
        if cmp.baseline is not None:
            head.append("Δ")
    head += ["recipe time", "peak mem", "trainable"]
    out = ["<div class='scroll'><table id='leaderboard'><thead><tr>"]
    out += [f"<th>{h}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in cmp.rows:
        cls = " class='baseline'" if row.baseline else ""
        out.append(f"<tr{cls} data-run='{esc(row.run_ids[0])}'>")
        title = esc(", ".join(row.run_ids))
        out.append(
            f"<td title='{title}'>{esc(row.label)}"
            f"{' <em>(baseline)</em>' if row.baseline else ''}</td>"
        )
        out.append(f"<td>{esc(row.methods)}</td>")
        for k in params:
            v = row.params.get(k)
            out.append(f"<td>{esc(_fmt(v, '.3g') if isinstance(v, float) else v)}</td>")
        for m in cmp.metrics:
            cell = row.cells.get(m)
            if cell is None:
                out.append("<td>–</td>" + ("<td></td>" if cmp.baseline else ""))
                continue
            ci = (
                f" <small>± {_fmt(cell.sd)} sd</small>"
                if cell.sd is not None
                else f" <small>[{_fmt(cell.low)}, {_fmt(cell.high)}]</small>"
                if cell.low is not None
                else ""
            )
            out.append(f"<td>{_fmt(cell.value)}{ci}</td>")
            if cmp.baseline is None:
                continue
            d = cell.diff
            if d is None:
                out.append("<td></td>")
                continue
            better = (d.delta > 0) == cmp.higher_is_better[m]
            cls = ("sig better" if better else "sig worse") if cell.significant else ""
            p = cell.p_adjusted
            pt = "" if p is None else (" p&lt;0.001" if p < 0.001 else f" p={p:.3f}")
            test = f" title='{esc(d.test or 'no per-item scores: no test')}, n={d.n}'"
            flag = " <small>~seed</small>" if cell.seed_noise else ""
            out.append(f"<td class='{cls}'{test}>{d.delta:+.3f}<small>{pt}</small>{flag}</td>")
        out.append(f"<td>{esc(fmt_s(row.recipe_time_s))}</td>")
        mem = esc(fmt_mb(row.peak_memory_mb)).replace(" ", "&nbsp;")  # unit on the same line
        out.append(f"<td>{mem}</td><td>{_fmt(row.trainable_params, ',')}</td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` at all. Escaping `</` alone
    is not enough: `<!--<script>` in a prompt opens HTML's "script data double escaped"
    state, where `</script>` no longer closes the element and the page's code is lost."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build(
    root: Path,
    refs: list[str] | None = None,
    *,
    baseline: str | None = None,
    all_runs: bool = False,
) -> str:
    cmp = compare(root, refs, baseline=baseline, all_runs=all_runs)
    explorer = _explorer_data(root, cmp)
    notes = "".join(f"<li>{esc(n)}</li>" for n in cmp.notes)
    legend = (
        "Δ = run − baseline on the same items; p: McNemar (0/1 scores), sign test (judge "
        "outcomes) or paired bootstrap of the mean difference — a two-level bootstrap (seeds, "
        "then items) where a row has several training seeds —, Holm-corrected over the runs "
        "compared with the baseline; coloured = p &lt; 0.05 (green better, red worse); "
        "~seed = within the spread across seeds. Intervals are 95%."
    )
    loss_charts, align_charts = _curve_charts(root, cmp)
    sections = [
        f"<section id='board'><h2>Leaderboard</h2>{_leaderboard(cmp)}"
        f"<p class='note'>{legend}</p><ul class='note'>{notes}</ul></section>",
        _charts("cost", "Metric vs cost", _scatters(cmp)),
        _charts("curves", "Training and eval loss", loss_charts),
        _charts("alignment", "Alignment curves", align_charts),
        _charts("during", "Evals during training", _during_training(root, cmp)),
        _sweep_section(root, cmp),
        EXPLORER if explorer else "",
    ]
    experiments = sorted({row.experiment for row in cmp.rows})
    return PAGE.format(
        title=esc(f"ftlab report — {', '.join(experiments)}"),
        created=time.strftime("%Y-%m-%d %H:%M"),
        n=len(cmp.rows),
        root=esc(root),
        body="".join(sections),
        css=CSS,
        data=script_json(explorer),
        script=SCRIPT,
    )


def _charts(anchor: str, title: str, charts: list[str]) -> str:
    if not charts:
        return ""
    body = "".join(charts)
    return f"<section id='{anchor}'><h2>{title}</h2><div class='charts'>{body}</div></section>"


def _scatters(cmp: Comparison) -> list[str]:
    """Metric vs cost, for each headline metric."""
    out = []
    for m in cmp.metrics:
        pts = [
            (r.label, r.recipe_time_s, r.cells[m].value, r.cells[m].low, r.cells[m].high)
            for r in cmp.rows
            if m in r.cells
        ]
        if len(pts) > 1:
            out.append(
                scatter_chart(
                    pts, f"{m} vs recipe time", "recipe time (s)", m, cmp.higher_is_better[m]
                )  # type: ignore[arg-type]
            )
    return out


def _curve_charts(root: Path, cmp: Comparison) -> tuple[list[str], list[str]]:
    """(loss curves, alignment curves) of the first run of each row."""
    label = {i: row.label for row in cmp.rows for i in row.run_ids}
    colors = {row.label: PALETTE[k % len(PALETTE)] for k, row in enumerate(cmp.rows)}
    by_stage: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    for c in _curves(root, sorted({row.run_ids[0] for row in cmp.rows})):
        by_stage.setdefault((c["stage"], c["name"]), {}).setdefault(label[c["run_id"]], []).append(
            (float(c["step"]), float(c["value"]))
        )
    loss_charts, align_charts = [], []
    for (stage, name), series in sorted(by_stage.items()):
        chart = line_chart(sorted(series.items()), f"{stage}: {name}", ylabel=name, colors=colors)
        if name in ("loss", "eval_loss"):
            loss_charts.append(chart)
        elif any(k in name for k in ALIGNMENT):
            align_charts.append(chart)
    return loss_charts, align_charts


def _during_training(root: Path, cmp: Comparison) -> list[str]:
    """Each eval's headline metric on the snapshots of a stage (`every:`), vs the step,
    with its 95% interval: one line per run."""
    label = {i: row.label for row in cmp.rows for i in row.run_ids[:1]}
    colors = {row.label: PALETTE[k % len(PALETTE)] for k, row in enumerate(cmp.rows)}
    rows = store.query(
        root,
        """SELECT run_id, eval, metric, target, value, ci_low, ci_high FROM eval_results
           WHERE run_id IN (SELECT unnest(?)) AND headline AND contains(target, '@')
             AND value IS NOT NULL AND isfinite(value)""",
        [sorted(label)],
    )
    charts: dict[tuple[str, str, str], dict[str, list[tuple[float, float, float, float]]]] = {}
    for r in rows:
        stage, step = r["target"].rsplit("@", 1)
        lo, hi = r["ci_low"], r["ci_high"]
        point = (
            float(step),
            r["value"],
            r["value"] if lo is None else lo,
            r["value"] if hi is None else hi,
        )
        charts.setdefault((r["eval"], r["metric"], stage), {}).setdefault(
            label[r["run_id"]], []
        ).append(point)
    kept = _kept_steps(root, label)
    out = []
    for (ev, metric, stage), series in sorted(charts.items()):
        out.append(
            line_chart(
                [(name, [(x, y) for x, y, _, _ in pts]) for name, pts in sorted(series.items())],
                f"{ev} {metric} during {stage}",
                ylabel=metric,
                colors=colors,
                intervals={n: [(x, lo, hi) for x, _, lo, hi in p] for n, p in series.items()},
                marks=kept.get(stage),
            )
        )
    return out


def _kept_steps(root: Path, label: dict[str, str]) -> dict[str, dict[str, tuple[float, str]]]:
    """stage → run label → (the step its `select:` kept, a tooltip): the ringed point."""
    rows = store.query(
        root,
        """SELECT run_id, stage, summary_json FROM stages
           WHERE run_id IN (SELECT unnest(?)) AND contains(summary_json, '"selected"')""",
        [sorted(label)],
    )
    out: dict[str, dict[str, tuple[float, str]]] = {}
    for r in rows:
        sel = json.loads(r["summary_json"]).get("selected") or {}
        if "step" in sel:
            tip = f"kept step {sel['step']} (select: {sel['metric']}, {sel['direction']})"
            out.setdefault(r["stage"], {})[label[r["run_id"]]] = (float(sel["step"]), tip)
    return out


def write(
    root: Path,
    refs: list[str] | None,
    out: Path | None,
    *,
    baseline: str | None = None,
    all_runs: bool = False,
) -> Path:
    page = build(root, refs, baseline=baseline, all_runs=all_runs)
    if out is None:
        name = (refs[0] if refs and len(refs) == 1 else None) or "latest"
        out = root / "reports" / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
