"""Running an experiment: expand runs, then for each run execute its stages in order.

A stage's inputs (model identity, data content, method, settings, upstream stage, seed)
get a content hash; a finished stage with the same hash is reused from the stage cache
(`<output>/cache/stages/<hash>.json` → the artifact of the run that trained it)."""

from __future__ import annotations

import secrets
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.runner import data as data_mod
from ftlab.runner import evaluate, launch, lengths, live, models, progress, snapshots, tracking
from ftlab.runner.cache import Cache
from ftlab.runner.envinfo import snapshot
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import Artifact, StageContext, StageResult
from ftlab.runner.methods.common import base_weights, reset_peak_memory
from ftlab.runner.rundir import RunDir, latest_checkpoint, write_json, write_text
from ftlab.runner.spec.schema import Spec, StageSpec
from ftlab.runner.stagehash import CACHE_VERSION, model_identity, stage_hashes

__all__ = ["CACHE_VERSION", "model_identity", "stage_hashes"]  # their home is stagehash


class RunStopped(Exception):  # noqa: N818 - a stop, not an error
    """Raised inside a stage to stop the run on purpose (e.g. a sweep's pruner); the run
    ends in state `state` instead of `failed`."""

    state = "stopped"


@dataclass
class RunResult:
    run_dir: Path
    variant: str
    state: str
    stages: dict[str, dict[str, Any]]


