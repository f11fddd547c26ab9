"""`ftlab cache ls | clear`: what ftlab keeps to reuse, per namespace, with sizes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ftlab.cli.app import RunsDir, app, console, err
from ftlab.reports.units import fmt_mb

cache_app = typer.Typer(
    no_args_is_help=True,
    help="The cache under <output.dir>/cache: finished stages, evals, generated replies, "
    "judge calls, reference log-probs, pruned-stage records.",
)
app.add_typer(cache_app, name="cache")


@cache_app.command("ls")
def ls(runs_dir: RunsDir = Path("runs")) -> None:
    """Entries, size and age of each cache namespace."""
    from ftlab.runner.cache import usage

    found = usage(runs_dir / "cache")
    if not found:
        console.print(f"no cache under {runs_dir / 'cache'}")
        return
    table = Table(title=f"cache: {runs_dir / 'cache'}")
    for col in ("namespace", "entries", "size", "oldest"):
        table.add_column(col, justify="left" if col == "namespace" else "right")
    for u in found:
        age = "-" if u.oldest is None else _age(time.time() - u.oldest)
        table.add_row(u.namespace, f"{u.entries:,}", _size(u.bytes), age)
    console.print(table)
    total = sum(u.bytes for u in found)
    console.print(f"total {_size(total)}; `ftlab cache clear` removes it")


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 2**20 else fmt_mb(n / 2**20)


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 86400 else f"{seconds / 86400:.1f} days"


@cache_app.command("clear")
def clear(
    namespace: Annotated[str, typer.Argument(help="Only this namespace (see `ls`).")] = "",
    older_than: Annotated[
        float, typer.Option("--older-than", help="Only entries older than this many days.")
    ] = 0.0,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Remove cached entries (runs keep their own results; a later run recomputes)."""
    from ftlab.runner.cache import clear as clear_cache
    from ftlab.runner.cache import usage

    known = [u.namespace for u in usage(runs_dir / "cache")]
    if namespace and namespace not in known:
        err.print(
            f"error: no cache namespace '{namespace}' under {runs_dir / 'cache'} "
            f"(there: {', '.join(known) or 'none'})",
            markup=False,
        )
        raise typer.Exit(2)
    files, freed = clear_cache(runs_dir / "cache", namespace=namespace, older_than_days=older_than)
    if not files:
        console.print("nothing to remove")
        return
    console.print(f"removed {files:,} cache file(s), {_size(freed)}")
