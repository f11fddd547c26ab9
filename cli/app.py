"""The `ftlab` command line: one layer above runner, evals, sweeps and reports (none of
them imports it). `app` and what every command shares: consoles, option types, errors.
Heavy imports happen inside commands so `--help` is instant."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ftlab: declarative LLM fine-tuning experiments.",
)
# markup=False: names, paths and values from specs and data are printed as they are
# ("[red]x" is not a style, "[/bold]" no crash); ftlab's own styles use Text and style=.
console = Console(width=None if sys.stdout.isatty() else 260, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Overrides like stages.sft.train.learning_rate=1e-4 (YAML-typed; list items by "
        "index or by name).",
        show_default=False,
    ),
]
RunsDir = Annotated[Path, typer.Option("--dir", help="Runs directory (output.dir).")]


class Output(StrEnum):
    """`--format` of a listing (typer refuses anything else, naming the choices)."""

    table = "table"
    json = "json"


class TableOutput(StrEnum):
    """`--format` of a comparison."""

    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


Format = Annotated[Output, typer.Option("--format", help="How to print it.")]


def fail(exc: BaseException) -> None:
    """Print a user-facing error and exit with its code (2 = bad input)."""
    from ftlab.evals.base import EvalError
    from ftlab.runner.data import DataError
    from ftlab.runner.models import ModelError
    from ftlab.runner.registry import UnknownNameError
    from ftlab.runner.spec.errors import SpecError

    if isinstance(exc, SpecError):
        err.print(exc.format(), markup=False, highlight=False)
        raise typer.Exit(2)
    from ftlab.sweeps.study import SweepError, SweepFailed

    if isinstance(exc, SweepFailed):
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1)
    bad_input = (DataError, ModelError, UnknownNameError, FileNotFoundError, EvalError, SweepError)
    if isinstance(exc, bad_input):
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2)
    raise exc


def require_runs_dir(runs_dir: Path) -> None:
    """Exit 2 saying so when the runs directory is not here (a reader creates nothing)."""
    if not runs_dir.is_dir():
        err.print(
            f"error: no runs directory {runs_dir}/ here: run from the directory you ran "
            "`ftlab run` in, or pass --dir",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
