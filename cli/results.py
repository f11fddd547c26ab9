"""The table `ftlab run` and `ftlab eval` print: one row per run, with its stages' and
evals' headline figures, as the methods and eval kinds declare them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from ftlab.cli.app import console
from ftlab.reports.units import fmt_mb, fmt_num, fmt_s


def print_results(results: list[Any]) -> None:
    from ftlab.runner.evaluate import read_results

    evals = {res.run_dir: read_results(res.run_dir) for res in results}
    eval_cols: list[tuple[str, str]] = []  # (eval name, headline metric)
    for per_run in evals.values():
        for name, summary in per_run.items():
            if (name, summary["headline"]) not in eval_cols:
                eval_cols.append((name, summary["headline"]))
    table = Table(title="Runs", show_lines=False)
    columns = [
        "run",
        "methods",
        "trainable",
        "eval loss",
        "method metric",
        *(name if name == metric else f"{name} {metric}" for name, metric in eval_cols),
        "stage time",
        "recipe time",
        "peak mem",
    ]
    if not any(res.stages for res in results):
        return  # nothing finished: no table, and no legend for one
    rows = [_row(res, evals[res.run_dir], eval_cols) for res in results if res.stages]
    keep = [i for i in range(len(columns)) if any(r[i] != "-" for r in rows)]  # no empty columns
    for i in keep:
        right = columns[i] in ("trainable", "eval loss", "stage time", "recipe time", "peak mem")
        table.add_column(columns[i], justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    notes = _notes(results, evals, eval_cols)
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False)
    for res in results:
        console.print(f"  {res.variant}: {rel(res.run_dir)}  [{res.state}]")


def _row(res: Any, evals: dict[str, Any], eval_cols: list[tuple[str, str]]) -> list[str]:
    """One run: methods, trainable parameters, loss, figures, eval cells, times, memory."""
    stages = [st for st in res.stages.values() if not st.get("evaluator")]  # not a judge
    last = stages[-1].get("summary", {})
    before, after = last.get("initial_eval_loss"), last.get("eval_loss")
    recipe = sum((st.get("summary", {}).get("wall_time_s") or 0) for st in stages)
    reused = [st["stage"] for st in stages if st.get("reused_from")]
    return [
        res.variant,
        " → ".join(st.get("method", "?") for st in stages),
        f"{last.get('trainable_params', 0):,}",
        f"{fmt_num(before)} → {fmt_num(after)}" if before is not None else fmt_num(after),
        _method_metric(str(stages[-1].get("method")), last),
        *(_eval_cell(evals.get(name), metric) for name, metric in eval_cols),
        fmt_s(last.get("wall_time_s")),
        fmt_s(recipe) + ("*" if reused else ""),
        fmt_mb(last.get("peak_memory_mb")),
    ]


def _notes(
    results: list[Any], evals: dict[Any, Any], eval_cols: list[tuple[str, str]]
) -> list[str]:
    notes = [
        "eval loss: the last stage's validation loss before → after training;"
        " stage time: the last stage's training; recipe time: every stage's training"
        " (* = some reused from the stage cache);"
        f" peak mem: {'GPU memory allocated' if cuda() else 'peak RAM (RSS)'} of the last stage"
    ]
    if eval_cols:
        notes.append(
            "eval cells: the run's final model with its 95% interval, then the baselines the"
            " eval also ran on (`on:` in its spec)"
        )
    return notes + _eval_details([(res.variant, evals[res.run_dir]) for res in results])


def _eval_details(evals: list[tuple[str, dict[str, dict[str, Any]]]]) -> list[str]:
    """Under the table, per eval: the metrics its kind declares make its headline
    trustworthy (`EvalKind.details`), and its notes."""
    from ftlab.evals import EVALS

    lines: list[str] = []
    names = sorted({name for _, per_run in evals for name in per_run})
    for name in names:
        parts, notes = [], set()
        kinds = {str((per_run.get(name) or {}).get("kind")) for _, per_run in evals}
        details = [d for k in sorted(kinds) if k in EVALS for d in EVALS.get(k).details]
        for key, label in dict(details).items():
            values = []
            for variant, per_run in evals:
                summary = per_run.get(name) or {}
                notes |= set(summary.get("notes") or [])
                last = (summary.get("targets") or {}).get(summary.get("last"), {})
                m = (last.get("metrics") or {}).get(key)
                if m and m.get("value") is not None and not math.isnan(m["value"]):
                    values.append(f"{variant} {m['value']:.2f}")
            if values:
                parts.append(f"{label}: " + ", ".join(values))
        if parts:
            lines.append(f"{name}: " + "; ".join(parts))
        lines += [f"{name}: {n}" for n in sorted(notes)]
    return lines


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _eval_cell(summary: dict[str, Any] | None, metric: str) -> str:
    if not summary:
        return "-"
    parts: list[str] = []
    for target, res in summary.get("targets", {}).items():
        m = res.get("metrics", {}).get(metric)
        if not m or "@" in target:  # a snapshot during training: `ftlab report` draws them
            continue
        if target == summary.get("last"):
            ci = f" [{m['low']:.3f}, {m['high']:.3f}]" if m.get("low") is not None else ""
            parts.insert(0, f"{m['value']:.3f}{ci}")
        else:
            parts.append(f"{target} {m['value']:.3f}")
    return "; ".join(parts) or "-"


def _method_metric(method: str, summary: dict[str, Any]) -> str:
    """The stage's headline figures, as its method declares them."""
    from ftlab.runner.methods import METHODS

    if method not in METHODS:
        return "-"
    return ", ".join(METHODS.get(method).summary_figures(summary)) or "-"


def rel(path: Path) -> str:
    from ftlab.runner.rundir import cwd_relative

    return cwd_relative(path)
