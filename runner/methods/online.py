"""Online RL with reward functions: GRPO and RLOO (trl), on a LoRA policy.

The policy generates `num_generations` completions per prompt; the registered reward
functions (see `ftlab.runner.rewards`) score them; trl computes group-relative (GRPO) or
leave-one-out (RLOO) advantages. With `beta > 0` the KL reference is the policy with its
adapter disabled, never a second copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftlab.runner.data import chat_prompt
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import (
    LORA_KEYS,
    Footprint,
    Method,
    StageContext,
    StageResult,
    stage_inputs,
)
from ftlab.runner.methods.callbacks import CompletionLog
from ftlab.runner.methods.common import (
    callbacks,
    policy,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.rewards import RewardSpec
from ftlab.runner.spec.schema import StageSpec
from ftlab.runner.steps import Steps, trainer_steps

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

    @field_validator("rewards")
    @classmethod
    def _one_optimised(cls, rewards: list[RewardSpec]) -> list[RewardSpec]:
        if rewards and all(r.log_only for r in rewards):
            raise ValueError(
                "every reward is log_only: nothing is optimised; drop log_only from one"
            )
        return rewards


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

    from ftlab.runner import plugins, rewards

    inputs = stage_inputs(stage, adapter=LORA_KEYS)
    code = {
        r["name"]: plugins.code_hash(rewards.REWARDS.get(r["name"]))
        for r in stage.params.get("rewards", [])
        if isinstance(r, dict) and r.get("name") in rewards.REWARDS
    }
    if any(code.values()):  # reward functions from a user's plugin file
        inputs["reward_code"] = code
    module = stage.params.get("reward_module")
    if isinstance(module, str) and module and Path(module).is_file():
        inputs["reward_module_sha256"] = hashlib.sha256(Path(module).read_bytes()).hexdigest()
    return inputs


class OnlineParams(RolloutParams):
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt (must divide batch_size × grad_accum)."""
    beta: float = Field(0.0, ge=0)
    """KL coefficient towards the reference (0 = no reference model, trl's GRPO default)."""
    epsilon: float = Field(0.2, gt=0)
    """Lower clipping bound of the importance ratio (trl's default)."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clipping bound (DAPO's clip-higher recommends 0.28); none = epsilon."""
    mask_truncated_completions: bool = False
    """Leave completions cut at max_completion_length out of the loss (DAPO)."""
    num_iterations: int = Field(1, ge=1)
    """Optimisation passes over each generation batch (μ in the GRPO paper)."""
    log_completions: int = Field(0, ge=0)
    """At each logging step, write the first N sampled completions of the latest batch with
    their prompt, each reward term and the advantage to stages/<name>/completions.jsonl
    (trl's log_completions, kept in the run directory); 0 = off."""
    full: bool = False
    """Train every weight (no adapter); with beta > 0 trl keeps a frozen copy as the KL
    reference."""


class GRPOParams(OnlineParams):
    """GRPO's own settings, passed to trl's GRPOConfig as they are."""

    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = (
        "dapo"
    )
    """How token losses are aggregated: dapo (trl's default), grpo (per-sequence mean,
    length-biased), dr_grpo (Dr. GRPO: a constant normaliser), bnpo, cispo, sapo, luspo,
    vespo."""
    importance_sampling_level: Literal["token", "sequence"] = "token"
    """token: a ratio per token; sequence: one per completion (GSPO)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide advantages by the reward's standard deviation within each group, across the
    batch, or not at all (Dr. GRPO)."""
    top_entropy_quantile: float = Field(1.0, ge=0, le=1)
    """Keep only this top quantile of tokens by entropy in the loss (1 = all tokens)."""


GRPO_ONLY = tuple(k for k in GRPOParams.model_fields if k not in OnlineParams.model_fields)


