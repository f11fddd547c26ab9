"""`ftlab runs`: list the indexed runs; `tag`, `note`, `archive`, `rm` one of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ftlab.cli.app import Format, Output, RunsDir, app, console, err, require_runs_dir
from ftlab.reports.units import fmt_num, fmt_s

runs_app = typer.Typer(
    invoke_without_command=True,
    help="List the indexed runs (no subcommand), or tag, note, archive or remove one.",
)
app.add_typer(runs_app, name="runs")
Run = Annotated[str, typer.Argument(help="Run id, unique prefix, or run directory.")]


@runs_app.callback()
def list_runs_cmd(
    ctx: typer.Context,
    runs_dir: RunsDir = Path("runs"),
    fmt: Format = Output.table,
    experiment: Annotated[str, typer.Option(help="Only this experiment.")] = "",
    archived: Annotated[bool, typer.Option("--archived", help="Archived runs too.")] = False,
) -> None:
    """List indexed runs (reads the DuckDB index; `ftlab sync` refreshes it)."""
    if ctx.invoked_subcommand is not None:
        return
    from ftlab.reports import store

    require_runs_dir(runs_dir)
    rows = store.list_runs(runs_dir, experiment=experiment, archived=archived)
    if fmt == Output.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"Runs in {runs_dir}/ftlab.duckdb")
    columns = ("run_id", "state", "methods", "trainable", "untrained eval", "train loss")
    for col in (*columns, "eval loss", "run time", "tags / note"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run_id"],
            (r["state"] or "-") + (" (archived)" if r["archived"] else ""),
            r["methods"] or "-",
            f"{r['trainable_params']:,}" if r["trainable_params"] else "-",
            fmt_num(r["initial_eval_loss"]),
            fmt_num(r["train_loss"]),
            fmt_num(r["eval_loss"]),
            fmt_s(r["wall_time_s"]),
            " ".join(f"#{t}" for t in (r["tags"] or "").split()) + _quoted(r["note"]),
        )
    console.print(table)
    if not rows:
        console.print(f"no runs indexed in {runs_dir}/ (run `ftlab run SPEC`, or `ftlab sync`)")


def _quoted(note: str | None) -> str:
    return f" “{note}”" if note else ""


def _change(ref: str, runs_dir: Path, **change: object) -> None:
    from ftlab.reports.manage import ManageError, annotate
    from ftlab.runner.rundir import find_run

    try:
        run = find_run(ref, runs_dir)
        notes = annotate(runs_dir, run, **change)  # type: ignore[arg-type]
    except (ManageError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    tags = " ".join(f"#{t}" for t in notes["tags"]) or "no tags"
    state = " (archived)" if notes["archived"] else ""
    console.print(
        f"{run.run_id}: {tags}{_quoted(notes['note'])}{state}", markup=False, highlight=False
    )


@runs_app.command("tag")
def tag_cmd(
    run: Run,
    tags: Annotated[list[str], typer.Argument(help="Tags to add (one word each).")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Add (or --remove) tags: shown by `ftlab runs`, stored in the index (`runs.tags`)."""
    _change(run, runs_dir, **({"remove": tuple(tags)} if remove else {"add": tuple(tags)}))


@runs_app.command("note")
def note_cmd(
    run: Run,
    text: Annotated[str, typer.Argument(help="The note ('' clears it).")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Set the run's note (one line of free text)."""
    _change(run, runs_dir, note=" ".join(text.split()))


@runs_app.command("archive")
def archive_cmd(
    run: Run,
    undo: Annotated[bool, typer.Option("--undo", help="List the run again.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Hide the run from `ftlab runs` and from compare/report's latest-per-variant view
    (`--archived` / `--all` / its id still show it); nothing is deleted."""
    _change(run, runs_dir, archived=not undo)


@runs_app.command("rm")
def rm_cmd(
    run: Run,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Delete the run: its directory, its index rows and the stage-cache entries that
    point at its artifacts. Refused while other runs reuse a stage it trained."""
    from ftlab.reports.manage import ManageError, remove
    from ftlab.runner.rundir import find_run

    try:
        found = find_run(run, runs_dir)
        if not yes and not sys.stdin.isatty():
            raise ManageError(f"not asking without a terminal: ftlab runs rm {run} --yes")
        if not yes and not typer.confirm(f"delete {found.path} and its index rows?"):
            err.print(f"nothing removed; {found.run_id} is kept", markup=False, highlight=False)
            raise typer.Exit(1)
        dropped = remove(runs_dir, found)
    except (ManageError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(
        f"removed {found.run_id} ({dropped} stage-cache "
        f"{'entry' if dropped == 1 else 'entries'} pointed at it; trackers keep their copy)",
        markup=False,
        highlight=False,
    )
