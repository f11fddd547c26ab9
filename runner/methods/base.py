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
