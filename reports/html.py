"""`ftlab report`: one self-contained HTML page over runs in the DuckDB index.

Sections: leaderboard (every metric with its interval, Δ vs the baseline with a paired
test), metric-vs-cost scatter with the Pareto front, training and eval-loss curves
overlaid, alignment curves (rewards, margins, KL), for sweeps the optimisation history
and parameter importances, and a per-sample explorer showing the items where two runs
disagree, with both outputs and the judge's verdicts.

Charts are inline SVG drawn here; the explorer is a few lines of inline JavaScript over
inline JSON. Nothing is fetched when the page opens.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from ftlab.reports import store
from ftlab.reports.compare import Comparison, Row, compare
from ftlab.reports.page import CSS, EXPLORER, PAGE, SCRIPT
from ftlab.reports.units import fmt_mb, fmt_num, fmt_s

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
)  # fmt: skip
ALIGNMENT = ("reward", "kl", "margin")  # step metrics shown as alignment curves
MAX_ITEMS = 300  # per eval and run in the explorer
MAX_TEXT = 1500  # characters of a prompt or reply shown in the explorer


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def breakable(name: Any) -> str:
    """`name` escaped, with line-break opportunities after `.` and `_`: a header such as
    `sft.train.learning_rate` may wrap instead of widening its column."""
    return re.sub(r"([._])", r"\1<wbr>", esc(name))


def _fmt(v: Any, spec: str = ".3f") -> str:
    return fmt_num(v, spec, missing="–")


# ---------------------------------------------------------------- charts (inline SVG)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _frame(
    xs: list[float], ys: list[float], title: str, xlabel: str, ylabel: str, w: int, h: int
) -> tuple[Any, Any, list[str]]:
    left, right, top, bottom = 64, 16, 28, 44
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-9, y1 + abs(y1) * 0.1 + 1e-9
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    out = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{esc(title)}">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" class="title">{esc(title)}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" class="axis"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" class="axis"/>',
    ]
    for t in _ticks(x0, x1):
        out.append(
            f'<text x="{sx(t):.1f}" y="{h - bottom + 14}" text-anchor="middle">{t:.4g}</text>'
        )
    for t in _ticks(y0, y1):
        out.append(
            f'<line x1="{left}" y1="{sy(t):.1f}" x2="{w - right}" y2="{sy(t):.1f}" class="grid"/>'
        )
        out.append(f'<text x="{left - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    out.append(
        f'<text x="{(left + w - right) / 2}" y="{h - 8}" text-anchor="middle">{esc(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{(top + h - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + h - bottom) / 2})">{esc(ylabel)}</text>'
    )
    return sx, sy, out


def line_chart(
    series: list[tuple[str, list[tuple[float, float]]]],
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    w: int = 560,
    h: int = 300,
    colors: dict[str, str] | None = None,
) -> str:
    series = [(name, pts) for name, pts in series if pts]
    if not series:
        return ""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    sx, sy, out = _frame(xs, ys, title, xlabel, ylabel, w, h)
    legend = []
    for k, (name, pts) in enumerate(series):
        color = (colors or {}).get(name) or PALETTE[k % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8">'
            f"<title>{esc(name)}</title></polyline>"
        )
        if len(pts) == 1:
            x, y = pts[0]
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        legend.append(f'<span><i style="background:{color}"></i>{esc(name)}</span>')
    out.append("</svg>")
    return f"<figure>{''.join(out)}<figcaption>{''.join(legend)}</figcaption></figure>"


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points not dominated (lower cost x, better metric y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and (oy >= y if higher_is_better else oy <= y)) and (ox < x or oy != y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def scatter_chart(
    points: list[tuple[str, float, float, float | None, float | None]],
    title: str,
    xlabel: str,
    ylabel: str,
    higher_is_better: bool,
    w: int = 560,
    h: int = 320,
) -> str:
    """(label, cost, metric, interval low, high) points; the Pareto front is joined."""
    points = [p for p in points if p[1] is not None and p[2] is not None]
    if not points:
        return ""
    xs = [p[1] for p in points]
    ys = [v for p in points for v in (p[2], p[3], p[4]) if v is not None]
    sx, sy, out = _frame(xs, ys, title, xlabel, ylabel, w, h)
    front = pareto_front([(p[1], p[2]) for p in points], higher_is_better)
    line = sorted((points[i][1], points[i][2]) for i in front)
    out.append(
        '<polyline points="'
        + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        + '" class="front"/>'
    )
    for k, (label, x, y, lo, hi) in enumerate(points):
        color = PALETTE[k % len(PALETTE)]
        if lo is not None and hi is not None:
            out.append(
                f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(lo):.1f}" '
                f'y2="{sy(hi):.1f}" stroke="{color}" stroke-width="1.2"/>'
            )
        ring = ' stroke="#000" stroke-width="1.5"' if k in front else ""
        out.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{color}"{ring}>'
            f"<title>{esc(label)}: {y:.4g} at {x:.4g}</title></circle>"
        )
        right = sx(x) > w - 90  # keep the label inside the chart
        out.append(
            f'<text x="{sx(x) + (-7 if right else 7):.1f}" y="{sy(y) - 6:.1f}" '
            f'text-anchor="{"end" if right else "start"}" class="pt">{esc(label)}</text>'
        )
    out.append("</svg>")
    note = "black ring = on the Pareto front (no run is both cheaper and better)"
    return f"<figure>{''.join(out)}<figcaption>{note}</figcaption></figure>"


def bar_chart(bars: list[tuple[str, float]], title: str, w: int = 560) -> str:
    if not bars:
        return ""
    h = 40 + 22 * len(bars)
    top = max((v for _, v in bars), default=1.0) or 1.0
    out = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{esc(title)}">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" class="title">{esc(title)}</text>',
    ]
    for k, (name, v) in enumerate(bars):
        y = 30 + 22 * k
        out.append(f'<text x="190" y="{y + 13}" text-anchor="end">{esc(name)}</text>')
        out.append(
            f'<rect x="196" y="{y}" width="{max(1.0, v / top * (w - 260)):.1f}" '
            f'height="16" fill="{PALETTE[0]}"/>'
        )
        out.append(f'<text x="{200 + v / top * (w - 260):.1f}" y="{y + 13}">{v:.2f}</text>')
    out.append("</svg>")
    return f"<figure>{''.join(out)}</figure>"


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
    head += ["run time", "peak mem", "trainable"]
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
        out.append(f"<td>{esc(fmt_s(row.wall_time_s))}</td>")
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


def build(root: Path, refs: list[str] | None = None, *, baseline: str | None = None) -> str:
    cmp = compare(root, refs, baseline=baseline)
    explorer = _explorer_data(root, cmp)
    notes = "".join(f"<li>{esc(n)}</li>" for n in cmp.notes)
    legend = (
        "Δ = run − baseline on the same items; p: McNemar (0/1 scores), sign test (judge "
        "outcomes) or paired bootstrap of the mean difference, Holm-corrected over the runs "
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
            (r.label, r.wall_time_s, r.cells[m].value, r.cells[m].low, r.cells[m].high)
            for r in cmp.rows
            if m in r.cells
        ]
        if len(pts) > 1:
            out.append(
                scatter_chart(pts, f"{m} vs wall time", "wall time (s)", m, cmp.higher_is_better[m])  # type: ignore[arg-type]
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


def write(
    root: Path, refs: list[str] | None, out: Path | None, *, baseline: str | None = None
) -> Path:
    page = build(root, refs, baseline=baseline)
    if out is None:
        name = (refs[0] if refs and len(refs) == 1 else None) or "latest"
        out = root / "reports" / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
