"""The `ftlab` command line. Heavy imports happen inside commands so `--help` is instant."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftlab.reports import cli as reports_cli
from ftlab.reports.units import fmt_mb, fmt_s

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ftlab: declarative LLM fine-tuning experiments.",
)
# markup=False: names, paths and values from specs and data are printed as they are
# ("[red]x" is not a style, "[/bold]" no crash); ftlab's own styles use Text and style=.
console = Console(width=None if sys.stdout.isatty() else 200, markup=False)
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
Format = Annotated[str, typer.Option("--format", help="table | json")]


def _fail(exc: BaseException) -> None:
    """Print a user-facing error and exit with its code (2 = bad input)."""
    from ftlab.evals.base import EvalError
    from ftlab.runner.data import DataError
    from ftlab.runner.models import ModelError
    from ftlab.runner.registry import UnknownNameError
    from ftlab.runner.spec.errors import SpecError

    if isinstance(exc, SpecError):
        err.print(exc.format(), markup=False, highlight=False)
        raise typer.Exit(2)
    from ftlab.sweeps.cli import SweepError, SweepFailed

    if isinstance(exc, SweepFailed):
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1)
    bad_input = (DataError, ModelError, UnknownNameError, FileNotFoundError, EvalError, SweepError)
    if isinstance(exc, bad_input):
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2)
    raise exc


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Spec files.")]) -> None:
    """Check spec files (variants included) without loading a model. Exit 2 if any is bad."""
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import expand_runs

    bad = 0
    for file in files:
        try:
            runs = expand_runs(file)
        except SpecError as exc:
            bad += 1
            err.print(exc.format(), markup=False, highlight=False)
            continue
        names = ", ".join(name for name, _ in runs)
        console.print(Text.assemble(("ok", "green"), f" {file}: {len(runs)} run(s): {names}"))
    if bad:
        raise typer.Exit(2)


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema, every method's and eval kind's params included (for
    editor completion and documentation)."""
    from ftlab.runner.spec.jsonschema import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def methods(
    name: Annotated[str, typer.Argument(help="A method: print its params.")] = "",
) -> None:
    """List the registered training methods, or one method's params."""
    from ftlab.runner.methods import METHODS

    if name:
        _describe(METHODS, name, lambda m: f"data: {', '.join(m.data_formats)}")
        return
    for name, m in METHODS.items():
        console.print(f"{name:15} data: {', '.join(m.data_formats)}")


@app.command("evals")
def evals_cmd(
    name: Annotated[str, typer.Argument(help="An eval kind: print its params.")] = "",
) -> None:
    """List the registered eval kinds, or one kind's params."""
    from ftlab.evals import EVALS

    def line(kind: Any) -> str:
        return f"data: {', '.join(kind.data_formats) or 'none'}   headline: {kind.headline}"

    if name:
        _describe(EVALS, name, line)
        return
    for name, kind in EVALS.items():
        console.print(f"{name:15} {line(kind)}")


def _describe(registry: Any, name: str, line: Any) -> None:
    """A plugin's params as `params.<key>: type = default  description`."""
    try:
        plugin = registry.get(name)
    except KeyError as exc:
        _fail(exc)
    console.print(f"{name}  {line(plugin)}", markup=False, highlight=False)
    fields = plugin.params_model.model_fields
    if not fields:
        console.print("  (no params)")
    for key, f in fields.items():
        default = (
            "required" if f.is_required() else f"= {f.get_default(call_default_factory=True)!r}"
        )
        kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        console.print(f"  params.{f.alias or key}: {kind} {default}", markup=False, highlight=False)
        if f.description:
            console.print(f"      {f.description}", markup=False, highlight=False)


