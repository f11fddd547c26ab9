"""What a training method is, and what a stage hands it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from ftlab.runner.data import Dataset
from ftlab.runner.models import ModelRef
from ftlab.runner.spec.schema import Spec, StageSpec


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


@dataclass
class StageResult:
    artifact: Artifact
    summary: dict[str, Any]  # losses, parameter counts, steps, tokens, memory


class Method(Protocol):
    """A training method: one module, registered by name in `ftlab.runner.methods`."""

    data_formats: tuple[str, ...]
    params_model: type[BaseModel]

    def train(self, ctx: StageContext) -> StageResult: ...

    def hash_inputs(self, stage: StageSpec) -> dict[str, Any]:
        """The stage settings this method reads (see `stage_inputs`): the stage hash
        covers these and nothing else, so a setting it ignores never retrains it."""
        ...


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
    """A stage's settings for its hash: everything but its name, with the `adapter:`
    block cut to the keys the method uses (`full` uses none)."""
    data = stage.model_dump(mode="json", by_alias=True, exclude={"name"})
    data["adapter"] = {k: v for k, v in data["adapter"].items() if k in adapter}
    return data
