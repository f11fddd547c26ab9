"""The trainer side of a sweep's pruning: a callback that reports each evaluation of the
judged stage to the trial and stops training when the pruner says so, on one process or on
every rank of a torchrun job. Kept apart from `study.py`, which `ftlab sweep status` and
`best` import: this module needs transformers and torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftlab.runner.execute import RunStopped
from ftlab.runner.spec.schema import Spec
from ftlab.sweeps.study import _pruner, load, objective_probe, storage


class Pruned(RunStopped):
    """The pruner stopped this trial (raised inside training, caught by the objective)."""

    state = "pruned"


class PruningCallback(TrainerCallback):  # type: ignore[misc]
    """Trainer callback: each evaluation reports one intermediate value to the pruner.

    The value is the objective itself when it can be measured on the model in training
    (`probe`: an eval kind marked `in_loop`, such as `preference` or `perplexity`, run on
    its rows at every evaluation), else the stage's eval loss signed like the objective (a
    maximised study sees −loss). Only the judged stage (`judged_stage`) reports, at its
    own optimizer steps, so a trial that reuses a cached SFT stage reports its DPO values
    at the same steps as one that trained it, and every rung compares like with like.

    A stage pruned once leaves its reported values in `<output>/cache/pruned/<key>.json`;
    when another trial reaches a stage with the same inputs, those values are replayed to
    the pruner before any training, and the trial stops at once if the pruner (deciding
    afresh, against the study as it is now) says so — an identical stage is not retrained
    only to be pruned at the same step again."""

    def __init__(
        self,
        trial: Any,
        sign: float = 1.0,
        record: Path | None = None,
        probe: Callable[[Any, Any], float] | None = None,
        portable: dict[str, Any] | None = None,
        replay: bool = True,
    ) -> None:
        self.trial, self.sign, self.record, self.replay = trial, sign, record, replay
        self.probe, self.portable = probe, portable
        self.reported: dict[int, float] = {}  # local step → value

    def for_workers(self) -> dict[str, Any] | None:
        """How each torchrun rank rebuilds this callback (`worker_pruning`): rank 0 talks to
        the study, and every rank stops at the step rank 0's pruner decides."""
        if self.portable is None:
            return None
        return {"factory": f"{__name__}:worker_pruning", "args": self.portable}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import json

        known = None
        if self.replay and self.trial and self.record is not None and self.record.is_file():
            known = json.loads(self.record.read_text())
        for step, value in _from_rank0(known) or []:
            self._report(int(step), float(value), replay=True)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any
    ) -> None:
        step = int(state.global_step)
        if step == 0 or step in self.reported:
            return  # step 0 is the untrained model; the final evaluation repeats the last
        if self.trial is None:  # another rank: rank 0 measures and decides
            value = float("nan")
        elif self.probe is not None:
            value = self.probe(kw["model"], kw.get("processing_class") or kw.get("tokenizer"))
        elif metrics and "eval_loss" in metrics:
            value = self.sign * float(metrics["eval_loss"])
        else:
            return
        self._report(step, value, replay=False)

    def _report(self, step: int, value: float, *, replay: bool) -> None:
        import json

        if step in self.reported:
            return
        self.reported[step] = value
        prune = False
        if self.trial is not None:
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        if _from_rank0(prune):
            if self.record is not None and self.trial is not None and not replay:
                self.record.parent.mkdir(parents=True, exist_ok=True)
                self.record.write_text(json.dumps(sorted(self.reported.items())))
            how = "its identical stage's earlier values" if replay else "this run"
            shown = value if self.probe is not None else value * self.sign
            raise Pruned(f"pruned at step {step} (value {shown:.4f}, from {how})")


def _from_rank0(obj: Any) -> Any:
    """`obj` as rank 0 has it, on every rank of a torchrun job (itself elsewhere)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def worker_pruning(
    *,
    spec: Spec,
    datasets: dict[str, Any],
    rank: int,
    spec_file: str,
    overrides: list[str],
    trial_id: int,
    sign: float,
    record: str | None,
    probe: bool,
) -> PruningCallback:
    """The pruning callback of a trial whose stage runs on several processes, rebuilt on
    one rank (see `PruningCallback.for_workers`): rank 0 opens the study and reports."""
    import optuna

    if rank != 0:
        return PruningCallback(None, sign)
    sweep = load(Path(spec_file), overrides)
    study = optuna.load_study(
        study_name=sweep.name, storage=storage(sweep.storage_url), pruner=_pruner(sweep)
    )
    spec.search = sweep.spec.search
    measure = objective_probe(spec, datasets) if probe else None
    return PruningCallback(
        optuna.trial.Trial(study, trial_id),
        sign,
        Path(record) if record else None,
        measure,
        replay=spec.output.reuse,
    )
