"""What a training method is, and what a stage hands it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ftlab.runner.data import Dataset
from ftlab.runner.models import ModelRef
from ftlab.runner.spec.schema import Spec, StageSpec
from ftlab.runner.steps import Steps, packed, trainer_steps


class NoParams(BaseModel):
    """Methods without method-specific parameters accept an empty `params:`."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Artifact:
    """What a stage leaves behind: an adapter (on `base`) or full weights."""

    path: Path
    kind: str  # "adapter" | "full"
    base: str  # model directory the adapter applies to ("" for full weights)


@dataclass
class StageContext:
    """Everything a method needs to train one stage."""

    spec: Spec
    stage: StageSpec
    model: ModelRef
    upstream: Artifact | None
    data: Dataset
    work_dir: Path  # stages/<name>/ inside the run directory
    precision: str  # resolved: fp32 | bf16 | fp16
    log: Callable[[dict[str, Any]], None]  # appends one step-metrics record
    resume_from: Path | None = None  # a trainer checkpoint to continue from
    artifacts: dict[str, Artifact] = field(default_factory=dict)  # earlier stages, by name
    extra_callbacks: list[Any] = field(default_factory=list)
    snapshot_every: tuple[int, ...] = ()  # save the model at these step intervals (evals)


@dataclass
class StageResult:
    artifact: Artifact
    summary: dict[str, Any]  # losses, parameter counts, steps, tokens, memory


# (path under the stage's entry, what was expected, what was found, the fix)
Problem = tuple[tuple[Any, ...], str, str, str]


@dataclass(frozen=True)
class Footprint:
    """What `ftlab plan` needs to know of a method's training step."""

    weights: str = "lora"  # how the trained weights are held: full | lora | qlora | dora | ia3 …
    rows: int = 1  # sequences forwarded per example (2 for preference pairs)
    generated: int = 0  # tokens generated onto each prompt (online methods)
    reward_models: int = 0  # frozen reward-model copies held beside the policy
    value_head: bool = False  # PPO's value head
    logits: bool = True  # vocabulary logits (a reward model has a scalar head)
    optimizer: str = ""  # the optimizer it really uses, where it ignores train.optimizer
    notes: tuple[str, ...] = ()


class Method(ABC):
    """A training method: subclass this, set what differs from the defaults, and register
    an instance in its own module (`METHODS.register("name")`). Everything the loader,
    the planner, the run table and the stage hash need to know of a method is declared
    here; none of them names a method."""

    data_formats: tuple[str, ...] = ()
    """Dataset formats a stage of this method trains on."""
    params_model: type[BaseModel] = NoParams
    """Its `params:` (in `ftlab schema`, did-you-mean for a misspelt key)."""
    adapter_keys: tuple[str, ...] = ()
    """The `adapter:` settings it reads: the stage hash covers these and no others."""
    weights: str = "adapter"
    """What its artifact holds: `adapter` (on a base) or `full` weights."""
    generates: bool = True
    """Its model writes text: evals run on it, a judge compares with it (a reward model
    scores instead)."""
    distributed: bool = True
    """It trains across processes (`resources.processes` > 1)."""
    figures: tuple[tuple[str, str], ...] = ()
    """(summary key, label): its headline figures in the run table."""

    @abstractmethod
    def train(self, ctx: StageContext) -> StageResult:
        """Train one stage: its artifact and summary."""

    def hash_inputs(self, stage: StageSpec) -> dict[str, Any]:
        """The stage settings this method reads (see `stage_inputs`): the stage hash
        covers these and nothing else, so a setting it ignores never retrains it."""
        return stage_inputs(stage, adapter=self.adapter_keys)

    def check(self, stage: StageSpec, spec: Spec) -> list[Problem]:
        """Cross-checks of its stage against the rest of the spec (`ftlab validate`)."""
        return []

    def template_problem(self, stage: StageSpec, spec: Spec, template: Any) -> Problem | None:
        """Whether the model's chat template can format what this stage trains on."""
        return None

    def footprint(self, stage: StageSpec) -> Footprint:
        return Footprint(weights="lora" if self.weights == "adapter" else "full")

    def objective(self, stage: StageSpec) -> str:
        """What the stage's train/eval loss measures: two stages' losses are compared only
        when these are equal (and their held-out data is). Default: the method and its
        params (a DPO beta changes the loss's scale)."""
        import json

        return f"{stage.method}:{json.dumps(stage.params, sort_keys=True)}"

    def steps(self, stage: StageSpec, lengths: list[int], processes: int) -> Steps:
        """Optimizer steps of a stage whose examples have these token lengths."""
        t = stage.train
        return trainer_steps(
            samples=packed(lengths, t.max_length) if t.packing else len(lengths),
            batch=t.batch_size,
            grad_accum=t.grad_accum,
            processes=processes,
            epochs=t.epochs,
            max_steps=t.max_steps,
        )

    def summary_figures(self, summary: dict[str, Any]) -> list[str]:
        """Its figures of a stage summary, as the run table shows them."""
        figures = [
            f"{label} {summary[key]:.3f}"
            for key, label in self.figures
            if isinstance(summary.get(key), int | float)
        ]
        if sel := summary.get("selected"):  # `select:` kept another step than the last
            best = {"maximize": ", max", "minimize": ", min"}.get(sel.get("direction"), "")
            figures.append(
                f"kept step {sel['step']}/{summary.get('steps')} ({sel['metric']}{best})"
            )
        return figures


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite: the stage fails instead of finishing with
    a broken model (the message names the step and what to change)."""


def check_finite(record: dict[str, Any], *, stage: str) -> None:
    """Raise `TrainingDiverged` when a logged training loss is NaN or infinite."""
    import math

    for key in ("loss", "policy_loss", "value_loss"):
        value = record.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainingDiverged(
                f"stage {stage}: the training {key} became {value} at step {record.get('step')}; "
                "lower train.learning_rate (or set train.max_grad_norm), and check the data"
            )


LORA_KEYS = ("r", "alpha", "dropout", "target_modules", "rslora", "loraplus_lr_ratio")
QUANT_KEYS = ("quant_type", "double_quant")


def stage_inputs(stage: StageSpec, *, adapter: tuple[str, ...]) -> dict[str, Any]:
    """A stage's settings for its hash: everything but its name and `select:` (hashed
    apart, see runner/stagehash.py), with the `adapter:` block cut to the keys the method
    uses (`full` uses none)."""
    data = stage.model_dump(mode="json", by_alias=True, exclude={"name", "select"})
    data["adapter"] = {k: v for k, v in data["adapter"].items() if k in adapter}
    return data
