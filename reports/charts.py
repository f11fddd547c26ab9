"""The report's charts: line, scatter (with the Pareto front) and bar charts as inline
SVG strings, drawn in Python so the page needs no JavaScript library and no network."""

from __future__ import annotations

import html
import math
from typing import Any

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
)  # fmt: skip


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


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
    intervals: dict[str, list[tuple[float, float, float]]] | None = None,
    marks: dict[str, tuple[float, str]] | None = None,
) -> str:
    """Lines per series; `intervals` (name → (x, low, high)) draws a bar at each point,
    `marks` (name → (x, tooltip)) a ring around that series' point at x."""
    series = [(name, pts) for name, pts in series if pts]
    if not series:
        return ""
    bars = {name: intervals.get(name, []) for name, _ in series} if intervals else {}
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts] + [
        v for b in bars.values() for _, lo, hi in b for v in (lo, hi)
    ]
    sx, sy, out = _frame(xs, ys, title, xlabel, ylabel, w, h)
    legend = []
    for k, (name, pts) in enumerate(series):
        color = (colors or {}).get(name) or PALETTE[k % len(PALETTE)]
        for x, lo, hi in bars.get(name, []):
            out.append(
                f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{sy(lo):.1f}" y2="{sy(hi):.1f}" '
                f'stroke="{color}" stroke-opacity="0.45" stroke-width="4"/>'
            )
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(pts))
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.8">'
            f"<title>{esc(name)}</title></polyline>"
        )
        if len(pts) == 1:
            x, y = pts[0]
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        at, tip = (marks or {}).get(name, (None, ""))
        for x, y in pts:
            if x == at:
                out.append(
                    f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="none" '
                    f'stroke="{color}" stroke-width="2"><title>{esc(tip)}</title></circle>'
                )
        legend.append(f'<span><i style="background:{color}"></i>{esc(name)}</span>')
    if marks:
        legend.append("<span>◯ the step <code>select:</code> kept</span>")
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
