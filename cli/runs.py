"""Commands on specs and runs: validate, schema, methods, evals, run, eval, plan, export,
merge-adapters, runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ftlab.cli.app import Overrides, RunsDir, app, console, err, fail
from ftlab.cli.results import print_results

PluginsOf = Annotated[
    Path | None, typer.Option("--spec", help="Include the plugins this spec names.")
]


@app.command()
def validate(
    args: Annotated[
        list[str],
        typer.Argument(help="Spec files, then overrides (key=value) applied to each of them."),
    ],
) -> None:
    """Check spec files (variants included) without loading a model. Exit 2 if any is bad."""
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import expand_runs

    overrides = [a for a in args if "=" in a and not Path(a).exists()]
    files = [Path(a) for a in args if a not in overrides]
    bad = 0
    for file in files:
        try:
            runs = expand_runs(file, overrides)
        except SpecError as exc:
            bad += 1
            err.print(exc.format(), markup=False, highlight=False)
            continue
        names = ", ".join(  # a name per run: `lr3 seed 1, lr3 seed 2` with `seeds:`
            name + (f" seed {spec.train_seed}" if spec.seeds else "") for name, spec in runs
        )
        console.print(Text.assemble(("ok", "green"), f" {file}: {len(runs)} run(s): {names}"))
    if bad:
        raise typer.Exit(2)


@app.command()
def schema(
    spec: PluginsOf = None,
) -> None:
    """Print the spec's JSON Schema, every method's and eval kind's params included (for
    editor completion and documentation)."""
    from ftlab.runner.spec.jsonschema import json_schema

    _load_plugins(spec)
    print(json.dumps(json_schema(), indent=2))


@app.command()
def methods(
    name: Annotated[str, typer.Argument(help="A method: print its params.")] = "",
    spec: PluginsOf = None,
) -> None:
    """List the registered training methods, or one method's params."""
    from ftlab.runner.methods import METHODS

    _load_plugins(spec)
    if name:
        _describe(METHODS, name, lambda m: f"data: {', '.join(m.data_formats)}")
        return
    for name, m in METHODS.items():
        console.print(f"{name:15} data: {', '.join(m.data_formats)}")


@app.command("evals")
def evals_cmd(
    name: Annotated[str, typer.Argument(help="An eval kind: print its params.")] = "",
    spec: PluginsOf = None,
) -> None:
    """List the registered eval kinds, or one kind's params."""
    from ftlab.evals import EVALS

    _load_plugins(spec)

    def line(kind: Any) -> str:
        return f"data: {', '.join(kind.data_formats) or 'none'}   headline: {kind.headline}"

    if name:
        _describe(EVALS, name, line)
        return
    for name, kind in EVALS.items():
        console.print(f"{name:15} {line(kind)}")


def _type_name(annotation: Any) -> str:
    """`int`, `Literal['a', 'b']`, `list[str]`: as a user writes it."""
    import typing

    if typing.get_args(annotation) or not hasattr(annotation, "__name__"):
        return str(annotation).replace("typing.", "").replace("ftlab.", "")
    return str(annotation.__name__)


def _load_plugins(spec: Path | None) -> None:
    """Import the plugins a spec names (checking the spec as `validate` does)."""
    if spec is None:
        return
    from ftlab.runner.spec.load import load_spec

    try:
        load_spec(spec)
    except Exception as exc:  # noqa: BLE001
        fail(exc)