@app.command("eval")
def eval_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or directory.")],
    evals_file: Annotated[
        Path | None,
        typer.Option(
            "--evals", help="YAML with an evals: list (and optional data:) to run instead."
        ),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Run a finished run's evals again (or those of --evals FILE) without retraining."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import read_yaml, validate, with_evals

    try:
        rd = execute.find_run(run_ref, runs_dir)
        spec_file = rd.path / "spec.yaml"
        spec_obj = (
            with_evals(spec_file, evals_file) if evals_file else validate(read_yaml(spec_file))
        )
        if not spec_obj.evals:
            err.print(f"error: run {rd.run_id} declares no evals; give --evals FILE")
            raise typer.Exit(2)
        spec_obj.output.dir = str(rd.path.parent)
        execute.evaluate_run(rd, spec_obj)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    _print_results(
        [
            execute.RunResult(
                rd.path,
                rd.info().get("variant", ""),
                rd.status().get("state", ""),
                {name: rd.stage(name) for name in rd.stage_names()},
            )
        ]
    )


@app.command()
def run(
    spec: Annotated[Path | None, typer.Argument(help="Experiment spec (YAML).")] = None,
    overrides: Overrides = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant", "-v", help="Run only these variants (repeatable; 'base' = as written)."
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option("--resume", help="Continue an interrupted run (run id or directory)."),
    ] = None,
    processes: Annotated[
        int | None, typer.Option(help="Processes (GPUs) per node: resources.processes.")
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes: resources.nodes.")] = None,
    node_rank: Annotated[int | None, typer.Option(help="This node's rank.")] = None,
    main_address: Annotated[
        str | None, typer.Option(help="host:port of node 0 (multi-node).")
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="ddp | fsdp | deepspeed.")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Train every run of a spec (the spec as written, plus each variant)."""
    from ftlab.runner import execute
    from ftlab.runner.rundir import RunBusy

    flags = {
        "processes": processes,
        "nodes": nodes,
        "node_rank": node_rank,
        "main_address": main_address,
        "strategy": strategy,
    }
    resources = [f"resources.{k}={v}" for k, v in flags.items() if v is not None]
    try:
        planned = (
            _resumed(resume, runs_dir, resources)
            if resume
            else _new_runs(spec, [*(overrides or []), *resources], variant)
        )
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - bad input: reported without a traceback
        _fail(exc)
    results = []
    for make_run, spec_obj, is_resume in planned:
        rd = make_run()  # created when its turn comes: an interrupt leaves no empty runs
        console.rule(Text.assemble((rd.run_id, "bold"), f"  →  {execute.cwd_relative(rd.path)}"))
        try:
            results.append(execute.execute(rd, spec_obj, resume=is_resume))
        except RunBusy as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _print_results(results)
            err.print(_interrupted(rd), markup=False, highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the run directory keeps the traceback
            _print_results(results)
            err.print(
                f"error: run {rd.run_id} failed: {type(exc).__name__}: {exc}\n"
                f"  traceback: {execute.cwd_relative(rd.path / 'status.json')}\n"
                f"  continue it with: ftlab run --resume {rd.run_id}",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1) from None
    _print_results(results)


def _interrupted(rd: Any) -> str:
    """What Ctrl-C left: the resume command, and where a resume would continue from."""
    from ftlab.runner.rundir import latest_checkpoint

    stage = rd.status().get("stage") or ""
    where = ""
    if stage:
        ckpt = latest_checkpoint(rd.stage_dir(stage))
        where = (
            f" (stage {stage} continues from {ckpt.name})"
            if ckpt
            else f" (stage {stage} had no checkpoint yet: it starts over)"
        )
    return f"interrupted — continue with `ftlab run --resume {rd.run_id}`{where}"


def _resumed(resume: str, runs_dir: Path, resources: list[str]) -> list[tuple[Any, Any, bool]]:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import Loc, apply_override, parse_override, read_yaml, validate

    rd = execute.find_run(resume, runs_dir)
    status = rd.status()
    if status.get("state") == "completed":
        console.print(
            f"run {rd.run_id} already completed; nothing to resume "
            f"(`ftlab eval {rd.run_id}` re-runs its evals, `ftlab run SPEC` trains anew)"
        )
        raise typer.Exit(0)
    if status.get("state") == "running":
        err.print(f"error: run {rd.run_id} is still running (pid {status.get('pid')})")
        raise typer.Exit(1)
    raw = read_yaml(rd.path / "spec.yaml")
    for text in resources:  # e.g. resume a multi-process run on fewer processes
        key, value = parse_override(text)
        apply_override(raw, key, value, Loc(f"<option {text}>", 0))
    spec_obj = validate(raw)
    spec_obj.output.dir = str(rd.path.parent)
    console.print(f"resuming {rd.run_id} (was {status.get('state')})")
    return [(lambda: rd, spec_obj, True)]


def _new_runs(
    spec: Path | None, overrides: list[str] | None, variant: list[str] | None
) -> list[tuple[Any, Any, bool]]:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    if spec is None:
        err.print("error: give a spec file (ftlab run experiments/quickstart.yaml) or --resume RUN")
        raise typer.Exit(2)
    runs = expand_runs(spec, overrides or [], only=variant)
    for _, spec_obj in runs:  # bad data or model: fail before anything is written
        execute.preflight(spec_obj, spec_dir=spec.resolve().parent)

    def creator(name: str, spec_obj: Any) -> Any:
        return lambda: execute.create_run(
            spec_obj, variant=name, spec_file=spec, overrides=list(overrides or [])
        )

    return [(creator(n, s), s, False) for n, s in runs]


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int) and spec:
        return format(value, spec)
    return str(value)


def _print_results(results: list[Any]) -> None:
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
        *(f"{name} {metric}" for name, metric in eval_cols),
        "stage time",
        "recipe time",
        "peak mem",
    ]
    if not any(res.stages for res in results):
        return  # nothing finished: no table, and no legend for one
    rows: list[list[str]] = []
    for res in results:
        stages = list(res.stages.values())
        if not stages:
            continue
        last = stages[-1].get("summary", {})
        before, after = last.get("initial_eval_loss"), last.get("eval_loss")
        recipe = sum((st.get("summary", {}).get("wall_time_s") or 0) for st in stages)
        reused = [st["stage"] for st in stages if st.get("reused_from")]
        rows.append(
            [
                res.variant,
                " → ".join(st.get("method", "?") for st in stages),
                f"{last.get('trainable_params', 0):,}",
                f"{_fmt(before)} → {_fmt(after)}" if before is not None else _fmt(after),
                _method_metric(str(stages[-1].get("method")), last),
                *(_eval_cell(evals[res.run_dir].get(name), metric) for name, metric in eval_cols),
                fmt_s(last.get("wall_time_s")),
                fmt_s(recipe) + ("*" if reused else ""),
                fmt_mb(last.get("peak_memory_mb")),
            ]
        )
    keep = [i for i in range(len(columns)) if any(r[i] != "-" for r in rows)]  # no empty columns
    for i in keep:
        right = columns[i] in ("trainable", "eval loss", "stage time", "recipe time", "peak mem")
        table.add_column(columns[i], justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    notes = [
        "eval loss: the last stage's validation loss before → after training;"
        " stage time: the last stage's training; recipe time: every stage's training"
        " (* = some reused from the stage cache);"
        f" peak mem: {'GPU memory allocated' if _cuda() else 'peak RAM (RSS)'} of the last stage"
    ]
    if eval_cols:
        notes.append(
            "eval cells: the run's final model with its 95% interval, then the baselines the"
            " eval also ran on (`on:` in its spec)"
        )
    notes += _eval_details([(res.variant, evals[res.run_dir]) for res in results])
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False)
    for res in results:
        console.print(f"  {res.variant}: {_rel(res.run_dir)}  [{res.state}]")


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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _eval_cell(summary: dict[str, Any] | None, metric: str) -> str:
    if not summary:
        return "-"
    parts: list[str] = []
    for target, res in summary.get("targets", {}).items():
        m = res.get("metrics", {}).get(metric)
        if not m:
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


def _rel(path: Path) -> str:
    from ftlab.runner.execute import cwd_relative

    return cwd_relative(path)


@app.command(
    context_settings={"allow_extra_args": False},
    help="Optuna sweep over the spec's search: block.\n\n"
    "ftlab sweep FILE [OVERRIDES] [--workers N] — run (or resume) the study;\n"
    "ftlab sweep status STUDY|FILE — trials, best so far, dashboard command;\n"
    "ftlab sweep best STUDY|FILE -o best.yaml — the best trial as a runnable spec;\n"
    "ftlab sweep worker STUDY --storage URL — attach a worker (another machine).",
)
def sweep(
    args: Annotated[
        list[str], typer.Argument(help="FILE [OVERRIDES], or status|best|worker STUDY.")
    ],
    storage: Annotated[str, typer.Option(help="Optuna storage URL (default: the spec's).")] = "",
    workers: Annotated[int, typer.Option(help="Trials in parallel on this machine.")] = 1,
    gpus_per_trial: Annotated[int, typer.Option(help="GPUs pinned to each worker.")] = 1,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="best: file to write.")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Optuna sweep (see the help above)."""
    from ftlab.sweeps import cli as sweep_cli

    try:
        if args[0] == "status":
            sweep_cli.status(args[1:], storage=storage, runs_dir=runs_dir, console=console)
        elif args[0] == "best":
            sweep_cli.best(args[1:], storage=storage, runs_dir=runs_dir, out=out, console=console)
        elif args[0] == "worker":
            sweep_cli.worker(args[1:], storage=storage, runs_dir=runs_dir)
        else:
            sweep_cli.start(
                Path(args[0]),
                args[1:],
                workers=workers,
                gpus_per_trial=gpus_per_trial,
                console=console,
            )
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML).")],
    overrides: Overrides = None,
    gpu_memory: Annotated[
        float | None,
        typer.Option(help="GiB per GPU to check against (default: this machine's GPU, if any)."),
    ] = None,
) -> None:
    """Per run and stage: parameters, tokens per epoch, estimated peak memory, and the
    per-GPU share under resources.strategy (warns when a stage will not fit)."""
    from ftlab.runner.plan import plan_runs, render

    try:
        plans = plan_runs(spec, overrides or [])
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    if gpu_memory is None and _cuda():
        import torch

        gpu_memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    render(plans, console, gpu_memory)


