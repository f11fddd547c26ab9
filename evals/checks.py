"""Eval-side checks that need no judge: `format` adherence of generated replies, and
`contamination` (n-gram overlap between the training data and an eval set)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftlab.evals.base import EVALS, EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.evals.generate import PROMPT_FORMATS, GenerationParams, user_prompt
from ftlab.reports.stats import bootstrap_mean, wilson

ALL_FORMATS = PROMPT_FORMATS
JsonType = Literal["object", "array", "string", "number", "boolean", "null"]


def _objects_only() -> list[JsonType]:
    return ["object"]


class FormatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: Literal["json", "json_schema", "regex"] = "json"
    """json: the reply parses as JSON; json_schema: and matches `schema`; regex: the reply
    matches `pattern` (re.search; anchor it with ^…$ for a full match)."""
    json_types: list[JsonType] = Field(default_factory=_objects_only, min_length=1)
    """check: json: the top-level JSON types that count as adhering. Default: an object
    (a bare number or string parses as JSON but is rarely what "answer in JSON" means);
    e.g. [object, array]."""
    schema_: dict[str, Any] = Field({}, alias="schema")
    """JSON Schema for check: json_schema."""
    pattern: str = ""
    """Regular expression for check: regex."""
    generation: GenerationParams = GenerationParams()
    """How the model writes its replies."""

    @model_validator(mode="after")
    def _needs(self) -> FormatParams:
        if self.check == "json_schema" and not self.schema_:
            raise ValueError("check: json_schema needs a schema: {...}")
        if self.check == "regex":
            if not self.pattern:
                raise ValueError("check: regex needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


def parse_json(reply: str) -> tuple[Any, str]:
    """(the reply's JSON value, "") or (None, why not); a ```json fence around it is
    allowed."""
    text = reply.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)  # ```json … ```
    try:
        return json.loads(fenced.group(1) if fenced else text), ""
    except ValueError as exc:
        return None, f"not JSON: {exc}"


def _adheres(reply: str, p: FormatParams) -> tuple[bool, str]:
    if p.check == "regex":
        return (re.search(p.pattern, reply) is not None, "")
    value, why = parse_json(reply)
    if why:
        return (False, why)
    if p.check == "json":
        kind = _json_type(value)
        if kind not in p.json_types:
            return (False, f"JSON {kind}, expected {' or '.join(p.json_types)}")
        return (True, "")
    import jsonschema

    try:
        jsonschema.validate(value, p.schema_)
    except jsonschema.ValidationError as exc:
        return (False, f"schema: {exc.message}")
    return (True, "")


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


@EVALS.register("format")
class FormatEval(EvalKind):
    item_scores = {"adherence": "adheres"}
    data_formats: tuple[str, ...] = ALL_FORMATS
    params_model: type[BaseModel] = FormatParams
    headline: str = "adherence"
    higher_is_better: bool = True
    needs_responses: bool = True

    def run(self, inp: EvalInput) -> EvalOutput:
        p: FormatParams = inp.params
        samples = []
        for row, reply in zip(inp.rows, inp.responses or [], strict=True):
            ok, why = _adheres(reply, p)
            samples.append(
                {
                    "item": item_id(row),
                    "prompt": user_prompt(row),
                    "response": reply,
                    "reason": why,
                    "scores": {"adheres": float(ok)},
                }
            )
        n = len(samples)
        k = sum(int(s["scores"]["adheres"]) for s in samples)
        return EvalOutput(
            metrics={"adherence": Metric(k / n if n else float("nan"), *wilson(k, n), n=n)},
            samples=samples,
        )


class ContaminationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(8, ge=2)
    """n-gram length in words (13 is common for long documents; 8 suits short chats)."""
    item_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """An eval item counts as contaminated when this share of its n-grams occur in the
    training data."""
    warn_above: float = Field(0.05, ge=0.0, le=1.0)
    """Warn when more than this share of the eval items are contaminated."""
    show: int = Field(3, ge=0)
    """How many overlapping examples the warning shows."""


def _text(row: dict[str, Any]) -> str:
    parts: list[str] = []
    for key, value in row.items():
        if key == "messages" and isinstance(value, list):
            parts += [str(m.get("content", "")) for m in value if isinstance(m, dict)]
        elif isinstance(value, str):
            parts.append(value)
    return " ".join(parts)


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@EVALS.register("contamination")
class ContaminationEval(EvalKind):
    item_scores = {"contaminated_rate": "contaminated", "mean_overlap": "overlap"}
    data_formats: tuple[str, ...] = ALL_FORMATS
    params_model: type[BaseModel] = ContaminationParams
    headline: str = "contaminated_rate"
    higher_is_better: bool = False
    needs_model: bool = False

    def run(self, inp: EvalInput) -> EvalOutput:
        p: ContaminationParams = inp.params
        train: set[tuple[str, ...]] = set()
        for row in inp.train_rows or []:
            train |= ngrams(_text(row), p.n)
        samples = []
        for row in inp.rows:
            grams = ngrams(_text(row), p.n)
            overlap = len(grams & train) / len(grams) if grams else 0.0
            samples.append(
                {
                    "item": item_id(row),
                    "text": _text(row)[:500],
                    "scores": {
                        "overlap": overlap,
                        "contaminated": float(overlap >= p.item_threshold),
                    },
                }
            )
        n = len(samples)
        k = sum(int(s["scores"]["contaminated"]) for s in samples)
        overlaps = [s["scores"]["overlap"] for s in samples]
        rate = k / n if n else 0.0
        notes = []
        if rate > p.warn_above:
            worst = sorted(samples, key=lambda s: -s["scores"]["overlap"])[: p.show]
            examples = "; ".join(f"{s['scores']['overlap']:.0%}: {s['text'][:80]!r}" for s in worst)
            notes.append(
                f"warning: {k} of {n} eval items ({rate:.0%}) share ≥{p.item_threshold:.0%} of "
                f"their {p.n}-grams with the training data — scores on them measure memory, not "
                f"skill. Most overlapping: {examples}"
            )
        return EvalOutput(
            metrics={
                "contaminated_rate": Metric(rate, *wilson(k, n), n=n),
                "mean_overlap": Metric(
                    sum(overlaps) / n if n else 0.0, *bootstrap_mean(overlaps, seed=inp.seed), n=n
                ),
            },
            samples=samples,
            notes=notes,
        )


FORMAT = FormatEval()
CONTAMINATION = ContaminationEval()
