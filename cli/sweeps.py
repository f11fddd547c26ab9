"""`ftlab sweep …`: start/resume a study, status, best, worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ftlab.cli.app import RunsDir, app, console, fail
from ftlab.sweeps.study import SweepError, SweepFailed


def _study(args: list[str], storage: str, runs_dir: Path) -> Any:
    """A study by spec file (its search block knows the storage) or by name + storage."""
    import optuna

    from ftlab.sweeps import study as study_mod

    if not args:
        raise SweepError("name a study (or the spec file that defines it)")
    ref = args[0]
    if Path(ref).is_file():
        sweep = study_mod.load(Path(ref), args[1:])
        url = storage or sweep.storage_url
        name = sweep.name
    else:
        url = storage or f"sqlite:///{(runs_dir / 'sweeps.db').resolve()}"
        name = ref
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            raise SweepError(f"no study storage at {url}; give --storage URL or the spec file")
    try:
        return optuna.load_study(study_name=name, storage=study_mod.storage(url)), url
    except KeyError:
        names = optuna.get_all_study_names(study_mod.storage(url))
        raise SweepError(
            f"no study '{name}' in {url} (studies there: {', '.join(names) or 'none'})"
        ) from None


def start(
    file: Path, overrides: list[str], *, workers: int, gpus_per_trial: int, console: Any
) -> None:
    from ftlab.sweeps import study as study_mod

    if gpus_per_trial > 1:  # each trial is a multi-process job, through the run's launcher
        overrides = [*overrides, f"resources.processes={gpus_per_trial}"]
    sweep = study_mod.load(file, overrides)  # every problem reported before any trial
    study = study_mod.open_study(sweep)
    console.print(
        f"study {sweep.name} in {sweep.storage_url}: {len(sweep.params)} parameter(s), "
        f"{sweep.spec.search.n_trials} trials, sampler {sweep.spec.search.sampler}, "
        f"pruner {sweep.spec.search.pruner}",
        markup=False,
    )
    procs = []
    if workers > 1:
        gpus = _gpus()
        for w in range(1, workers):
            env = dict(os.environ)
            if gpus:
                chunk = gpus[w * gpus_per_trial : (w + 1) * gpus_per_trial]
                env["CUDA_VISIBLE_DEVICES"] = ",".join(chunk) if chunk else ""
            cmd = [
                sys.executable,
                "-m",
                "ftlab.cli",
                "sweep",
                "worker",
                sweep.name,
                "--storage",
                sweep.storage_url,
            ]
            procs.append(subprocess.Popen(cmd, env=env))
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[:gpus_per_trial])
    study_mod.run_sweep(sweep)
    for p in procs:
        p.wait()
    _print_status(study, sweep.storage_url, console)
    _fail_if_nothing_completed(study)


def _fail_if_nothing_completed(study: Any) -> None:
    """A study whose every trial failed is a failed command (exit 1), with the first error."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if trials and all(t.state == TrialState.FAIL for t in trials):
        first = next((t.user_attrs.get("error") for t in trials if t.user_attrs.get("error")), "")
        raise SweepFailed(
            f"every one of the {len(trials)} trials failed"
            + (f" (first: {first})" if first else "")
            + "; `ftlab runs` and each trial's run directory (status.json) say why"
        )


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g for g in visible.split(",") if g]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def worker(args: list[str], *, storage: str, runs_dir: Path) -> None:
    """Run trials of an existing study until it has its n_trials (another machine, or a
    `--workers` child)."""
    from ftlab.sweeps import study as study_mod

    study, url = _study(args[:1], storage, runs_dir)
    spec_file = study.user_attrs.get("spec_file")
    if not spec_file or not Path(spec_file).is_file():
        raise SweepError(f"study {study.study_name}: its spec file {spec_file!r} is not here")
    sweep = study_mod.load(Path(spec_file), list(study.user_attrs.get("overrides", [])))
    if sweep.storage_url != url:
        sweep.spec.search.storage = url
    study_mod.run_sweep(sweep)


def status(args: list[str], *, storage: str, runs_dir: Path, console: Any) -> None:
    study, url = _study(args, storage, runs_dir)
    _print_status(study, url, console)