class Rollouts(Method):
    """What online methods share: prompts, reward functions, generated completions."""

    data_formats = PROMPT_FORMATS
    adapter_keys = LORA_KEYS
    figures = (("kl_last", "KL"),)

    def hash_inputs(self, stage: StageSpec) -> dict[str, Any]:
        return rollout_inputs(stage)

    def footprint(self, stage: StageSpec) -> Footprint:
        params = self.params_model.model_validate(stage.params)
        return Footprint(
            weights="full" if getattr(params, "full", False) else "lora",
            generated=params.max_completion_length,  # type: ignore[attr-defined]
            reward_models=sum(r.name == "reward_model" for r in params.rewards),  # type: ignore[attr-defined]
        )

    def summary_figures(self, summary: dict[str, Any]) -> list[str]:
        first, last = summary.get("reward_first"), summary.get("reward_last")
        if not isinstance(last, int | float):
            return super().summary_figures(summary)
        start = f"{first:.2f} → " if isinstance(first, int | float) else ""
        return [f"reward {start}{last:.2f}", *super().summary_figures(summary)]


class Online(Rollouts):
    params_model: type[OnlineParams] = OnlineParams

    def __init__(self, name: str, params_model: type[OnlineParams]) -> None:
        self.name = name
        self.params_model = params_model

    def train(self, ctx: StageContext) -> StageResult:
        return train_online(ctx, method=self.name)

    def steps(self, stage: StageSpec, lengths: list[int], processes: int) -> Steps:
        """trl's GRPO/RLOO loader: whole generation batches of unique prompts, each
        repeated num_generations times and reused for steps_per_generation (= grad_accum)
        steps; the loader's batch is batch_size × steps_per_generation."""
        t = stage.train
        generations = self.params_model.model_validate(stage.params).num_generations
        unique = t.batch_size * processes * t.grad_accum // generations
        samples = (len(lengths) // unique) * unique * generations * t.grad_accum
        return trainer_steps(
            samples=samples,
            batch=t.batch_size * t.grad_accum,
            grad_accum=t.grad_accum,
            processes=processes,
            epochs=t.epochs,
            max_steps=t.max_steps,
        )


GRPO = METHODS.register("grpo")(Online("grpo", GRPOParams))
RLOO = METHODS.register("rloo")(Online("rloo", OnlineParams))


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


def rollout_setup(ctx: StageContext, params: Any) -> tuple[Any, ...]:
    """What every trl online trainer starts from: (reward functions, weights, policy,
    peft config, base directory, left-padding tokenizer, trainer kwargs)."""
    from ftlab.runner.models import load_tokenizer

    fns, weights = reward_functions(ctx, params)
    model, peft_cfg, base = policy(ctx, method="full" if params.full else "lora")
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    tokenizer.padding_side = "left"  # generation pads on the left
    kwargs = training_kwargs(ctx)
    # rollouts have no held-out loss to evaluate: reward is the signal, logged per step
    kwargs.update(eval_strategy="no", load_best_model_at_end=False, metric_for_best_model=None)
    return fns, weights, model, peft_cfg, base, tokenizer, kwargs


def train_online(ctx: StageContext, *, method: str) -> StageResult:
    import datasets

    quiet_library_bars()
    started = time.time()
    params = (GRPOParams if method == "grpo" else OnlineParams).model_validate(ctx.stage.params)
    t = ctx.stage.train
    if (t.batch_size * t.grad_accum) % params.num_generations:
        raise ValueError(
            f"stage {ctx.stage.name}: num_generations ({params.num_generations}) must divide "
            f"batch_size × grad_accum ({t.batch_size} × {t.grad_accum}); change one of them"
        )
    fns, weights, model, peft_cfg, base, tokenizer, kwargs = rollout_setup(ctx, params)
    if method == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config  # type: ignore[assignment]
        from trl import RLOOTrainer as Trainer  # type: ignore[assignment]
    args = Config(
        **kwargs,
        num_generations=params.num_generations,
        max_completion_length=params.max_completion_length,
        temperature=params.temperature,
        reward_weights=weights,
        **params.model_dump(
            include={"beta", "epsilon", "epsilon_high", "mask_truncated_completions"}
            | {"num_iterations", *(GRPO_ONLY if method == "grpo" else ())}
        ),
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
    if params.log_completions:
        trainer.add_callback(
            CompletionLog(trainer, ctx.work_dir / "completions.jsonl", params.log_completions)
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
