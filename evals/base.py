"""What an eval kind is, and what it is handed.

An eval kind reads a loaded model (or, for judges, an endpoint) and the rows of one
dataset, and returns metrics (each with an interval) plus one record per item. It never
sees the spec loader: the runner resolves datasets and models and calls `run`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ftlab.runner.registry import Registry


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
    # held-out rows of the datasets the kind reads besides `data:` (EvalKind.datasets)
    datasets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    train_rows: list[dict[str, Any]] | None = None  # what the run trained on (contamination)
    resolve_model: Callable[[str], str] | None = None  # a model name (e.g. tiny) → folder
    # a stage named by EvalKind.stages → (model, tokenizer, identity of its weights)
    load_stage: Callable[[str], tuple[Any, Any, str]] | None = None
    quiet: bool = False  # no progress bars (measured during training, for a pruner)
    reuse: bool = True  # the spec's output.reuse: False = a kind reads none of its caches


@dataclass
class EvalOutput:
    metrics: dict[str, Metric]
    samples: list[dict[str, Any]] = field(default_factory=list)
    # every sample: {"item": stable id, "scores": {item score: value}, ...fields to show}.
    # Text fields are shown in the report's explorer; a field `verdict` or
    # `verdict_<position>` holding {"verdict", "raw", "retried"?} is a grader's verdict:
    # indexed in DuckDB's judge_verdicts (position = what follows `verdict_`) and shown.
    headline: str = ""  # overrides the kind's headline metric (e.g. an lm-eval task's)
    notes: list[str] = field(default_factory=list)  # shown with the results (stand-in judge)


class EvalError(RuntimeError):
    """An eval that cannot run as configured; the message says what to change."""


class NoParams(BaseModel):
    """Kinds without parameters accept an empty `params:`."""

    model_config = ConfigDict(extra="forbid")


# (path under the eval's entry, e.g. ("params", "against"); what was expected; what was
# found; the fix)
Problem = tuple[tuple[Any, ...], str, str, str]


class EvalKind(ABC):
    """An eval kind: subclass this, set what differs from the defaults, and register it in
    its own module with `@EVALS.register("name")`. Everything the runner, the sweeps and
    the reports need to know of a kind is declared here; none of them names a kind."""

    data_formats: tuple[str, ...] = ()
    """Dataset formats it reads from `data:`; () = it brings its own items (lm-eval tasks)."""
    params_model: type[BaseModel] = NoParams
    """Its `params:` (in `ftlab schema`, did-you-mean for a misspelt key)."""
    headline: str = ""
    """The metric run tables show."""
    higher_is_better: bool = True
    needs_model: bool = True
    """It reads the evaluated model itself (the runner loads it)."""
    needs_responses: bool = False
    """It scores the model's replies to the rows' prompts, which the runner generates and
    caches (settings: its params' `generation` field, a `generate.GenerationParams`, if it
    has one); with `against`, the other model's replies too."""
    in_loop: bool = False
    """Cheap enough to measure at every evaluation during training (a sweep's pruner)."""
    item_scores: dict[str, str] = {}
    """Aggregate metric → the per-item score it is the mean of, where the names differ
    (comparisons pair runs on these; a metric not listed is its own item score)."""
    details: tuple[tuple[str, str], ...] = ()
    """(metric, label) shown under the run table: what makes its headline trustworthy."""

    @abstractmethod
    def run(self, inp: EvalInput) -> EvalOutput:
        """Score the rows (or the kind's own items): metrics and one sample per item."""

    def fingerprint(self, params: Any, base_dir: Path) -> str:
        """A hash of files it reads itself (task YAMLs, a rubric): part of its cache key."""
        return ""

    def against(self, params: Any) -> str | None:
        """The model (`base` or a stage) whose replies this one's are compared with."""
        return None

    def datasets(self, params: Any) -> dict[str, str]:
        """Datasets it reads besides `data:`, by role ({"calibration": "prefs"}): their
        held-out rows reach `run` and their content hashes its cache key."""
        return {}

    def stages(self, params: Any) -> list[str]:
        """Stages whose trained models it uses besides the models it scores (a trained
        judge): runs train them, their identities enter its cache key, `run` loads them
        with `EvalInput.load_stage`, and they are not policies (`on: all` skips them)."""
        return []

    def check(self, params: dict[str, Any], spec: Any) -> list[Problem]:
        """Cross-checks of its `params:` against the rest of the spec (stages, datasets),
        run by `ftlab validate` after the params model validated."""
        return []


EVALS: Registry[EvalKind] = Registry("eval kind", base=EvalKind)


def item_id(row: dict[str, Any]) -> str:
    """A stable id from an item's content, so runs pair up item by item whatever the
    order or subset they evaluated."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
