"""`ftlab compare` and `ftlab report`."""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ftlab.cli.app import RunsDir, TableOutput, app, console, err
from ftlab.reports.units import fmt_mb, fmt_num, fmt_s
from ftlab.runner.registry import did_you_mean

AllRuns = Annotated[
    bool,
    typer.Option(
        "--all",
        help="Every run of the experiments named, not only the latest per variant and seed.",
    ),
]
Refs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Run ids (or unique prefixes), experiment names or sweep names; none = the "
        "latest experiment.",
        show_default=False,
    ),
]


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


@app.command("compare")
def compare_cmd(
    refs: Refs = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="eval.metric (or just its metric or eval name, when unique) or eval_loss "
            "(repeatable); default: "
            "each eval's headline metric and eval_loss.",
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Run id / row label to compare with (default: first).")
    ] = None,
    fmt: Annotated[
        TableOutput, typer.Option("--format", help="How to print it.")
    ] = TableOutput.table,
    ci: Annotated[
        str, typer.Option(help="stored (each eval's own) | percentile | bca (from the items)")
    ] = "stored",
    all_runs: AllRuns = False,
    each_seed: Annotated[
        bool,
        typer.Option("--each-seed", help="A row per training seed instead of their mean ± sd."),
    ] = False,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "--columns",
            "-c",
            help="Only these spec-key and cost columns (repeatable or comma-separated; a "
            "dotted key, its last parts, or a glob: lora_r, train.*, 'recipe time').",
        ),
    ] = None,
    hide: Annotated[
        list[str] | None,
        typer.Option(help="Leave out these columns (spec keys, costs or metrics; as --columns)."),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Name rows by these spec keys' values instead of their variant "
            "(e.g. --label r,learning_rate gives 'r=8 learning_rate=0.001').",
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Compare runs: each metric with its 95% interval, the difference from a baseline with
    a paired test (McNemar / sign / paired bootstrap, Holm-corrected), and cost."""
    from ftlab.reports.compare import CompareError, compare

    try:
        cmp = compare(
            runs_dir,
            refs,
            metrics=metric,
            baseline=baseline,
            ci=ci,
            all_runs=all_runs,
            each_seed=each_seed,
        )
        relabel(cmp, _split(label))
        costs = choose_columns(cmp, _split(columns), _split(hide))
    except CompareError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    recs = records(cmp, costs)
    if fmt == TableOutput.json:
        print(json.dumps(recs, indent=2, default=str))
    elif fmt == TableOutput.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in recs for k in r)))
        writer.writeheader()
        writer.writerows(recs)
        print(buf.getvalue(), end="")
    elif fmt == TableOutput.markdown:
        print(_markdown(cmp, costs))
    else:
        console.print(_table(cmp, costs))
        for note in _notes(cmp):
            console.print(note, markup=False, highlight=False)


def _cell_text(cmp: Any, row: Any, metric: str) -> tuple[str, str]:
    """(value with interval, delta vs baseline with p and marker)."""
    cell = row.cells.get(metric)
    if cell is None:
        return "-", ""
    value = fmt_num(cell.value, ".4g")
    if cell.sd is not None:
        value += f" ±{fmt_num(cell.sd, '.2g')} sd"
    elif cell.low is not None:
        value += f" [{fmt_num(cell.low, '.3g')},{fmt_num(cell.high, '.3g')}]"
    d = cell.diff
    if d is None:
        return value, ""
    delta = f"{d.delta:+.3g}"
    if d.test:
        delta += f" {_p(cell.p_adjusted)}"
    if cell.significant:
        better = (d.delta > 0) == cmp.higher_is_better[metric]
        delta += " ▲*" if better else " ▼*"
    if cell.seed_noise:
        delta += " ~seed"
    return value, delta


COSTS = {
    "recipe time": "recipe_time_s",
    "peak mem": "peak_memory_mb",
    "trainable": "trainable_params",
}


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for text in values or [] for v in text.split(",") if v.strip()]


def _matches(key: str, pattern: str) -> bool:
    """A dotted key matches its full name, any dotted suffix of it, or a glob."""
    p = pattern.replace("_", " ") if pattern.replace("_", " ") in COSTS else pattern
    return (
        key == p
        or key.endswith("." + p)
        or any(fnmatch.fnmatchcase(key, glob) for glob in (p, f"*.{p}"))
    )


def relabel(cmp: Any, keys: list[str]) -> None:
    """Name each row by the values of spec keys that differ between rows (`--label`)."""
    from ftlab.reports.compare import CompareError

    params = list(dict.fromkeys(k for r in cmp.rows for k in r.params))
    for key in keys:
        if not any(_matches(k, key) for k in params):
            raise CompareError(
                f"--label {key}: not a spec key that differs between these rows (those are: "
                f"{', '.join(params) or 'none'})"
            )
    chosen = [k for k in params if any(_matches(k, key) for key in keys)]
    last = [k.rsplit(".", 1)[-1] for k in chosen]
    names = [
        n if last.count(n) == 1 else _short(k, chosen) for k, n in zip(chosen, last, strict=True)
    ]
    for row in cmp.rows if keys else []:
        seeds = f" ×{len(row.run_ids)} seeds" if len(row.run_ids) > 1 else ""
        values = [f"{n}={_param(row.params.get(k))}" for k, n in zip(chosen, names, strict=True)]
        row.label = " ".join(values) + seeds
    clash = {r.label for r in cmp.rows if sum(o.label == r.label for o in cmp.rows) > 1}
    for row in cmp.rows if keys else []:  # rows alike in these keys keep apart by run id
        if row.label in clash:
            row.label += f" ·{row.run_ids[0][-4:]}"


def choose_columns(cmp: Any, columns: list[str], hide: list[str]) -> list[str]:
    """Apply `--columns` / `--hide` to the comparison's spec-key columns and metrics (in
    place); return the cost columns to show. A pattern that matches nothing is an error
    naming the columns there are."""
    from ftlab.reports.compare import CompareError

    params = list(dict.fromkeys(k for r in cmp.rows for k in r.params))
    every = [*params, *COSTS, *cmp.metrics]
    for pattern in [*columns, *hide]:
        if not any(_matches(k, pattern) for k in every):
            hint = did_you_mean(pattern, [k.rsplit(".", 1)[-1] for k in every])
            raise CompareError(
                f"no column {pattern!r} (spec keys match by their last parts too); the "
                f"columns are: {', '.join(every) or '(none)'}.{hint}"
            )

    def shown(key: str, only: bool) -> bool:
        picked = not (only and columns) or any(_matches(key, c) for c in columns)
        return picked and not any(_matches(key, h) for h in hide)

    for row in cmp.rows:
        row.params = {k: v for k, v in row.params.items() if shown(k, True)}
    cmp.metrics = [m for m in cmp.metrics if shown(m, False)]
    return [c for c in COSTS if shown(c, True)]


def _table(cmp: Any, costs: list[str]) -> Table:
    title = "Comparison" + (f" (baseline: {cmp.baseline.label})" if cmp.baseline else "")
    table = Table(title=title)
    table.add_column("run", no_wrap=True)
    table.add_column("methods", no_wrap=True)
    params = list(dict.fromkeys(k for r in cmp.rows for k in r.params))
    for k in params:
        table.add_column(_short(k, params))
    for m in cmp.metrics:
        arrow = "↑" if cmp.higher_is_better[m] else "↓"
        head, _, rest = m.partition(".")
        table.add_column(f"{head}\n{rest} {arrow}" if rest else f"{m} {arrow}", no_wrap=True)
        if cmp.baseline is not None:
            table.add_column("Δ vs baseline", no_wrap=True)
    for col in costs:
        table.add_column(col, justify="right")
    for row in cmp.rows:
        table.add_row(*_row_cells(cmp, row, params), *_costs(row, costs))
    return table


def _costs(row: Any, costs: list[str]) -> list[str]:
    shown = {
        "recipe time": fmt_s(row.recipe_time_s),
        "peak mem": fmt_mb(row.peak_memory_mb),
        "trainable": f"{row.trainable_params:,}" if row.trainable_params else "-",
    }
    return [shown[c] for c in costs]


def _row_cells(cmp: Any, row: Any, params: list[str]) -> list[str]:
    """Run label, methods, the differing params, and each metric with its Δ."""
    cells = [row.label + (" (baseline)" if row.baseline else ""), row.methods]
    cells += [_param(row.params.get(k)) for k in params]
    for m in cmp.metrics:
        value, delta = _cell_text(cmp, row, m)
        cells.append(value)
        if cmp.baseline is not None:
            cells.append(delta)
    return cells


def _notes(cmp: Any) -> list[str]:
    out = []
    if cmp.baseline is not None:
        out.append(
            "Δ = run − baseline on the same items; p: McNemar (0/1 scores), sign test (judge "
            "outcomes) or paired bootstrap (two-level, seeds then items, for rows with several "
            "seeds), Holm-corrected over the runs compared; "
            "* = p < 0.05, ▲ better / ▼ worse; ~seed = within the spread across seeds."
        )
    out.append(
        "recipe time = the summed durations of the training stages of the row's model "
        "(a stage reused from the cache counts what it took when trained)."
    )
    return out + cmp.notes


def _short(key: str, keys: list[str] | None = None) -> str:
    """The shortest dotted suffix of `key` that no other key in `keys` ends with."""
    parts = key.split(".")
    others = [k for k in (keys or []) if k != key]
    for n in range(min(2, len(parts)), len(parts) + 1):
        tail = ".".join(parts[-n:])
        if not any(k == tail or k.endswith("." + tail) for k in others):
            return tail
    return key


def _param(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def _markdown(cmp: Any, costs: list[str]) -> str:
    params = list(dict.fromkeys(k for r in cmp.rows for k in r.params))
    head = ["run", "methods", *[_short(k, params) for k in params]]
    for m in cmp.metrics:
        head.append(m)
        if cmp.baseline is not None:
            head.append(f"Δ {m}")
    head += costs
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in cmp.rows:
        cells = _row_cells(cmp, row, params) + _costs(row, costs)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([*lines, "", *_notes(cmp)])


@app.command("report")
def report_cmd(
    refs: Refs = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="HTML file (default <dir>/reports/…).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Run id / row label to compare with (default: first).")
    ] = None,
    all_runs: AllRuns = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write one self-contained HTML report: leaderboard with intervals and paired tests,
    metric vs cost (Pareto front), loss and alignment curves, sweep history and parameter
    importance, and a per-sample explorer."""
    from ftlab.reports import html
    from ftlab.reports.compare import CompareError

    try:
        path = html.write(runs_dir, refs, out, baseline=baseline, all_runs=all_runs)
    except CompareError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"report: {path} ({path.stat().st_size / 1024:.0f} KB, opens offline)")
    _report_to_mlflow(runs_dir, refs or [], path, all_runs=all_runs)