def _print_status(study: Any, url: str, console: Any) -> None:
    from optuna.trial import TrialState
    from rich.table import Table

    objectives = study.user_attrs.get("objectives") or []
    title = f"study {study.study_name}" + (
        f" — value = {', '.join(objectives)}" if objectives else ""
    )
    table = Table(title=title)
    for col in ("trial", "state", "value", "params", "reused", "last step", "time", "run"):
        table.add_column(col)
    spent = 0.0
    for t in study.get_trials(deepcopy=False):
        values = t.values or []
        took = None
        if t.datetime_start and t.datetime_complete:
            took = (t.datetime_complete - t.datetime_start).total_seconds()
            spent += took
        table.add_row(
            str(t.number),
            t.state.name.lower(),
            ", ".join(f"{v:.4f}" for v in values) or "-",
            ", ".join(f"{k}={_short(v)}" for k, v in t.params.items()),
            ", ".join(t.user_attrs.get("reused_stages", [])) or "-",
            str(max(t.intermediate_values, default="-")),
            f"{took:.0f}s" if took is not None else "-",
            t.user_attrs.get("run_id", "-"),
        )
    console.print(table)
    console.print(
        f"  trial time {spent / 60:.1f} min in all; last step = the judged stage's last "
        "evaluation reported to the pruner"
    )
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] += 1
    console.print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v))
    if done and len(study.directions) == 1:
        best = study.best_trial
        run = best.user_attrs.get("run_id", "")
        what = f" {objectives[0]}" if objectives else ""
        console.print(f"  best: trial {best.number}{what} = {best.value:.4f} ({run})")
    elif done:
        console.print(
            f"  Pareto front: trials {', '.join(str(t.number) for t in study.best_trials)}"
        )
    console.print(f"  dashboard: {dashboard_command(url)}", markup=False)


def dashboard_command(url: str) -> str:
    """The optuna-dashboard command for this storage, and how to install it if it is not."""
    import importlib.util

    command = f"optuna-dashboard {url}"
    if importlib.util.find_spec("optuna_dashboard") is None:
        return f"{command}   (not installed: pip install 'ftlab[dashboard]')"
    return command


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def best(args: list[str], *, storage: str, runs_dir: Path, out: Path | None, console: Any) -> None:
    """Write the best trial's spec (its sampled values applied) as a ready-to-run YAML."""
    from ftlab.runner.spec.dump import to_yaml
    from ftlab.runner.spec.load import load_raw, validate
    from ftlab.sweeps import space as space_mod

    study, _ = _study(args, storage, runs_dir)
    if len(study.directions) > 1:
        raise SweepError(
            "a multi-objective study has a Pareto front, not one best trial; "
            "see `ftlab sweep status`"
        )
    try:
        trial = study.best_trial
    except ValueError:
        raise SweepError(f"study {study.study_name} has no finished trial yet") from None
    raw = load_raw(study.user_attrs["spec_file"], study.user_attrs.get("overrides", []))
    spec = validate(space_mod.trial_raw(raw, dict(trial.params), {}))
    spec.search = spec.search.model_copy(update={"space": {}})
    spec.description = (spec.description + " " if spec.description else "") + (
        f"Best trial {trial.number} of sweep {study.study_name} (value {trial.value:.4f})."
    )
    text = to_yaml(spec)
    if out is None:
        print(text)
        return
    out.write_text(text)
    console.print(f"wrote {out} (trial {trial.number}, value {trial.value:.4f})")


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
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress: warnings, errors, results.")
    ] = False,
) -> None:
    """Optuna sweep (see the help above)."""
    if quiet:
        from ftlab.runner import progress

        progress.setup(quiet=True)
    try:
        if args[0] == "status":
            status(args[1:], storage=storage, runs_dir=runs_dir, console=console)
        elif args[0] == "best":
            best(args[1:], storage=storage, runs_dir=runs_dir, out=out, console=console)
        elif args[0] == "worker":
            worker(args[1:], storage=storage, runs_dir=runs_dir)
        else:
            start(
                Path(args[0]),
                args[1:],
                workers=workers,
                gpus_per_trial=gpus_per_trial,
                console=console,
            )
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        fail(exc)