def new_run_id(experiment: str, variant: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{experiment}-{variant}-{stamp}-{secrets.token_hex(2)}"


def create_run(
    spec: Spec,
    *,
    variant: str,
    spec_file: Path,
    overrides: list[str],
    extra: dict[str, Any] | None = None,
) -> RunDir:
    from ftlab.runner.spec.dump import to_yaml

    root = Path(spec.output.dir)
    run = RunDir(root / new_run_id(spec.name, variant))
    if run.path.resolve().parent != root.resolve():  # names are checked; paths are too
        raise ValueError(f"run directory {run.path} would not be inside output.dir {root}")
    run.path.mkdir(parents=True)
    run.set_status(state="running", stage="")  # first: a run.json always has a status
    write_json(
        run.path / "run.json",
        {
            "run_id": run.run_id,
            "experiment": spec.name,
            "variant": variant,
            "spec_file": str(spec_file.resolve()),
            "spec_dir": str(spec_file.resolve().parent),
            "overrides": overrides,
            "created": time.time(),
            "format": 1,
            **(extra or {}),
        },
    )
    write_text(run.path / "spec.yaml", to_yaml(spec))
    write_json(run.path / "env.json", snapshot())
    return run


def preflight(
    spec: Spec, *, spec_dir: Path, warn: bool = True
) -> tuple[models.ModelRef, dict[str, data_mod.Dataset]]:
    """Resolve the model and load every dataset a run needs: bad input fails here, before
    any run directory is written or any training starts."""
    ref = models.resolve(spec.model.name, revision=spec.model.revision, seed=spec.seed)
    if warn and Path(ref.path, "config.json").is_file():  # a local model: positions known
        config = models.load_config(ref)
        for stage in spec.needed_stages():
            if warning := models.length_warning(stage, config):
                print(f"warning: {warning}")
    if liger := [s.name for s in spec.needed_stages() if s.train.liger]:
        models.check_liger(liger)
    names = {s.data for s in spec.needed_stages()} | {ev.data for ev in spec.evals if ev.data}
    names |= {name for ev in spec.evals for name in _eval_datasets(ev).values()}
    datasets = {
        name: data_mod.load(
            spec.data[name], base_dir=spec_dir, seed=spec.seed, sources=spec.data, name=name
        )
        for name in sorted(names)
    }
    for stage in spec.needed_stages() if warn else []:  # `overlong` leaves rows to train on
        lengths.for_stage(spec, stage, datasets[stage.data], tokenizer_from=ref)
    return ref, datasets


def _eval_datasets(ev: Any) -> dict[str, str]:
    """The datasets an eval kind reads besides `data:` (a judge's calibration pairs)."""
    from ftlab.evals import EVALS

    kind = EVALS.get(ev.kind)
    return kind.datasets(kind.params_model.model_validate(ev.params))


def execute(
    run: RunDir,
    spec: Spec,
    *,
    resume: bool = False,
    extra_callbacks: list[Any] | None = None,
    stage_callbacks: Any = None,
) -> RunResult:
    """Train every stage of one run; ingest the run into the DuckDB index at the end. The
    run directory is held by this process meanwhile (`RunBusy` for a second one)."""
    with run.lock(), live.publishing(run, spec.tracking):  # trackers see it as it trains
        return _execute(
            run,
            spec,
            resume=resume,
            extra_callbacks=extra_callbacks,
            stage_callbacks=stage_callbacks,
        )


def _execute(
    run: RunDir,
    spec: Spec,
    *,
    resume: bool,
    extra_callbacks: list[Any] | None,
    stage_callbacks: Any,
) -> RunResult:
    info = run.info()
    spec_dir = Path(info.get("spec_dir", "."))
    if resume and (left := run.remove_temp_files()):
        print(f"removed {len(left)} temp file(s) an interrupted write left")
    run.set_status(state="running", error="")
    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    try:
        tracking.resolve_mode(spec.tracking.wandb.mode)  # `online` without a key: say so now
        ref, datasets = preflight(spec, spec_dir=spec_dir, warn=False)  # `ftlab run` warned
        hashes = stage_hashes(spec, spec_dir=spec_dir, model=ref.identity, datasets=datasets)
        artifacts: dict[str, Artifact] = {}
        known = dict(
            ref=ref, datasets=datasets, hashes=hashes, artifacts=artifacts, spec_dir=spec_dir
        )
        needed = spec.needed_stages()
        if skipped := [s.name for s in spec.stages if s not in needed]:
            why = "no later stage or eval of this run uses them"
            print(f"skipping stage(s) {', '.join(skipped)}: {why}")
        for i, stage in enumerate(needed, 1):
            run.set_status(stage=stage.name)
            progress.at(stage=f"stage {i}/{len(needed)} {stage.name} ({stage.method})")
            results[stage.name] = _run_stage(
                run,
                spec,
                stage,
                ref=ref,
                data=datasets[stage.data],
                upstream=artifacts.get(stage.from_) if stage.from_ else None,
                stage_hash=hashes[stage.name],
                train_hash=hashes.get(f"{stage.name}#train", hashes[stage.name]),
                artifacts=dict(artifacts),
                resume=resume,
                extra_callbacks=[
                    *(extra_callbacks or []),
                    *(stage_callbacks(stage) if stage_callbacks else []),
                ],
            )
            results[stage.name] = _kept(run, spec, stage, results[stage.name], known)
            artifacts[stage.name] = _artifact_from(results[stage.name])
            snapshots.register(stage, results[stage.name], artifacts, hashes)
        evaluate.run_evals(
            run,
            spec,
            ref=ref,
            datasets=datasets,
            hashes=hashes,
            artifacts=artifacts,
            spec_dir=spec_dir,
        )
        state = "completed"
        run.set_status(
            state=state, stage="", finished=time.time(), wall_time_s=time.time() - started
        )
    except BaseException as exc:
        state = _record_end(run, exc)
        raise
    finally:
        _publish(run, spec, trackers=False)  # live.publishing ends the trackers' run
    return RunResult(run.path, info.get("variant", ""), state, results)


def _record_end(run: RunDir, exc: BaseException) -> str:
    """A run that stopped early: its state, error and traceback, also on its stage."""
    state = _ended_state(exc)
    interrupted = state == "interrupted"
    run.set_status(
        state=state,
        error="interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}",
        traceback="" if interrupted else traceback.format_exc(),
        finished=time.time(),
    )
    current = run.status().get("stage") or ""
    record = run.stage(current) if current else {}
    if record.get("state") == "running":  # the stage ends in the run's state
        run.write_stage(current, {**record, "state": state})
    return state


def _ended_state(exc: BaseException) -> str:
    if isinstance(exc, RunStopped):
        return exc.state
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def evaluate_run(run: RunDir, spec: Spec) -> dict[str, dict[str, Any]]:
    """Run `spec.evals` on a finished run's models (`ftlab eval`): nothing retrains."""

    spec_dir = Path(run.info().get("spec_dir", "."))
    ref, datasets = preflight(spec, spec_dir=spec_dir)
    hashes: dict[str, str] = {}
    artifacts: dict[str, Artifact] = {}
    for stage in spec.needed_stages():
        record = run.stage(stage.name)
        if record.get("state") == "completed":
            hashes[stage.name] = record["hash"]
            artifacts[stage.name] = _artifact_from(record)
            snapshots.register(stage, record, artifacts, hashes)  # `every:` evals see them
    for ev in spec.evals:
        missing = [t for t in evaluate.targets(spec, ev) if t != "base" and t not in artifacts]
        if missing:
            raise FileNotFoundError(
                f"eval {ev.key}: run {run.run_id} has no completed stage "
                f"{', '.join(missing)}; finish it first (ftlab run --resume {run.run_id})"
            )
    results = evaluate.run_evals(
        run,
        spec,
        ref=ref,
        datasets=datasets,
        hashes=hashes,
        artifacts=artifacts,
        spec_dir=spec_dir,
    )
    run.set_status(stage="")
    _publish(run, spec)
    return results


def _publish(run: RunDir, spec: Spec, *, trackers: bool = True) -> None:
    """Write the run's summary, index it (a busy index is synced later), tell trackers."""
    from ftlab.reports import store

    write_json(run.path / "summary.json", summarise(run))
    try:
        store.ingest_runs(Path(spec.output.dir), [run.path])
    except store.StoreBusy as exc:
        print(f"note: the run is saved but not indexed yet — {exc}")
    if trackers:
        live.after_run(run.path, spec.tracking)


def result_of(run: RunDir, spec: Spec) -> RunResult:
    """A finished run's result, read back from its directory."""
    stages = {s.name: run.stage(s.name) for s in spec.stages if run.stage(s.name)}
    return RunResult(run.path, run.info().get("variant", ""), run.status().get("state", ""), stages)


def _artifact_record(a: Artifact) -> dict[str, str]:
    return {"path": str(a.path.resolve()), "kind": a.kind, "base": a.base}


def _artifact_from(stage: dict[str, Any]) -> Artifact:
    a = stage["artifact"]
    return Artifact(path=Path(a["path"]), kind=a["kind"], base=a["base"])


def _stage_cache(spec: Spec) -> Cache:
    return Cache.of(spec, "stages", CACHE_VERSION)  # keyed by stage hash (which has the version)


def _cached(spec: Spec, stage_hash: str) -> dict[str, Any] | None:
    entry = _stage_cache(spec).get(stage_hash)
    if entry and Path(entry["artifact"]["path"], "ftlab_artifact.json").is_file():
        return entry  # type: ignore[no-any-return]
    return None


def _run_stage(
    run: RunDir,
    spec: Spec,
    stage: StageSpec,
    *,
    ref: models.ModelRef,
    data: data_mod.Dataset,
    upstream: Artifact | None,
    stage_hash: str,
    train_hash: str,
    artifacts: dict[str, Artifact],
    resume: bool,
    extra_callbacks: list[Any],
) -> dict[str, Any]:
    """Reuse the stage (this run's or the cache's, same hash), else train it."""
    reused = _reused(run, spec, stage, stage_hash, train_hash)
    if reused is not None:
        return reused
    data = lengths.for_stage(spec, stage, data, tokenizer_from=upstream.path if upstream else ref)
    summary, warning = lengths.describe(data.report, data=stage.data)
    progress.note(f"stage {stage.name}: {summary}")
    if warning:
        print(f"warning: {warning}")
    work = run.stage_dir(stage.name)
    resume_from = latest_checkpoint(work) if resume else None
    for folder in ("checkpoints", "steps") if resume_from is None else ():
        shutil.rmtree(work / folder, ignore_errors=True)  # a new start: no earlier state
    record = {
        "stage": stage.name,
        "method": stage.method,
        "evaluator": stage.name in spec.evaluator_stages(),  # a judge, not on the chain
        "hash": stage_hash,
        "state": "running",
        "started": time.time(),
        "resumed_from": str(resume_from or ""),
    }
    run.write_stage(stage.name, record)
    ctx = StageContext(
        spec=spec,
        stage=stage,
        model=ref,
        upstream=upstream,
        data=data,
        work_dir=work,
        precision=models.resolve_precision(stage.train.precision),
        artifacts=artifacts,
        resume_from=resume_from,
        extra_callbacks=extra_callbacks,
        log=lambda rec: run.log_metrics({"stage": stage.name, **rec}),
        snapshot_every=snapshots.every(spec, stage),
    )
    if resume_from:
        _resuming(run, stage.name, resume_from)
    result = _train(run, spec, ctx)
    if not spec.output.keep_checkpoints:
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
    record |= {
        "state": "completed",
        "finished": time.time(),
        "run_id": run.run_id,
        "reused_from": "",
        "summary": {
            **result.summary,
            "objective": METHODS.get(stage.method).objective(stage),
            "eval_data": data.content_hash,
        },
        "artifact": _artifact_record(result.artifact),
    }
    run.write_stage(stage.name, record)
    _stage_cache(spec).put(train_hash, record)  # before `select:` chooses (see _kept)
    return record


def _kept(
    run: RunDir, spec: Spec, stage: StageSpec, record: dict[str, Any], known: dict[str, Any]
) -> dict[str, Any]:
    """The stage's record after `select:` chose its artifact among its snapshots."""
    if stage.select is None or "selected" in record["summary"]:
        return record  # nothing to choose, or chosen when it trained (a reused stage)
    record = snapshots.select(run, spec, stage, record, **known)
    run.write_stage(stage.name, record)
    _stage_cache(spec).put(record["hash"], record)
    return record


def _resuming(run: RunDir, stage: str, resume_from: Path) -> None:
    step = int(resume_from.name.rsplit("-", 1)[-1])
    dropped = run.drop_metrics_after(stage, step)  # they are logged again
    print(
        f"stage {stage}: resuming from {resume_from.name}"
        + (f" ({dropped} metric records after step {step} replaced)" if dropped else "")
    )


def _reused(
    run: RunDir, spec: Spec, stage: StageSpec, stage_hash: str, train_hash: str
) -> dict[str, Any] | None:
    """The stage's record when this run already completed it with these inputs, or when
    the stage cache holds it (then recorded as reused). A stage whose training is cached
    but not with this `select:` reuses the training; `_kept` chooses again."""
    existing = run.stage(stage.name)
    if existing.get("state") == "completed" and existing.get("hash") == stage_hash:
        return existing
    cached = _cached(spec, stage_hash) or (
        _cached(spec, train_hash) if train_hash != stage_hash else None
    )
    if cached is None:
        return None
    record = {**cached, "state": "completed", "reused_from": cached["run_id"], "stage": stage.name}
    record["evaluator"] = stage.name in spec.evaluator_stages()
    record["hash"] = stage_hash
    again = "" if "selected" in record["summary"] or not stage.select else ", select: anew"
    progress.note(
        f"stage {stage.name}: reusing cached {stage.method} artifact from run "
        f"{cached['run_id']} (same inputs, hash {stage_hash}{again})"
    )
    run.write_stage(stage.name, record)
    return record


def _train(run: RunDir, spec: Spec, ctx: StageContext) -> StageResult:
    """Train the stage here, or across the spec's processes (`resources:`)."""
    reset_peak_memory()
    if not launch.distributed(spec):
        return METHODS.get(ctx.stage.method).train(ctx)
    if ctx.upstream is not None and ctx.upstream.kind != "full":
        base_weights(ctx)  # merge the upstream adapter once, before the ranks start
    launched = launch.launch_stage(
        spec, run.path, ctx.stage.name, ctx.work_dir, ctx.resume_from, callbacks=ctx.extra_callbacks
    )
    return StageResult(artifact=_artifact_from(launched), summary=launched["summary"])


def summarise(run: RunDir) -> dict[str, Any]:
    """The one-screen summary of a run (also `summary.json`)."""
    info, status = run.info(), run.status()
    stages = {}
    for name in run.stage_names():
        st = run.stage(name)
        stages[name] = {
            "method": st.get("method"),
            "state": st.get("state"),
            "reused_from": st.get("reused_from", ""),
            **{k: v for k, v in st.get("summary", {}).items()},
        }
    evals = {
        name: {
            target: {metric: m.get("value") for metric, m in res.get("metrics", {}).items()}
            for target, res in summary.get("targets", {}).items()
        }
        for name, summary in evaluate.read_results(run.path).items()
    }
    return {
        "run_id": run.run_id,
        "experiment": info.get("experiment"),
        "variant": info.get("variant"),
        "state": status.get("state"),
        "wall_time_s": status.get("wall_time_s"),
        "stages": stages,
        "evals": evals,
    }