def _describe(registry: Any, name: str, line: Any) -> None:
    """A plugin's params as `params.<key>: type = default  description`."""
    try:
        plugin = registry.get(name)
    except KeyError as exc:
        fail(exc)
    console.print(f"{name}  {line(plugin)}", markup=False, highlight=False)
    fields = plugin.params_model.model_fields
    if not fields:
        console.print("  (no params)")
    for key, f in fields.items():
        default = (
            "required" if f.is_required() else f"= {f.get_default(call_default_factory=True)!r}"
        )
        kind = _type_name(f.annotation)
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
    from ftlab.runner import execute, rundir
    from ftlab.runner.spec.load import read_yaml, validate, with_evals

    try:
        rd = rundir.find_run(run_ref, runs_dir)
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
        fail(exc)
    print_results(
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
            "--variant",
            "-v",
            help="Run only these variants (repeatable; the spec as written is its label:, "
            "default 'default').",
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
    runs_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Runs directory: output.dir for new runs [default: runs]."),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No progress: warnings, errors and the final table only."
        ),
    ] = False,
) -> None:
    """Train every run of a spec (the spec as written, plus each variant). Progress: a live
    display in a terminal, a line per milestone when the output is a file or pipe
    (FTLAB_PROGRESS=live|plain|quiet chooses)."""
    from ftlab.runner import progress

    if quiet:
        progress.setup(quiet=True)
    flags = {
        "processes": processes,
        "nodes": nodes,
        "node_rank": node_rank,
        "main_address": main_address,
        "strategy": strategy,
    }
    resources = [f"resources.{k}={v}" for k, v in flags.items() if v is not None]
    if resume and (spec is not None or overrides or variant):
        given = " ".join([*([str(spec)] if spec else []), *(overrides or [])])
        err.print(
            f"error: --resume continues run {resume} as it was recorded; "
            f"{given or '--variant'} would be ignored. Resume without it, or start a new "
            "run with the change: ftlab run SPEC KEY=VALUE",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    if runs_dir is not None and not resume:
        resources.append(_dir_override(runs_dir, overrides or []))
    try:
        planned = (
            _resumed(resume, runs_dir or Path("runs"), resources)
            if resume
            else _new_runs(spec, [*(overrides or []), *resources], variant)
        )
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - bad input: reported without a traceback
        fail(exc)
    _train_all(planned)


def _train_all(planned: list[tuple[Any, Any, bool]]) -> None:
    """Each planned run in turn, under the progress display; the table and a done line
    at the end (or the runs so far and what to do, when one stops)."""
    from ftlab.runner import execute, progress, rundir
    from ftlab.runner.rundir import RunBusy

    results: list[Any] = []
    started = time.time()
    for n, (make_run, spec_obj, is_resume) in enumerate(planned, 1):
        rd = make_run()  # created when its turn comes: an interrupt leaves no empty runs
        progress.at(run=f"run {n}/{len(planned)} {rd.info().get('variant', '')}")
        if progress.mode() != "quiet":
            console.rule(_header(rd, spec_obj))
        try:
            results.append(execute.execute(rd, spec_obj, resume=is_resume))
        except RunBusy as exc:
            err.print(f"error: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print_results(results)
            err.print(_interrupted(rd), markup=False, highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the run directory keeps the traceback
            print_results(results)
            err.print(
                f"error: run {rd.run_id} failed: {type(exc).__name__}: {exc}\n"
                f"  traceback: {rundir.cwd_relative(rd.path / 'status.json')}\n"
                f"  continue it with: ftlab run --resume {rd.run_id}",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1) from None
    print_results(results)
    console.print(_done(results, time.time() - started), markup=False, highlight=False)


def _done(results: list[Any], seconds: float) -> str:
    """The last line: what ran, how long, where the results are and what to run next."""
    from ftlab.runner import rundir

    exp = {rundir.RunDir(r.run_dir).info().get("experiment", "") for r in results}
    where = rundir.cwd_relative(results[0].run_dir.parent) if results else "runs"
    compare = f"`ftlab compare {next(iter(exp))}`" if len(exp) == 1 else "`ftlab compare`"
    took = (
        f"{int(seconds // 60)} min {int(seconds % 60)} s" if seconds >= 60 else f"{seconds:.0f} s"
    )
    return (
        f"done: {len(results)} run(s) completed in {took}; results in {where}/ (index "
        f"{where}/ftlab.duckdb); next: {compare}, `ftlab report`"
    )


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
    from ftlab.runner import rundir
    from ftlab.runner.spec.load import Loc, apply_override, parse_override, read_yaml, validate

    rd = rundir.find_run(resume, runs_dir)
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


def _header(rd: Any, spec: Any) -> Text:
    """The rule above a run: its id, its folder, and its training seed under `seeds:`."""
    from ftlab.runner import rundir

    seed = f"  (training seed {spec.train_seed})" if spec.train_seed is not None else ""
    return Text.assemble((rd.run_id, "bold"), f"  →  {rundir.cwd_relative(rd.path)}{seed}")


def _dir_override(runs_dir: Path, overrides: list[str]) -> str:
    """`--dir D` for new runs is output.dir=D; given with output.dir=… too, an error."""
    given = [o for o in overrides if o.split("=", 1)[0] == "output.dir"]
    if given:
        err.print(
            f"error: --dir {runs_dir} and {given[0]} both say where the runs go; keep one",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    return f"output.dir={runs_dir}"


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


@app.command("export")
def export_cmd(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or directory.")],
    out: Annotated[Path, typer.Argument(help="New folder to write.")],
    stage: Annotated[str | None, typer.Option(help="Stage to export (default: last).")] = None,
    merge: Annotated[bool, typer.Option(help="Merge an adapter into its base weights.")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write a stage's model as a standalone folder transformers (or peft) loads."""
    from ftlab.runner import rundir
    from ftlab.runner.export import ExportError, export

    try:
        path = export(rundir.find_run(run_ref, runs_dir), out, stage=stage, merge=merge)
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
    from ftlab.runner import rundir
    from ftlab.runner.export import ExportError, merge_adapters, stage_artifact

    try:
        adapters = []
        for item in adapter:
            ref, sep, weight = item.rpartition("=")
            if not sep:
                raise ExportError(f"--adapter {item}: expected RUN[:STAGE]=WEIGHT")
            run_ref, _, stage = ref.partition(":")
            _, art = stage_artifact(rundir.find_run(run_ref, runs_dir), stage or None)
            adapters.append((Path(art["path"]), float(weight)))
        path = merge_adapters(adapters, out, combination=combination, density=density, merge=merge)
    except (ExportError, FileNotFoundError, ValueError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"wrote {path}")
