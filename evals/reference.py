"""Eval kinds that score a model's replies against the data's reference replies:
`exact_match` (after normalisation), `json_match` (valid JSON, then per-field accuracy
against the reference object), `rouge` (rouge-score) and `chrf` (sacrebleu). Every item
gets its own score, so comparisons pair runs on the same items."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ftlab.evals.base import EVALS, EvalError, EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.evals.checks import ALL_FORMATS, parse_json
from ftlab.evals.generate import GenerationParams, reference, user_prompt
from ftlab.reports.stats import bootstrap_mean, wilson

Normalise = Literal["strip", "lower", "punctuation", "whitespace", "articles"]
_STEPS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "punctuation": lambda s: s.translate(str.maketrans("", "", string.punctuation)),
    "whitespace": lambda s: " ".join(s.split()),
    "articles": lambda s: re.sub(r"\b(a|an|the)\b", " ", s),
}


def _strip_only() -> list[Normalise]:
    return ["strip"]


class ExactMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    normalise: list[Normalise] = Field(default_factory=_strip_only)
    """Applied to reply and reference, in this order, before comparing: strip, lower,
    punctuation (removed), whitespace (runs collapsed), articles (a/an/the removed) —
    SQuAD's normalisation is [lower, punctuation, articles, whitespace]."""
    generation: GenerationParams = GenerationParams()
    """How the model writes its replies."""


class JsonMatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: list[str] = []
    """Fields compared (dotted paths into nested objects, e.g. `customer.name`); empty:
    every top-level field of each reference object."""
    generation: GenerationParams = GenerationParams()
    """How the model writes its replies."""


class OverlapParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generation: GenerationParams = GenerationParams()
    """How the model writes its replies."""


class _ReferenceEval(EvalKind):
    data_formats: tuple[str, ...] = ALL_FORMATS
    needs_responses: bool = True

    def _pairs(self, inp: EvalInput) -> list[tuple[dict[str, Any], str, str]]:
        out = []
        for row, reply in zip(inp.rows, inp.responses or [], strict=True):
            ref = reference(row)
            if ref is None:
                raise EvalError(
                    "this eval compares replies with the data's reference replies, and a row "
                    f"has none ({user_prompt(row)[:60]!r}): give every row a reference "
                    "(format prompts: a `reference` field; messages: the assistant turn)"
                )
            out.append((row, reply, ref))
        return out

    @staticmethod
    def _sample(row: dict[str, Any], reply: str, ref: str, **scores: float) -> dict[str, Any]:
        return {
            "item": item_id(row),
            "prompt": user_prompt(row),
            "response": reply,
            "reference": ref,
            "scores": scores,
        }


@EVALS.register("exact_match")
class ExactMatchEval(_ReferenceEval):
    params_model: type[BaseModel] = ExactMatchParams
    headline: str = "exact_match"
    item_scores = {"exact_match": "match"}

    def run(self, inp: EvalInput) -> EvalOutput:
        p: ExactMatchParams = inp.params

        def norm(text: str) -> str:
            for step in p.normalise:
                text = _STEPS[step](text)
            return text

        samples = [
            self._sample(row, reply, ref, match=float(norm(reply) == norm(ref)))
            for row, reply, ref in self._pairs(inp)
        ]
        metrics = _aggregate(samples, self.item_scores, inp.seed, binary=("match",))
        return EvalOutput(metrics=metrics, samples=samples)


_MISSING = object()


def _field(value: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


@EVALS.register("json_match")
class JsonMatchEval(_ReferenceEval):
    params_model: type[BaseModel] = JsonMatchParams
    headline: str = "field_accuracy"
    item_scores = {"json_valid": "valid", "field_accuracy": "fields", "all_fields": "all"}
    details = (("json_valid", "valid JSON"),)

    def run(self, inp: EvalInput) -> EvalOutput:
        p: JsonMatchParams = inp.params
        samples = []
        pairs = self._pairs(inp)
        refs = [parse_json(ref)[0] for _, _, ref in pairs]
        nowhere = [f for f in p.fields if all(_field(r, f) is _MISSING for r in refs)]
        if nowhere and pairs:
            raise EvalError(
                f"json_match fields {', '.join(nowhere)}: in no reference object (a typo? "
                "the references have: "
                f"{', '.join(sorted({k for r in refs if isinstance(r, dict) for k in r}))})"
            )
        for row, reply, ref in pairs:
            expected, why = parse_json(ref)
            if not isinstance(expected, dict):
                raise EvalError(
                    f"json_match needs reference replies that are JSON objects; one is not "
                    f"({why or type(expected).__name__}): {ref[:80]!r}"
                )
            got, _ = parse_json(reply)
            fields = p.fields or sorted(expected)
            right = [
                isinstance(got, dict) and _field(got, f) == _field(expected, f) for f in fields
            ]
            share = sum(right) / len(right) if right else 0.0
            samples.append(
                self._sample(
                    row,
                    reply,
                    ref,
                    valid=float(isinstance(got, dict)),
                    fields=share,
                    all=float(bool(right) and all(right)),
                )
            )
        metrics = _aggregate(samples, self.item_scores, inp.seed, binary=("valid", "all"))
        return EvalOutput(metrics=metrics, samples=samples)


def _aggregate(
    samples: list[dict[str, Any]], names: dict[str, str], seed: int, binary: tuple[str, ...] = ()
) -> dict[str, Metric]:
    """metric → the mean of its per-item score, with a Wilson interval for 0/1 scores and
    a bootstrap one otherwise."""
    n = len(samples)
    out = {}
    for metric, score in names.items():
        values = [s["scores"][score] for s in samples]
        mean = sum(values) / n if n else float("nan")
        interval = (
            wilson(int(sum(values)), n) if score in binary else bootstrap_mean(values, seed=seed)
        )
        out[metric] = Metric(mean, *interval, n=n)
    return out


@EVALS.register("rouge")
class RougeEval(_ReferenceEval):
    """ROUGE-1/2/L F1 per item (Google's rouge-score, with stemming), averaged."""

    params_model: type[BaseModel] = OverlapParams
    headline: str = "rougeL"

    def run(self, inp: EvalInput) -> EvalOutput:
        from rouge_score import rouge_scorer

        kinds = ("rouge1", "rouge2", "rougeL")
        scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
        samples = []
        for row, reply, ref in self._pairs(inp):
            got = scorer.score(ref, reply)
            samples.append(self._sample(row, reply, ref, **{k: got[k].fmeasure for k in kinds}))
        metrics = _aggregate(samples, {k: k for k in kinds}, inp.seed)
        return EvalOutput(metrics=metrics, samples=samples)


@EVALS.register("chrf")
class ChrfEval(_ReferenceEval):
    """chrF per item (sacrebleu's sentence_chrf, 0–100), averaged."""

    params_model: type[BaseModel] = OverlapParams
    headline: str = "chrf"

    def run(self, inp: EvalInput) -> EvalOutput:
        from sacrebleu.metrics import CHRF

        chrf = CHRF()
        samples = [
            self._sample(row, reply, ref, chrf=chrf.sentence_score(reply, [ref]).score)
            for row, reply, ref in self._pairs(inp)
        ]
        return EvalOutput(metrics=_aggregate(samples, {"chrf": "chrf"}, inp.seed), samples=samples)


EXACT_MATCH = ExactMatchEval()
JSON_MATCH = JsonMatchEval()
ROUGE = RougeEval()
CHRF_EVAL = ChrfEval()
