"""`judge`: LLM-as-judge on the replies a model generates.

Modes: `pairwise` (this model's reply against another model's — `against: base` or a
stage — or against the data's reference replies), `single` (a 1–10 rubric score) and
`reference` (a 1–10 grade against the reference reply). Pairwise verdicts are taken in
both orders; a verdict that flips with the order counts as a tie, and the share of items
whose verdict survives the swap is reported as `position_consistency`. Verdicts must
follow a strict format: one retry with a reminder, then `unparsable`, never a guess. Local
judges can instead compare P(A) and P(B) (`verdicts: logprob`). Every call is cached by
(judge, template, rubric, conversation), so judging the same replies again costs nothing.
Given held-out human preference pairs (`calibration: <preference dataset>`), the judge's
agreement with them is measured and stored with its results.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ftlab.evals.backends import Backend, Conversation, LocalBackend, OpenAIBackend
from ftlab.evals.base import (
    EVALS,
    EvalError,
    EvalInput,
    EvalKind,
    EvalOutput,
    Metric,
    Problem,
    item_id,
)
from ftlab.evals.generate import PROMPT_FORMATS, reference, user_prompt
from ftlab.evals.judge_params import JudgeParams, JudgeStage
from ftlab.evals.judge_prompts import (
    DEFAULT_RUBRIC,
    PAIRWISE,
    REMINDER,
    SCORE,
    SINGLE,
    TEMPLATE_VERSION,
    VERDICT,
    _parse,
    rubric_text,
)
from ftlab.reports.stats import (
    bootstrap_lc,
    bootstrap_mean,
    length_controlled_win_rate,
    length_feature,
    wilson,
)
from ftlab.runner.registry import did_you_mean

STAND_IN = (
    "judge: the embedded `tiny` model stands in for a real judge (pretrained on support "
    "transcripts, never taught to judge): these verdicts show the machinery, not the "
    "replies' quality"
)


@EVALS.register("judge")
class JudgeEval(EvalKind):
    item_scores = {"win_rate": "win", "position_consistency": "consistent"}
    details = (
        ("position_consistency", "position consistency"),
        ("calibration_agreement", "agreement with held-out human preferences"),
        ("calibration_consistency", "position consistency on them"),
        ("lc_win_rate", "length-controlled win rate"),
        ("unparsable_rate", "unparsable"),
    )
    data_formats: tuple[str, ...] = PROMPT_FORMATS
    params_model: type[BaseModel] = JudgeParams
    headline: str = "win_rate"
    higher_is_better: bool = True
    needs_responses: bool = True

    def against(self, params: JudgeParams) -> str | None:
        """The model whose replies this one is compared with (None: none or references)."""
        if params.mode == "pairwise" and params.against != "reference":
            return params.against
        return None

    def fingerprint(self, params: JudgeParams, base_dir: Path) -> str:
        return hashlib.sha256(rubric_text(params.rubric, base_dir).encode()).hexdigest()[:16]

    def datasets(self, params: JudgeParams) -> dict[str, str]:
        return {"calibration": params.calibration} if params.calibration else {}

    def stages(self, params: JudgeParams) -> list[str]:
        return [params.judge_model.stage] if isinstance(params.judge_model, JudgeStage) else []

    def check(self, params: dict[str, Any], spec: Any) -> list[Problem]:
        """`against:` names a model of this spec; `calibration:` a preference dataset
        with held-out pairs."""
        problems: list[Problem] = []
        policy = spec.policy_stages()
        against, options = params.get("against"), ["base", "reference", *policy]
        if isinstance(against, str) and against not in options:
            problems.append(
                (
                    ("params", "against"),
                    f"base, reference, or a policy stage ({', '.join(policy)})",
                    against,
                    did_you_mean(against, options).strip(),
                )
            )
        problems += _judge_model_problems(params.get("judge_model"), spec)
        problems += _rubric_mismatch(params, spec)
        calibration = params.get("calibration")
        if isinstance(calibration, str) and calibration:
            source = spec.data.get(calibration)
            if source is None or source.format != "preference" or not source.val_fraction:
                problems.append(
                    (
                        ("params", "calibration"),
                        "a preference dataset under data: with val_fraction > 0 (its "
                        "held-out pairs are the human judgements)",
                        calibration
                        if source is None
                        else f"'{calibration}' ({source.format}, val_fraction "
                        f"{source.val_fraction})",
                        did_you_mean(
                            calibration,
                            [n for n, d in spec.data.items() if d.format == "preference"],
                        ).strip()
                        or "name a dataset with format: preference and val_fraction > 0",
                    )
                )
        return problems

    def run(self, inp: EvalInput) -> EvalOutput:
        p: JudgeParams = inp.params
        judge = Judge(
            p, backend_for(p, inp), rubric_text(p.rubric, inp.base_dir), inp.cache_dir, inp.reuse
        )
        prompts = [user_prompt(r) for r in inp.rows]
        replies = inp.responses or []
        notes = [STAND_IN] if p.judge_model == "tiny" else []
        if p.mode == "pairwise":
            if p.against == "reference":
                others = [reference(r) for r in inp.rows]
                if any(o is None for o in others):
                    raise EvalError("against: reference needs rows with a reference reply")
            else:
                others = list(inp.other_responses or [])
            out = judge.pairwise(prompts, replies, [str(o) for o in others], inp.rows, inp.seed)
        else:
            refs = [reference(r) for r in inp.rows] if p.mode == "reference" else None
            if refs is not None and any(r is None for r in refs):
                raise EvalError("mode: reference needs rows with a reference reply")
            out = judge.single(prompts, replies, refs, inp.rows, inp.seed)
        if inp.datasets.get("calibration"):
            out.metrics.update(judge.calibrate(inp.datasets["calibration"]))
        out.metrics["judge_calls"] = Metric(float(judge.backend.calls), n=len(prompts))
        out.notes += notes
        return out


JUDGE = JudgeEval()


def _rubric_mismatch(params: dict[str, Any], spec: Any) -> list[Problem]:
    """A judge a stage trains is asked with the rubric its training prompts carried."""
    judge = params.get("judge_model")
    stage = judge.get("stage") if isinstance(judge, dict) else None
    trains = next((st for st in spec.stages if st.name == stage), None)
    if trains is None or not trains.data:
        return []
    source = spec.data.get(trains.data)
    if source is None or source.convert != "pairs_to_judge":
        return []
    asked = params.get("rubric") or DEFAULT_RUBRIC
    if not isinstance(asked, str) or Path(asked).stem == Path(source.rubric).stem:
        return []
    return [
        (
            ("params", "rubric"),
            f"the rubric judge stage {stage} trained with (data.{trains.data}.rubric: "
            f"{source.rubric})",
            asked,
            f"set rubric: {source.rubric} (a judge asked with another rubric than it "
            "learnt sees prompts it never trained on)",
        )
    ]


def _judge_model_problems(judge: Any, spec: Any) -> list[Problem]:
    """`judge_model: {stage: NAME}` names a stage before the last; a stage's name given
    as a plain model name gets the right spelling."""
    problems: list[Problem] = []
    stages = [st.name for st in spec.stages]
    stage = judge.get("stage") if isinstance(judge, dict) else None
    if isinstance(stage, str) and stage not in stages[:-1]:
        if stage == stages[-1]:
            hint = (
                f"move stage {stage} above stage {stages[-2] if len(stages) > 1 else ''} "
                "in stages: (the last stage is the model under test, never its judge)"
            )
        else:
            hint = did_you_mean(stage, stages[:-1]).strip() or (
                "add a stage that trains the judge (e.g. method: full on data with "
                "convert: pairs_to_judge) before the last stage"
            )
        problems.append(
            (
                ("params", "judge_model", "stage"),
                "a stage of this spec before the last one (the last stage is the model "
                f"under test): {', '.join(stages[:-1]) or 'none'}",
                stage,
                hint,
            )
        )
    if isinstance(judge, str) and judge in stages:
        problems.append(
            (
                ("params", "judge_model"),
                "a model name or folder, or {stage: NAME} for a judge a stage trains",
                judge,
                f"'{judge}' is a stage of this spec: write judge_model: {{stage: {judge}}}",
            )
        )
    return problems


def backend_for(p: JudgeParams, inp: EvalInput) -> Backend:
    if p.backend == "openai":
        return OpenAIBackend(
            base_url=p.base_url,
            model=str(p.judge_model),
            api_key_env=p.api_key_env,
            concurrency=p.concurrency,
            timeout_s=p.timeout_s,
            max_retries=p.max_retries,
            backoff_s=p.backoff_s,
            max_tokens=p.max_judge_tokens,
        )
    if isinstance(p.judge_model, JudgeStage):
        if inp.load_stage is None:
            raise EvalError(f"judge stage {p.judge_model.stage}: no trained stages here")
        loaded = inp.load_stage(p.judge_model.stage)
        return LocalBackend("", max_new_tokens=p.max_judge_tokens, loaded=loaded)
    path = inp.resolve_model(p.judge_model) if inp.resolve_model else p.judge_model
    return LocalBackend(path, max_new_tokens=p.max_judge_tokens)


class Judge:
    """Verdicts with caching, strict parsing and one reminder retry."""

    def __init__(
        self, p: JudgeParams, backend: Backend, rubric: str, cache_dir: Path, reuse: bool = True
    ) -> None:
        self.reuse = reuse
        self.p, self.backend, self.rubric = p, backend, rubric
        (cache_dir / "judge").mkdir(parents=True, exist_ok=True)  # the `judge` namespace
        self.db = sqlite3.connect(cache_dir / "judge" / "calls.sqlite", timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT)")

    # -- cache
    def _key(self, conversation: Conversation, method: str) -> str:
        blob = json.dumps(
            [
                self.backend.identity,
                TEMPLATE_VERSION,
                method,
                self.p.max_judge_tokens,
                conversation,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cached(self, keys: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in keys if self.reuse else []:
            row = self.db.execute("SELECT value FROM calls WHERE key = ?", [key]).fetchone()
            if row:
                out[key] = json.loads(row[0])
        return out

    def _store(self, items: dict[str, Any]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO calls VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in items.items()],
        )
        self.db.commit()

    # -- asking
    def ask(self, conversations: list[Conversation], kind: str) -> list[dict[str, Any]]:
        """{"verdict": "A"|"B"|"tie"|<score>|"unparsable"|"error", "raw": text} each."""
        method = self.p.verdicts if kind == "pairwise" else "text"
        keys = [self._key(c, f"{kind}:{method}") for c in conversations]
        known = self._cached(keys)
        todo = [i for i, k in enumerate(keys) if k not in known]
        if todo:
            fresh = (
                self._logprob([conversations[i] for i in todo])
                if method == "logprob"
                else self._text([conversations[i] for i in todo], kind)
            )
            new = {keys[i]: v for i, v in zip(todo, fresh, strict=True)}
            self._store({k: v for k, v in new.items() if v["verdict"] != "error"})
            known.update(new)
        out = [known[k] for k in keys]
        if out and all(v["verdict"] == "error" for v in out):  # no verdict at all: not a 0.5
            raise EvalError(
                f"every one of {len(out)} judge calls failed (first: {out[0]['raw']}); check "
                "the judge's base_url, judge_model and the variable api_key_env names"
            )
        return out

    def _text(self, conversations: list[Conversation], kind: str) -> list[dict[str, Any]]:
        pattern = VERDICT if kind == "pairwise" else SCORE
        answers = self.backend.complete(conversations)
        results: list[dict[str, Any]] = [{} for _ in conversations]
        retry = []
        for i, ans in enumerate(answers):
            parsed = _parse(ans, pattern)
            results[i] = {"verdict": parsed, "raw": str(ans)}
            if parsed == "unparsable":
                retry.append(i)
        if retry:  # one reminder, then "unparsable" is the answer
            followups = [
                [
                    *conversations[i],
                    {"role": "assistant", "content": str(answers[i])},
                    {
                        "role": "user",
                        "content": REMINDER["pairwise" if kind == "pairwise" else "single"],
                    },
                ]
                for i in retry
            ]
            for i, ans in zip(retry, self.backend.complete(followups), strict=True):
                results[i] = {"verdict": _parse(ans, pattern), "raw": str(ans), "retried": True}
        return results

    def _logprob(self, conversations: list[Conversation]) -> list[dict[str, Any]]:
        backend = self.backend
        if not isinstance(backend, LocalBackend):
            raise EvalError("verdicts: logprob needs a local judge")
        scores = backend.option_logprobs(conversations, "Verdict:", ["A", "B"])
        return [
            {"verdict": "A" if a > b else "B", "raw": f"logP(A)={a:.3f} logP(B)={b:.3f}"}
            for a, b in scores
        ]

    # -- modes
    def _pair(self, prompt: str, a: str, b: str) -> Conversation:
        text = PAIRWISE.format(rubric=self.rubric, prompt=prompt, a=a, b=b)
        return [{"role": "user", "content": text}]

    def compare(
        self, prompts: list[str], first: list[str], second: list[str]
    ) -> list[dict[str, Any]]:
        """Per item: outcome for `first` (1 win, 0.5 tie, 0 loss, None unparsable/error),
        whether the verdict survived the position swap, and both raw verdicts."""
        ab = self.ask(
            [self._pair(q, a, b) for q, a, b in zip(prompts, first, second, strict=True)],
            "pairwise",
        )
        ba = (
            self.ask(
                [self._pair(q, b, a) for q, a, b in zip(prompts, first, second, strict=True)],
                "pairwise",
            )
            if self.p.swap
            else [None] * len(prompts)
        )
        out = []
        for v1, v2 in zip(ab, ba, strict=True):
            r1 = {"A": 1.0, "B": 0.0, "tie": 0.5}.get(v1["verdict"])
            r2 = None if v2 is None else {"A": 0.0, "B": 1.0, "tie": 0.5}.get(v2["verdict"])
            if r1 is None or (v2 is not None and r2 is None):
                outcome, consistent = None, None
            elif v2 is None:
                outcome, consistent = r1, None
            elif r1 == r2:
                outcome, consistent = r1, True
            else:  # the verdict flipped with the order: a tie
                outcome, consistent = 0.5, False
            out.append(
                {
                    "outcome": outcome,
                    "consistent": consistent,
                    "verdict_ab": v1,
                    "verdict_ba": v2,
                }
            )
        return out

    def pairwise(
        self,
        prompts: list[str],
        replies: list[str],
        others: list[str],
        rows: list[dict[str, Any]],
        seed: int,
    ) -> EvalOutput:
        results = self.compare(prompts, replies, others)
        samples = []
        for row, q, a, b, r in zip(rows, prompts, replies, others, results, strict=True):
            scores = {"len_diff": float(len(a) - len(b))}
            if r["outcome"] is not None:
                scores["win"] = r["outcome"]
            if r["consistent"] is not None:
                scores["consistent"] = float(r["consistent"])
            samples.append(
                {
                    "item": item_id(row),
                    "prompt": q,
                    "response": a,
                    "other": b,
                    "verdict_ab": r["verdict_ab"],
                    "verdict_ba": r["verdict_ba"],
                    "scores": scores,
                }
            )
        valid = [(s, r) for s, r in zip(samples, results, strict=True) if r["outcome"] is not None]
        n, total = len(valid), len(samples)
        wins = sum(r["outcome"] for _, r in valid)
        metrics = {
            "win_rate": Metric(wins / n if n else float("nan"), *wilson(wins, n), n=n),
            "unparsable_rate": Metric((total - n) / total if total else 0.0, n=total),
        }
        if n:
            ties = sum(1 for _, r in valid if r["outcome"] == 0.5)
            metrics["tie_rate"] = Metric(ties / n, *wilson(ties, n), n=n)
            outcomes = [r["outcome"] for _, r in valid]
            x = length_feature(
                [len(s["response"]) for s, _ in valid], [len(s["other"]) for s, _ in valid]
            )
            lc = length_controlled_win_rate(outcomes, x)
            lo, hi = bootstrap_lc(outcomes, x, seed)
            metrics["lc_win_rate"] = Metric(lc, lo, hi, n=n)
            swapped = [r["consistent"] for _, r in valid if r["consistent"] is not None]
            if swapped:
                k = sum(swapped)
                metrics["position_consistency"] = Metric(
                    k / len(swapped), *wilson(k, len(swapped)), n=len(swapped)
                )
        return EvalOutput(metrics=metrics, samples=samples)

    def single(
        self,
        prompts: list[str],
        replies: list[str],
        refs: list[str | None] | None,
        rows: list[dict[str, Any]],
        seed: int,
    ) -> EvalOutput:
        convs = []
        for i, (q, a) in enumerate(zip(prompts, replies, strict=True)):
            ref = f"\nReference reply (what a good reply contains):\n{refs[i]}\n" if refs else ""
            text = SINGLE.format(rubric=self.rubric, prompt=q, a=a, reference=ref)
            convs.append([{"role": "user", "content": text}])
        verdicts = self.ask(convs, "single")
        samples, values = [], []
        for row, q, a, v in zip(rows, prompts, replies, verdicts, strict=True):
            scores = {}
            if v["verdict"] not in ("unparsable", "error"):
                scores["score"] = float(v["verdict"])
                values.append(float(v["verdict"]))
            samples.append(
                {"item": item_id(row), "prompt": q, "response": a, "verdict": v, "scores": scores}
            )
        n = len(values)
        metrics = {
            "score": Metric(
                sum(values) / n if n else float("nan"), *bootstrap_mean(values, seed=seed), n=n
            ),
            "unparsable_rate": Metric(
                (len(samples) - n) / len(samples) if samples else 0.0, n=len(samples)
            ),
        }
        return EvalOutput(metrics=metrics, samples=samples, headline="score")

    def calibrate(self, pairs: list[dict[str, Any]]) -> dict[str, Metric]:
        """Agreement with human pairs (1: `chosen` in both orders, 0.5: tie or flip, 0:
        `rejected`) and position consistency on them (the verdict survives the swap)."""
        pairs = pairs[: self.p.calibration_limit]
        results = self.compare(
            [str(r["prompt"]) for r in pairs],
            [str(r["chosen"]) for r in pairs],
            [str(r["rejected"]) for r in pairs],
        )
        agree = [r["outcome"] for r in results if r["outcome"] is not None]
        same = [float(r["consistent"]) for r in results if r["consistent"] is not None]
        return {
            "calibration_agreement": _share(agree),
            "calibration_consistency": _share(same),
        }


def _share(values: list[float]) -> Metric:
    n = len(values)
    return Metric(sum(values) / n if n else float("nan"), *wilson(sum(values), n), n=n)
