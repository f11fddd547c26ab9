"""`ftlab sweep`: an Optuna study over whole recipes. Each trial is one normal run of the
spec (its run directory and DuckDB rows carry the study and trial number) with sampled
values; stages whose inputs a trial shares with an earlier one come from the stage cache.
Intermediate values (the objective measured during training where that is cheap, else
the eval loss) go to the pruner; a pruned trial is a run in state `pruned`.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftlab.runner.cache import Cache
from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.errors import Problem, SpecError
from ftlab.runner.spec.load import Raw, load_raw, validate
from ftlab.runner.spec.schema import Spec
from ftlab.sweeps import space as space_mod


class SweepError(RuntimeError):
    """Bad sweep input (unknown study, missing storage); the message says what to do."""


class SweepFailed(RuntimeError):
    """Every trial of a study failed."""


COSTS = ("wall_time_s", "peak_memory_mb")
HEARTBEAT_S = float(os.environ.get("FTLAB_SWEEP_HEARTBEAT_S", "20"))


@dataclass
class Sweep:
    file: Path
    overrides: list[str]
    raw: Raw
    spec: Spec
    params: list[space_mod.Param]

    @property
    def name(self) -> str:
        return self.spec.search.study or self.spec.name

    @property
    def storage_url(self) -> str:
        return storage_url(self.spec)

    @property
    def multi(self) -> bool:
        return len(self.spec.search.objectives) > 1


def storage_url(spec: Spec) -> str:
    s = spec.search.storage
    if not s:
        return f"sqlite:///{Path(spec.output.dir).resolve() / 'sweeps.db'}"
    return s


def load(file: Path, overrides: list[str] | None = None) -> Sweep:
    """Read and check a sweep: spec, search space, objectives — before anything runs."""
    raw = load_raw(file, overrides or [])
    spec = validate(raw)
    problems: list[Problem] = []

    def bad(path: tuple[str | int, ...], expected: str, found: str, hint: str = "") -> None:
        where = raw.loc(path)
        problems.append(
            Problem(where.file, where.line, ".".join(map(str, path)), expected, found, hint)
        )

    if not spec.search.space:
        bad(("search",), "a search: block with a space: of dotted paths", "no search space")
    search = spec.search
    if len(search.objectives) > 1 and search.pruner != "none":
        bad(
            ("search", "pruner"),
            "pruner: none for a multi-objective study (Optuna cannot prune those)",
            search.pruner,
            "set pruner: none, or keep one objective",
        )
    if len(search.objectives) > 1 and search.sampler not in ("nsga2", "random", "tpe"):
        bad(("search", "sampler"), "nsga2, tpe or random for several objectives", search.sampler)
    if search.startup_trials is not None and search.sampler not in ("tpe", "cmaes"):
        bad(
            ("search", "startup_trials"),
            "startup_trials only with sampler tpe or cmaes",
            f"sampler {search.sampler}",
            "remove startup_trials (this sampler has no start-up phase)",
        )
    evals = {ev.key for ev in spec.evals}
    stages = {s.name for s in spec.stages}
    for i, obj in enumerate(search.objectives):
        head, _, rest = obj.metric.partition(".")
        ok = (
            obj.metric in ("eval_loss", "train_loss", *COSTS)
            or (head == "stage" and rest.partition(".")[0] in stages and "." in rest)
            or (head in evals and rest)
        )
        if not ok:
            bad(
                ("search", "objectives", i, "metric"),
                "eval_loss, train_loss, wall_time_s, peak_memory_mb, <eval>.<metric> "
                f"(evals: {', '.join(sorted(evals)) or 'none'}) or stage.<stage>.<key>",
                obj.metric,
            )
    if problems:
        raise SpecError(problems)
    sweep = Sweep(file, overrides or [], raw, spec, [])
    for key, expected, found, hint in _pruner_problems(sweep):
        bad(("search", "pruner_params", *([key] if key else [])), expected, found, hint)
    if problems:
        raise SpecError(problems)
    params = space_mod.parse(spec, raw)
    if search.sampler == "grid" and any(p.kind in ("float",) and not p.step for p in params):
        bad(("search", "sampler"), "a space of choices or stepped ranges for grid", "grid")
        raise SpecError(problems)
    return Sweep(file, overrides or [], raw, spec, params)


def _sampler(sweep: Sweep) -> Any:
    import optuna

    seed = sweep.spec.search.seed if sweep.spec.search.seed is not None else sweep.spec.seed
    kind = sweep.spec.search.sampler
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        grid = {}
        for p in sweep.params:
            if p.kind == "categorical":
                grid[p.path] = list(p.choices)
            elif p.kind in ("int", "float"):
                n = int(round((p.high - p.low) / p.step)) + 1
                grid[p.path] = [p.low + i * p.step for i in range(n)]
        return optuna.samplers.GridSampler(grid, seed=seed)
    startup = sweep.spec.search.startup_trials
    extra = {} if startup is None else {"n_startup_trials": startup}
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **extra)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, **extra)


def prunes(sweep: Sweep) -> bool:
    return sweep.spec.search.pruner != "none" and not sweep.multi


def judged_stage(spec: Spec) -> Any:
    """The stage whose training the pruner watches: the one the objective is measured on
    — the named stage for `stage.<name>.<key>`, else the last stage (the run's model).
    Earlier stages are not judged: their losses (an SFT loss before a DPO loss) are not
    comparable with the objective, and mixing them in Hyperband's rungs would compare an
    SFT value of one trial with a DPO value of another."""
    head, _, rest = spec.search.objectives[0].metric.partition(".")
    needed = spec.needed_stages()
    if head == "stage":
        name = rest.partition(".")[0]
        return next(s for s in needed if s.name == name)
    return needed[-1]


def _pruner_class(kind: str) -> Any:
    import optuna

    classes: dict[str, Any] = {
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "median": optuna.pruners.MedianPruner,
    }
    return classes[kind]


def _pruner(sweep: Sweep) -> Any:
    import optuna

    if not prunes(sweep):
        return optuna.pruners.NopPruner()
    kind = sweep.spec.search.pruner
    # the least resource a trial can be judged on: the first evaluation of the stage the
    # pruner watches
    first = judged_stage(sweep.spec).train.eval_steps or 1
    defaults: dict[str, Any] = {
        "hyperband": {"min_resource": first, "reduction_factor": 3},
        "successive_halving": {"min_resource": first},
        "median": {"n_startup_trials": 2, "n_warmup_steps": 0},
    }[kind]
    return _pruner_class(kind)(**{**defaults, **sweep.spec.search.pruner_params})


def _pruner_problems(sweep: Sweep) -> list[tuple[str, str, str, str]]:
    """(key, expected, found, fix) for pruner_params Optuna's pruner would refuse."""
    import inspect

    search = sweep.spec.search
    if not search.pruner_params or not prunes(sweep):  # `pruner=none` on the command line
        return []
    accepted = [
        n for n in inspect.signature(_pruner_class(search.pruner)).parameters if n != "self"
    ]
    out = []
    for key in search.pruner_params:
        if key not in accepted:
            hint = did_you_mean(key, accepted).strip() or f"it takes {', '.join(accepted)}"
            out.append((key, f"a keyword of Optuna's {search.pruner} pruner", key, hint))
    if not out:
        try:
            _pruner(sweep)
        except (TypeError, ValueError) as e:
            out.append(("", f"values Optuna's {search.pruner} pruner accepts", str(e), ""))
    return out


def storage(url: str) -> Any:
    """Optuna storage with heartbeats, so a trial whose worker died is failed (and retried
    once) when the next worker starts."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and the retry callback are "experimental" since Optuna 2.8 and warn on
    # every use (RDBStorage's heartbeat_interval argument, then the callback): the
    # retry is what we want, so neither warning tells the user anything.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=int(HEARTBEAT_S),
            grace_period=int(HEARTBEAT_S * 3),
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def open_study(sweep: Sweep, *, create: bool = True) -> Any:
    import optuna

    directions = [o.direction for o in sweep.spec.search.objectives]
    study = (
        optuna.create_study(
            study_name=sweep.name,
            storage=storage(sweep.storage_url),
            sampler=_sampler(sweep),
            pruner=_pruner(sweep),
            directions=directions,
            load_if_exists=True,
        )
        if create
        else optuna.load_study(
            study_name=sweep.name,
            storage=storage(sweep.storage_url),
            sampler=_sampler(sweep),
            pruner=_pruner(sweep),
        )
    )
    study.set_user_attr("spec_file", str(sweep.file.resolve()))
    study.set_user_attr("overrides", sweep.overrides)
    study.set_user_attr(
        "objectives", [f"{o.metric} ({o.direction})" for o in sweep.spec.search.objectives]
    )
    return study


def objective_probe(spec: Spec, datasets: dict[str, Any]) -> Callable[[Any, Any], float] | None:
    """The first objective as a function of (model, tokenizer), when its eval kind is cheap
    enough to run at every evaluation during training (`in_loop`); else None."""
    from ftlab.evals import EVALS
    from ftlab.evals.base import EvalInput
    from ftlab.runner.evaluate import eval_rows

    head, _, metric = spec.search.objectives[0].metric.partition(".")
    ev = next((e for e in spec.evals if e.key == head), None)
    if ev is None or not EVALS.get(ev.kind).in_loop:
        return None
    kind = EVALS.get(ev.kind)
    rows = eval_rows(ev, datasets)
    params = kind.params_model.model_validate(ev.params)

    def probe(model: Any, tokenizer: Any) -> float:
        training = model.training
        model.eval()
        try:
            out = kind.run(
                EvalInput(
                    model=model,
                    tokenizer=tokenizer,
                    rows=rows,
                    params=params,
                    seed=spec.seed,
                    target="in training",
                    limit=ev.limit,
                    quiet=True,
                )
            )
        finally:
            model.train(training)
        return float(out.metrics[metric].value)

    return probe


def objective_values(run_dir: Path, spec: Spec) -> list[float]:
    """The trial's objective values, read back from its run directory."""
    from ftlab.runner.evaluate import read_results
    from ftlab.runner.rundir import RunDir

    rd = RunDir(run_dir)
    last = rd.stage(spec.stages[-1].name).get("summary", {})
    evals = read_results(run_dir)
    out = []
    for obj in spec.search.objectives:
        head, _, rest = obj.metric.partition(".")
        if obj.metric in ("eval_loss", "train_loss"):
            value = last.get(obj.metric)
        elif obj.metric == "wall_time_s":
            value = rd.status().get("wall_time_s")
        elif obj.metric == "peak_memory_mb":
            stages = [rd.stage(s.name).get("summary", {}) for s in spec.needed_stages()]
            value = max((s.get("peak_memory_mb") or 0) for s in stages)
        elif head == "stage":
            stage, _, key = rest.partition(".")
            value = rd.stage(stage).get("summary", {}).get(key)
        else:
            summary = evals.get(head, {})
            target = summary.get("targets", {}).get(summary.get("last"), {})
            value = (target.get("metrics", {}).get(rest) or {}).get("value")
        if not isinstance(value, int | float):
            raise ValueError(f"objective {obj.metric}: the run has no such value ({value!r})")
        out.append(float(value))
    return out


def make_objective(sweep: Sweep) -> Any:
    import optuna

    from ftlab.runner import execute, progress
    from ftlab.runner.execute import RunStopped

    origin = {p.path: sweep.raw.loc(("search", "space", p.path)) for p in sweep.params}

    def objective(trial: Any) -> Any:
        values = space_mod.suggest(trial, sweep.params, sweep.spec)
        spec = validate(space_mod.trial_raw(sweep.raw, values, origin))
        spec.search = sweep.spec.search
        overrides = [f"{k}={v}" for k, v in values.items()]
        rd = execute.create_run(
            spec,
            variant=f"trial{trial.number}",
            spec_file=sweep.file,
            overrides=overrides,
            extra={"study": sweep.name, "trial": trial.number, "params": values},
        )
        trial.set_user_attr("run_id", rd.run_id)
        print(f"trial {trial.number}: {', '.join(overrides)} → {rd.run_id}")
        n = f" ({trial.number + 1}/{s.n_trials})" if (s := spec.search) else ""
        progress.at(run=f"trial {trial.number}{n}")
        ref, datasets = execute.preflight(spec, spec_dir=sweep.file.resolve().parent)
        hashes = execute.stage_hashes(
            spec, spec_dir=sweep.file.parent, model=ref.identity, datasets=datasets
        )
        callbacks = _pruning(sweep, spec, trial, hashes, datasets)
        try:
            result = execute.execute(rd, spec, stage_callbacks=callbacks)
        except RunStopped as exc:  # Pruned here, or a pruned torchrun stage
            if exc.state != "pruned":
                raise
            print(f"trial {trial.number}: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:  # pruned trials too: which stages came from the cache
            reused = [s.name for s in spec.stages if rd.stage(s.name).get("reused_from")]
            trial.set_user_attr("reused_stages", reused)
        vals = objective_values(result.run_dir, spec)
        return vals[0] if len(vals) == 1 else vals

    return objective


def _pruning(
    sweep: Sweep, spec: Spec, trial: Any, hashes: dict[str, str], datasets: dict[str, Any]
) -> Callable[[Any], list[Any]]:
    """The trial's callbacks per stage: a pruner on the stage its objective judges."""
    from ftlab.sweeps.pruning import PruningCallback

    objective = sweep.spec.search.objectives[0]
    # measuring the objective during training costs time: only for a pruner that acts
    # (without one, the free eval loss is reported, for the dashboard's curves)
    probe = objective_probe(spec, datasets) if prunes(sweep) else None
    # pruned-stage records hold values of one signal: key them by it too
    signal = hashlib.sha256(f"{objective.metric}|{probe is not None}".encode()).hexdigest()
    pruned = Cache.of(spec, "pruned", 1)
    sign = -1.0 if objective.direction == "maximize" else 1.0
    judged = judged_stage(spec).name

    def callbacks(stage: Any) -> list[Any]:
        if sweep.multi or stage.name != judged:
            return []
        record = pruned.path(f"{hashes[stage.name]}-{signal[:8]}")
        # a torchrun stage gets it on its ranks; the probe needs whole weights on rank 0
        # (DDP), so under FSDP/DeepSpeed a probed trial is not pruned (it trains on)
        ddp = spec.resources.strategy == "ddp"
        portable = (
            {
                "spec_file": str(sweep.file.resolve()),
                "overrides": sweep.overrides,
                "trial_id": trial._trial_id,
                "sign": sign,
                "record": str(record),
                "probe": probe is not None,
            }
            if ddp or probe is None
            else None
        )
        return [PruningCallback(trial, sign, record, probe, portable, replay=pruned.enabled)]

    return callbacks


def finished(study: Any) -> int:
    """Trials that count towards n_trials: complete, pruned, and failed ones — except a
    failure that was retried (its retry counts instead)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return sum(1 for t in trials if t.state in ended and t.number not in retried)


def run_sweep(sweep: Sweep, *, n_trials: int | None = None) -> Any:
    """Run trials until the study has `search.n_trials` of them (resumes a study)."""
    study = open_study(sweep)
    target = n_trials or sweep.spec.search.n_trials

    def enough(study: Any, trial: Any) -> None:
        if finished(study) >= target:
            study.stop()

    while (done := finished(study)) < target:
        study.optimize(
            make_objective(sweep),
            n_trials=target - done,
            catch=(Exception,),
            callbacks=[enough],
            # no gc.collect() after each trial (≈0.4 s with torch loaded): each stage's
            # trainer collects when it starts (accelerate's free_memory), and the evals
            # release their models
            gc_after_trial=False,
        )
    print(f"study {sweep.name}: {finished(study)} trials done (n_trials {target})")
    return study


def wait_for(pids: list[Any], timeout: float) -> None:
    deadline = time.time() + timeout
    for p in pids:
        p.wait(timeout=max(1.0, deadline - time.time()))
