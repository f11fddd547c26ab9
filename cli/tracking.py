"""`ftlab wandb …`, `ftlab mlflow log` and `ftlab sync`: trackers and the DuckDB index."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ftlab.cli.app import RunsDir, app, console, err, require_runs_dir
from ftlab.cli.results import rel

wandb_app = typer.Typer(no_args_is_help=True, help="W&B: log runs again, upload offline runs.")
app.add_typer(wandb_app, name="wandb")


@wandb_app.command("sync")
def wandb_sync(runs_dir: RunsDir = Path("runs")) -> None:
    """Upload the offline W&B runs under the runs directory (needs an API key)."""
    import subprocess

    from ftlab.runner import tracking

    folders = tracking.offline_runs(runs_dir)
    if not folders:
        console.print(f"no offline W&B runs waiting under {runs_dir}/")
        return
    if not tracking.api_key():
        err.print("error: no W&B API key configured: set WANDB_API_KEY or run `wandb login`")
        raise typer.Exit(2)
    failed = 0
    for folder in folders:
        console.print(f"uploading {rel(folder)}")
        done = subprocess.run([sys.executable, "-m", "wandb", "sync", str(folder)], check=False)
        failed += done.returncode != 0
    if failed:
        err.print(f"error: {failed} of {len(folders)} upload(s) failed (see above); run again")
        raise typer.Exit(1)


def _find_run(ref: str, runs_dir: Path) -> Any:
    """A run by id, unambiguous id prefix or directory; anything else exits 2 with why."""
    from ftlab.runner import rundir

    try:
        return rundir.find_run(ref, runs_dir)
    except FileNotFoundError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


RunRef = Annotated[
    str, typer.Argument(metavar="RUN", help="Run id, unambiguous id prefix, or run directory.")
]


@wandb_app.command("show")
def wandb_show(run_ref: RunRef, runs_dir: RunsDir = Path("runs")) -> None:
    """What a run's offline W&B log holds (read from the `.wandb` file, no network)."""
    from ftlab.runner import tracking

    run_dir = _find_run(run_ref, runs_dir).path
    record = (
        json.loads((run_dir / "wandb.json").read_text())
        if (run_dir / "wandb.json").exists()
        else {}
    )
    if not record:
        err.print(f"error: {run_dir} has no W&B run (tracking.wandb.mode was disabled?)")
        raise typer.Exit(2)
    # a resumed run is one W&B run in several offline logs (one per process): read them all
    folders = sorted(run_dir.glob("wandb/offline-run-*")) or [Path(record["folder"])]
    parts = [tracking.read_offline(f) for f in folders if list(f.glob("*.wandb"))]
    if not parts:
        err.print(f"error: no offline W&B log under {run_dir}/wandb yet")
        raise typer.Exit(2)
    logged = parts[-1] | {
        "config": {k: v for p in parts for k, v in p["config"].items()},
        "summary": {k: v for p in parts for k, v in p["summary"].items()},
        "history": [h for p in parts for h in p["history"]],
    }
    resumed = f" in {len(parts)} offline logs (resumed)" if len(parts) > 1 else ""
    console.print(
        f"{record['mode']} W&B run {record['id']} in project {record['project']}: group "
        f"{logged.get('group')}, job_type {logged.get('job_type')}, tags {logged.get('tags')}, "
        f"{len(logged['config'])} config keys, {len(logged['history'])} history rows{resumed}"
    )
    for k, v in sorted(logged["summary"].items()):
        if not k.startswith("_"):
            console.print(f"  {k}: {v}", markup=False, highlight=False)


