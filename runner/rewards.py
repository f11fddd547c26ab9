"""Reward functions for online RL (GRPO, RLOO, and later PPO) and as eval metrics.

A reward function scores completions: `fn(completions, prompts=None, **columns) ->
list[float]`, the signature trl's GRPO/RLOO trainers call. Built-ins are registered here;
users register their own in a Python file named by the stage's `params.reward_module`:

    from ftlab.runner.rewards import reward

    @reward("mentions_refund")
    def mentions_refund(*, word: str = "refund"):          # params from the spec
        def score(completions, **kw):
            return [float(word in text_of(c)) for c in completions]
        return score
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.runner.registry import Registry
from ftlab.runner.spec.datapath import user_path

RewardFn = Callable[..., list[float]]
REWARDS: Registry[Callable[..., RewardFn]] = Registry("reward function")


def reward(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Register a reward-function factory (called with the spec's params)."""
    return REWARDS.register(name)


class RewardSpec(BaseModel):
    """One reward term: a registered function, its weight and its parameters."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Registered reward function (json_valid, regex, length, keywords, or your own)."""
    weight: float = 1.0
    """Weight of this term in the total reward."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the reward function's factory."""
    log_only: bool = False
    """Compute and log it at every step (rewards/<name>/mean), never optimise it: its
    weight in the summed reward is 0 — a task metric to watch while another reward
    trains (reward hacking shows as one rising while this one falls)."""


def text_of(completion: Any) -> str:
    """A completion as text, whether plain or conversational ([{role, content}, …])."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


@reward("json_valid")
def json_valid() -> RewardFn:
    """1.0 when the completion parses as JSON, else 0.0."""

    def score(completions: list[Any], **kw: Any) -> list[float]:
        out = []
        for c in completions:
            try:
                json.loads(text_of(c))
                out.append(1.0)
            except ValueError:
                out.append(0.0)
        return out

    return score


@reward("regex")
def regex(*, pattern: str) -> RewardFn:
    """1.0 when the completion matches `pattern` (re.search), else 0.0."""
    compiled = re.compile(pattern)

    def score(completions: list[Any], **kw: Any) -> list[float]:
        return [1.0 if compiled.search(text_of(c)) else 0.0 for c in completions]

    return score


@reward("length")
def length(*, target_words: int = 30) -> RewardFn:
    """0 at `target_words` words, falling linearly: -|words - target| / target."""

    def score(completions: list[Any], **kw: Any) -> list[float]:
        return [-abs(len(text_of(c).split()) - target_words) / target_words for c in completions]

    return score


SUPPORT_RUBRIC = [
    ["sorry", "apolog", "understand", "thank you"],  # acknowledgement
    ["i have "],  # a concrete action taken
    ["within", "by email", "hours", "days"],  # a timeline
    ["regards", "thanks, support", "support team"],  # a polite closing
]


@reward("keywords")
def keywords(*, groups: list[list[str]] | None = None) -> RewardFn:
    """Fraction of keyword groups with at least one (case-insensitive) match. The default
    groups check a support reply: acknowledgement, action, timeline, polite closing."""
    rubric = [[k.lower() for k in g] for g in (groups or SUPPORT_RUBRIC)]

    def score(completions: list[Any], **kw: Any) -> list[float]:
        out = []
        for c in completions:
            text = text_of(c).lower()
            out.append(sum(any(k in text for k in g) for g in rubric) / len(rubric))
        return out

    return score


@reward("reward_model")
def reward_model(*, path: str, batch_size: int = 16) -> RewardFn:
    """The scalar score of a `reward_model` stage's artifact for prompt + completion
    (in a spec, name the stage: `params: {stage: rm}`)."""
    import torch

    from ftlab.runner.methods.reward_model import load_reward_model

    model, tokenizer = load_reward_model(path)

    def as_text(prompt: Any, completion: Any) -> str:
        if isinstance(prompt, list) or isinstance(completion, list):
            turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            reply = (
                completion
                if isinstance(completion, list)
                else [{"role": "assistant", "content": completion}]
            )
            return str(tokenizer.apply_chat_template(turns + reply, tokenize=False))
        return f"{prompt or ''}{completion}"

    def score(completions: list[Any], prompts: list[Any] | None = None, **kw: Any) -> list[float]:
        texts = [
            as_text(p, c)
            for p, c in zip(prompts or [""] * len(completions), completions, strict=True)
        ]
        out: list[float] = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=1024,
            )
            with torch.no_grad():
                out += model(**batch).logits[:, 0].float().tolist()
        return out

    return score


def resolve_stage_refs(specs: list[RewardSpec], artifacts: dict[str, Any]) -> list[RewardSpec]:
    """`{name: reward_model, params: {stage: rm}}` → the artifact path of stage `rm`."""
    out = []
    for rs in specs:
        if "stage" in rs.params:
            stage = rs.params["stage"]
            if stage not in artifacts:
                raise KeyError(
                    f"reward {rs.name}: stage '{stage}' has no artifact; name an "
                    f"earlier stage ({', '.join(artifacts) or 'none'})"
                )
            params = {k: v for k, v in rs.params.items() if k != "stage"}
            rs = rs.model_copy(update={"params": {**params, "path": str(artifacts[stage].path)}})
        out.append(rs)
    return out


def load_module(path: str, base_dir: Path) -> None:
    """Import a user's reward file so its @reward registrations take effect (once per
    content: see `plugins.load_file`)."""
    from ftlab.runner import plugins

    file = user_path(path)
    file = file if file.is_absolute() else base_dir / file
    if not file.is_file():
        raise FileNotFoundError(
            f"reward_module {file} does not exist (paths are relative to the spec file)"
        )
    plugins.load_file(file, prefix="ftlab_user_rewards")


def build(specs: list[RewardSpec]) -> tuple[list[RewardFn], list[float]]:
    """(functions, weights) for a trainer; each function named after its registry entry."""
    fns, weights = [], []
    for rs in specs:
        fn = REWARDS.get(rs.name)(**rs.params)
        fn.__name__ = rs.name  # trl logs rewards/<__name__>/mean
        fns.append(fn)
        weights.append(0.0 if rs.log_only else rs.weight)
    return fns, weights