def _report_to_mlflow(runs_dir: Path, refs: list[str], page: Path, *, all_runs: bool) -> None:
    """The report as an artifact (`report/<file>.html`) of every reported run that was
    logged to MLflow (live or `ftlab mlflow log`): open it from any of them in MLflow."""
    from ftlab.reports.selection import select_runs
    from ftlab.runner import mlflow_sink
    from ftlab.runner.rundir import RunDir

    attached, notes = [], set()
    for row in select_runs(runs_dir, refs, all_runs=all_runs):
        run = RunDir(runs_dir / row["run_id"])
        for uri in mlflow_sink.logged_to(run):
            if note := mlflow_sink.attach(run, uri, [page], "report"):
                notes.add(note)
            else:
                attached.append(run.run_id)
    if attached:
        console.print(f"  logged to MLflow as report/{page.name} of {len(attached)} run(s)")
    for note in sorted(notes):
        console.print(f"  note: not logged to MLflow: {note}", markup=False, highlight=False)


def records(cmp: Any, costs: list[str]) -> list[dict[str, Any]]:
    """One flat dict per row, for csv / json / markdown."""
    out = []
    for row in cmp.rows:
        rec: dict[str, Any] = {
            "run": row.label,
            "run_ids": " ".join(row.run_ids),
            "methods": row.methods,
            **{f"param:{k}": v for k, v in row.params.items()},
        }
        for metric in cmp.metrics:
            cell = row.cells.get(metric)
            rec[metric] = cell.value if cell else None
            rec[f"{metric}:low"] = cell.low if cell else None
            rec[f"{metric}:high"] = cell.high if cell else None
            if cell and cell.sd is not None:
                rec[f"{metric}:seed_sd"] = cell.sd
            if cmp.baseline is not None and row is not cmp.baseline:
                d = cell.diff if cell else None
                rec[f"{metric}:delta"] = d.delta if d else None
                rec[f"{metric}:p"] = cell.p_adjusted if cell else None
                rec[f"{metric}:test"] = d.test if d else ""
                rec[f"{metric}:significant"] = bool(cell and cell.significant)
        rec |= {COSTS[c]: getattr(row, COSTS[c]) for c in costs}
        rec["baseline"] = row.baseline
        out.append(rec)
    return out
