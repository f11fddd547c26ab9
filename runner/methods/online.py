"""Online RL with reward functions: GRPO and RLOO (trl), on a LoRA policy.

The policy generates `num_generations` completions per prompt; the registered reward
functions (see `ftlab.runner.rewards`) score them; trl computes group-relative (GRPO) or
leave-one-out (RLOO) advantages. With `beta > 0` the KL reference is the policy with its
adapter disabled, never a second copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.runner.data import chat_prompt
from ftlab.runner.methods.base import LORA_KEYS, StageContext, StageResult, stage_inputs
from ftlab.runner.methods.common import (
    callbacks,
    policy,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.rewards import RewardSpec

PROMPT_FORMATS = ("prompts", "preference", "unpaired", "prompt_completion")


class RolloutParams(BaseModel):
    """What every online method (GRPO, RLOO, PPO) shares: rewards and sampling."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    rewards: list[RewardSpec] = Field(min_length=1)
    """Reward terms, e.g. [{name: keywords}, {name: reward_model, params: {stage: rm}}]."""
    reward_module: str = ""
    """A Python file (relative to the spec file) that registers more reward functions; its
    content is part of the stage's hash."""
    max_completion_length: int = Field(48, ge=1)
    """Tokens generated per completion."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature for the rollouts (PPO's log-probs use the same)."""


def reward_functions(ctx: StageContext, params: RolloutParams) -> tuple[list[Any], list[float]]:
    """The stage's reward functions and weights, user modules and stage artifacts resolved."""
    from ftlab.runner import rewards

    if params.reward_module:
        # the spec loader made the path absolute (relative to the spec file that named it)
        rewards.load_module(params.reward_module, Path.cwd())
    return rewards.build(rewards.resolve_stage_refs(params.rewards, ctx.artifacts))


def rollout_inputs(stage: Any) -> dict[str, Any]:
    """The hash inputs of an online method: the stage's LoRA settings and params, plus
    the content of its reward module (an edited reward function trains anew)."""
    import hashlib

    inputs = stage_inputs(stage, adapter=LORA_KEYS)
    module = stage.params.get("reward_module")
    if isinstance(module, str) and module and Path(module).is_file():
        inputs["reward_module_sha256"] = hashlib.sha256(Path(module).read_bytes()).hexdigest()
    return inputs


class OnlineParams(RolloutParams):
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt (must divide batch_size × grad_accum)."""
    beta: float = Field(0.0, ge=0)
    """KL coefficient towards the reference (0 = no reference model, trl's GRPO default)."""


@dataclass(frozen=True)
class Online:
    name: str
    params_model: type[BaseModel] = OnlineParams
    data_formats: tuple[str, ...] = PROMPT_FORMATS

    def train(self, ctx: StageContext) -> StageResult:
        return train_online(ctx, method=self.name)

    def hash_inputs(self, stage: Any) -> dict[str, Any]:
        return rollout_inputs(stage)


GRPO = Online("grpo")
RLOO = Online("rloo")


def _prompts(rows: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Prompt rows (extra scalar columns kept for reward functions), as chat turns when
    the model has a chat template."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    out = []
    for row in rows:
        extra = {
            k: v
            for k, v in row.items()
            if k not in ("prompt", "chosen", "rejected", "completion", "label", "system")
        }
        out.append({"prompt": chat_prompt(row) if chat else row["prompt"], **extra})
    return out


def train_online(ctx: StageContext, *, method: str) -> StageResult:
    import datasets

    from ftlab.runner.models import load_tokenizer

    quiet_library_bars()
    started = time.time()
    params = OnlineParams.model_validate(ctx.stage.params)
    t = ctx.stage.train
    if (t.batch_size * t.grad_accum) % params.num_generations:
        raise ValueError(
            f"stage {ctx.stage.name}: num_generations ({params.num_generations}) must divide "
            f"batch_size × grad_accum ({t.batch_size} × {t.grad_accum}); change one of them"
        )
    fns, weights = reward_functions(ctx, params)
    model, peft_cfg, base = policy(ctx, method="lora")
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    tokenizer.padding_side = "left"  # generation pads on the left
    if method == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config  # type: ignore[assignment]
        from trl import RLOOTrainer as Trainer  # type: ignore[assignment]
    kwargs = training_kwargs(ctx)
    # rollouts have no held-out loss to evaluate: reward is the signal, logged per step
    kwargs.update(eval_strategy="no", load_best_model_at_end=False, metric_for_best_model=None)
    args = Config(
        **kwargs,
        num_generations=params.num_generations,
        max_completion_length=params.max_completion_length,
        temperature=params.temperature,
        beta=params.beta,
        reward_weights=weights,
    )
    train = _prompts(ctx.data.train, tokenizer)
    trainer = Trainer(
        model=model,
        reward_funcs=fns,
        args=args,
        train_dataset=datasets.Dataset.from_list(train),
        processing_class=tokenizer,
        peft_config=peft_cfg,
        callbacks=callbacks(ctx),
    )
    result = run_trainer(
        ctx,
        trainer,
        method=method,
        base=base,
        tokenizer=tokenizer,
        started=started,
        extra={"params": params.model_dump()},
    )
    history = trainer.state.log_history
    rewards_logged = [e["reward"] for e in history if "reward" in e]
    if rewards_logged:
        result.summary["reward_first"] = float(rewards_logged[0])
        result.summary["reward_last"] = float(rewards_logged[-1])
    return result