@app.command("export")
def export_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or directory.")],
    out: Annotated[Path, typer.Argument(help="New folder to write.")],
    stage: Annotated[str | None, typer.Option(help="Stage to export (default: last).")] = None,
    merge: Annotated[bool, typer.Option(help="Merge an adapter into its base weights.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write a stage's model as a standalone folder transformers (or peft) loads."""
    from ftlab.runner import execute
    from ftlab.runner.export import ExportError, export

    try:
        path = export(execute.find_run(run_ref, runs_dir), out, stage=stage, merge=merge)
    except (ExportError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"wrote {path}")


@app.command("merge-adapters")
def merge_adapters_cmd(
    out: Annotated[Path, typer.Argument(help="New folder to write.")],
    adapter: Annotated[
        list[str], typer.Option(help="RUN[:STAGE]=WEIGHT, repeatable (LoRA adapters on one base).")
    ],
    combination: Annotated[
        str,
        typer.Option(
            help="linear | cat | svd | ties | ties_svd | dare_linear | dare_ties | magnitude_prune"
        ),
    ] = "linear",
    density: Annotated[float, typer.Option(help="Kept fraction for ties/dare.")] = 0.5,
    merge: Annotated[bool, typer.Option(help="Write merged full weights.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Combine several LoRA adapters (peft add_weighted_adapter) into one."""
    from ftlab.runner import execute
    from ftlab.runner.export import ExportError, merge_adapters, stage_artifact

    try:
        adapters = []
        for item in adapter:
            ref, sep, weight = item.rpartition("=")
            if not sep:
                raise ExportError(f"--adapter {item}: expected RUN[:STAGE]=WEIGHT")
            run_ref, _, stage = ref.partition(":")
            _, art = stage_artifact(execute.find_run(run_ref, runs_dir), stage or None)
            adapters.append((Path(art["path"]), float(weight)))
        path = merge_adapters(adapters, out, combination=combination, density=density, merge=merge)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"wrote {path}")


@app.command("runs")
def list_runs_cmd(
    runs_dir: RunsDir = Path("runs"),
    fmt: Format = "table",
    experiment: Annotated[str, typer.Option(help="Only this experiment.")] = "",
) -> None:
    """List indexed runs (reads the DuckDB index; `ftlab sync` refreshes it)."""
    from ftlab.reports import store

    rows = store.list_runs(runs_dir, experiment=experiment)
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"Runs in {runs_dir}/ftlab.duckdb")
    for col in (
        "run_id",
        "state",
        "methods",
        "trainable",
        "untrained eval",
        "train loss",
        "eval loss",
        "run time",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run_id"],
            r["state"] or "-",
            r["methods"] or "-",
            f"{r['trainable_params']:,}" if r["trainable_params"] else "-",
            _fmt(r["initial_eval_loss"]),
            _fmt(r["train_loss"]),
            _fmt(r["eval_loss"]),
            fmt_s(r["wall_time_s"]),
        )
    console.print(table)
    if not rows:
        console.print(f"no runs indexed in {runs_dir}/ (run `ftlab run SPEC`, or `ftlab sync`)")


app.command("compare")(reports_cli.compare_cmd)
app.command("report")(reports_cli.report_cmd)

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
        console.print(f"uploading {_rel(folder)}")
        done = subprocess.run([sys.executable, "-m", "wandb", "sync", str(folder)], check=False)
        failed += done.returncode != 0
    if failed:
        err.print(f"error: {failed} of {len(folders)} upload(s) failed (see above); run again")
        raise typer.Exit(1)


def _find_run(ref: str, runs_dir: Path) -> Any:
    """A run by id, unambiguous id prefix or directory; anything else exits 2 with why."""
    from ftlab.runner import execute

    try:
        return execute.find_run(ref, runs_dir)
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
    logged = tracking.read_offline(Path(record["folder"]))
    console.print(
        f"{record['mode']} W&B run {record['id']} in project {record['project']}: group "
        f"{logged.get('group')}, job_type {logged.get('job_type')}, tags {logged.get('tags')}, "
        f"{len(logged['config'])} config keys, {len(logged['history'])} history rows"
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


@app.command()
def sync(runs_dir: RunsDir = Path("runs")) -> None:
    """Rebuild/update the DuckDB index from the run directories (idempotent)."""
    from ftlab.reports import store

    n, removed = store.sync(runs_dir)
    console.print(
        f"indexed {n} run(s), removed {removed} stale row set(s) in {runs_dir / store.DB_NAME}"
    )


def _quiet_libraries() -> None:
    """Keep the terminal for ftlab's own output: one progress bar, then the summary."""
    import logging
    import os
    import warnings

    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel
    # ("kernels-community") is missing; ftlab never downloads it, so the warning is noise.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gemv_4bit: an autograd kernel.*")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # hub/transformers bars (shard writing, downloads); the training bar is tqdm's own
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # cpo/simpo/orpo live in trl.experimental, which warns on import; ftlab chose them
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the run ends `interrupted`, resumable, as with Ctrl-C


def main() -> None:
    import signal

    from ftlab.reports.store import StoreBusy

    signal.signal(signal.SIGTERM, _terminate)  # a scheduler's or `kill`'s stop
    _quiet_libraries()
    try:
        app()
    except StoreBusy as exc:  # another process holds the index: say so, no traceback
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; `ftlab run --resume RUN` continues a run")
        sys.exit(130)


if __name__ == "__main__":
    main()