@wandb_app.command("log")
def wandb_log(
    run_refs: Annotated[
        list[str],
        typer.Argument(metavar="RUN...", help="Run ids, id prefixes or run directories."),
    ],
    mode: Annotated[str, typer.Option(help="auto | online | offline")] = "auto",
    project: Annotated[str, typer.Option(help="W&B project.")] = "ftlab",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Log finished runs to W&B (again): config, curves, eval summary, sample tables."""
    from ftlab.runner import tracking

    for run_dir in [_find_run(ref, runs_dir).path for ref in run_refs]:  # all checked first
        try:
            folder = tracking.log_run(run_dir, project=project, mode=mode)
        except tracking.TrackingError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(2) from None
        console.print(f"{run_dir.name}: logged to W&B ({folder})")


mlflow_app = typer.Typer(no_args_is_help=True, help="MLflow: log runs from their directories.")
app.add_typer(mlflow_app, name="mlflow")


@mlflow_app.command("log")
def mlflow_log(
    run_refs: Annotated[
        list[str],
        typer.Argument(metavar="RUN...", help="Run ids, id prefixes or run directories."),
    ],
    uri: Annotated[
        str, typer.Option(help="Tracking URI (default: sqlite:///<runs>/mlflow.db).")
    ] = "",
    experiment: Annotated[str, typer.Option(help="MLflow experiment (default: ftlab's).")] = "",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Log runs to MLflow (again): the steps it lacks, then params, evals, tables, state."""
    from ftlab.runner import live, mlflow_sink, tracking
    from ftlab.runner.spec.settings import MlflowSpec

    for run in [_find_run(ref, runs_dir) for ref in run_refs]:  # all checked first
        sink = mlflow_sink.start(
            run, tracking.head(run), MlflowSpec(uri=uri, experiment=experiment)
        )
        if sink is None:
            raise typer.Exit(1)  # start() said why
        live.replay(run, [sink])
        where = mlflow_sink.shown(mlflow_sink.store_uri(uri, run.path.parent))
        console.print(f"{run.run_id}: logged to MLflow ({where})", markup=False, highlight=False)


@app.command("dashboard")
def dashboard_cmd(
    ref: Annotated[
        str | None,
        typer.Argument(metavar="EXPERIMENT|SWEEP", help="Default: the latest experiment."),
    ] = None,
    save: Annotated[
        bool, typer.Option("--save", help="Create the workspace and report in W&B.")
    ] = False,
    entity: Annotated[
        str, typer.Option(help="W&B entity (default: WANDB_ENTITY, else your default one).")
    ] = "",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """A W&B workspace and report for comparing an experiment's or a sweep's runs: grouped
    by variant, the compare baseline as baseline run, eval / loss / alignment / cost (and
    sweep) sections, the compare table in the report. Written as a definition under
    <runs>/dashboards/; --save creates them in W&B (needs a key and a reachable server)."""
    import os

    from ftlab.cli.reports import COSTS, _markdown, records
    from ftlab.reports import dashboard
    from ftlab.reports.compare import CompareError, compare
    from ftlab.runner import tracking

    try:
        cmp = compare(runs_dir, [ref] if ref else None)
    except CompareError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    mode, why = tracking.resolve_mode("auto") if save else ("offline", "")
    entity = entity or os.environ.get("WANDB_ENTITY", "")
    if mode == "online" and not entity:
        import wandb

        entity = wandb.Api(timeout=20).default_entity or ""
    baseline = tracking.wandb_id(cmp.baseline.run_ids[0]) if cmp.baseline else None
    table = _markdown(cmp, list(COSTS))
    dash = dashboard.build(runs_dir, cmp, table, baseline_run=baseline, entity=entity)
    path = runs_dir / "dashboards" / f"{re.sub(r'[^A-Za-z0-9_.-]', '-', dash.group)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    again = f"ftlab dashboard {ref or dash.group} --save" + (
        f" --dir {runs_dir}" if runs_dir != Path("runs") else ""
    )
    path.write_text(json.dumps(dash.definition() | {"save_with": again}, indent=2, default=str))

    console.print(f"W&B dashboard for {dash.group} (project {dash.project}):", markup=False)
    for section, titles in dash.sections.items():
        console.print(f"  {section}: {', '.join(titles)}", markup=False, highlight=False)
    console.print(f"definition written to {rel(path)}", markup=False, highlight=False)
    _log_table(
        path.with_suffix(""), records(cmp, list(COSTS)), dash, online=save and mode == "online"
    )
    if not save:
        console.print(f"`{again}` creates it in W&B", markup=False, highlight=False)
        return
    if mode != "online":
        err.print(
            f"not saved: {why.removeprefix('W&B: ').split(',')[0]}; set WANDB_API_KEY (and "
            f"WANDB_BASE_URL for a self-hosted server), then: {again}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1)
    dash.workspace.save()
    dash.report.save()
    console.print(f"workspace: {dash.workspace.url}\nreport: {dash.report.url}", markup=False)


def _log_table(folder: Path, rows: list[dict[str, Any]], dash: Any, *, online: bool) -> None:
    """The compare rows as a W&B Table in the group's `comparison` run, and say where."""
    from ftlab.runner import tracking

    mode = "online" if online else "offline"
    table_run = tracking.log_comparison(
        folder, rows, project=dash.project, group=dash.group, mode=mode
    )
    console.print(
        f"comparison table: W&B run '{dash.group} comparison' (key "
        f"{tracking.comparison_key(dash.group)})"
        + ("" if online else f", offline in {rel(table_run)}; `ftlab wandb sync` uploads it"),
        markup=False,
        highlight=False,
    )


@app.command()
def sync(runs_dir: RunsDir = Path("runs")) -> None:
    """Rebuild/update the DuckDB index from the run directories (idempotent)."""
    from ftlab.reports import store

    require_runs_dir(runs_dir)
    n, removed = store.sync(runs_dir)
    console.print(
        f"indexed {n} run(s), removed {removed} stale row set(s) in {runs_dir / store.DB_NAME}"
    )
