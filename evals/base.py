"""What an eval kind is, and what it is handed.

An eval kind reads a loaded model (or, for judges, an endpoint) and the rows of one
dataset, and returns metrics (each with an interval) plus one record per item. It never
sees the spec loader: the runner resolves datasets and models and calls `run`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class Metric:
    value: float
    low: float | None = None  # 95% interval, when the metric has one
    high: float | None = None
    n: int = 0  # items behind it

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


@dataclass
class EvalInput:
    model: Any  # a causal LM in eval mode, on its device
    tokenizer: Any
    rows: list[dict[str, Any]]  # normalised rows of the eval's dataset (see runner.data)
    params: Any  # the kind's params model, validated
    seed: int = 42
    target: str = "last"  # which model this is (for progress bars and messages)
    base_dir: Path = Path(".")  # the spec's folder: relative paths in params resolve here
    cache_dir: Path = Path(".")  # where a kind may keep its own cache (judge calls)
    limit: int | None = None  # the eval's `limit:` (kinds without rows apply it themselves)
    # kinds that judge generated text get this model's replies to `rows`, and those of
    # the model it is compared with (`against:`), generated and cached by the runner
    responses: list[str] | None = None
    other_responses: list[str] | None = None
    calibration_rows: list[dict[str, Any]] | None = None  # held-out human preference pairs
    train_rows: list[dict[str, Any]] | None = None  # what the run trained on (contamination)
    resolve_model: Callable[[str], str] | None = None  # a model name (e.g. tiny) → folder
    quiet: bool = False  # no progress bars (measured during training, for a pruner)


@dataclass
class EvalOutput:
    metrics: dict[str, Metric]
    samples: list[dict[str, Any]] = field(default_factory=list)
    # every sample: {"item": stable id, "scores": {metric: value}, ...fields to show}
    headline: str = ""  # overrides the kind's headline metric (e.g. an lm-eval task's)
    notes: list[str] = field(default_factory=list)  # shown with the results (stand-in judge)


class EvalError(RuntimeError):
    """An eval that cannot run as configured; the message says what to change."""


class EvalKind(Protocol):
    """One eval kind, registered by name in `ftlab.runner.evaluate.EVALS`."""

    data_formats: tuple[str, ...]  # dataset formats it reads
    params_model: type[BaseModel]
    headline: str  # the metric shown in run tables
    higher_is_better: bool

    def run(self, inp: EvalInput) -> EvalOutput: ...


def item_id(row: dict[str, Any]) -> str:
    """A stable id from an item's content, so runs pair up item by item whatever the
    order or subset they evaluated."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
