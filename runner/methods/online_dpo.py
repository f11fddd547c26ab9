"""Online DPO (trl.experimental): the policy writes two replies to each prompt, the
stage's reward functions say which is better, and a DPO loss trains on that fresh pair.

Rewards as GRPO's (`params.rewards`, `reward_module`; `log_only` terms are computed and
logged, never used to rank). On a LoRA policy the reference is the policy with its
adapter disabled; `full: true` trains every weight (trl then keeps a frozen copy).
"""

from __future__ import annotations

import os
import time
from typing import Literal

from pydantic import Field

from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import StageContext, StageResult
from ftlab.runner.methods.common import (
    callbacks,
    quiet_library_bars,
    run_trainer,
)
from ftlab.runner.methods.online import RolloutParams, Rollouts, _prompts, rollout_setup


class OnlineDPOParams(RolloutParams):
    beta: float = Field(0.1, gt=0)
    """Strength of the implicit KL penalty towards the reference model."""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """DPO's sigmoid loss or IPO's squared one."""
    full: bool = False
    """Train every weight (no adapter); trl keeps a frozen copy as the reference."""


class OnlineDPO(Rollouts):
    """Each step: two sampled replies per prompt, ranked by the rewards, one DPO update."""

    params_model = OnlineDPOParams
    figures = ()

    def train(self, ctx: StageContext) -> StageResult:
        return train_online_dpo(ctx)


ONLINE_DPO = METHODS.register("online_dpo")(OnlineDPO())


def train_online_dpo(ctx: StageContext) -> StageResult:
    import datasets

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # chosen knowingly (README)
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    quiet_library_bars()
    started = time.time()
    params = OnlineDPOParams.model_validate(ctx.stage.params)
    fns, weights, model, peft_cfg, base, tokenizer, kwargs = rollout_setup(ctx, params)
    args = OnlineDPOConfig(
        **kwargs,
        max_new_tokens=params.max_completion_length,
        temperature=params.temperature,
        beta=params.beta,
        loss_type=params.loss_type,
        reward_weights=weights,
    )
    trainer = OnlineDPOTrainer(
        model=model,
        reward_funcs=fns,
        args=args,
        train_dataset=datasets.Dataset.from_list(_prompts(ctx.data.train, tokenizer)),
        processing_class=tokenizer,
        peft_config=peft_cfg,
        callbacks=callbacks(ctx),
    )
    return run_trainer(
        ctx,
        trainer,
        method="online_dpo",
        base=base,
        tokenizer=tokenizer,
        started=started,
        extra={"params": params.model_dump()},
    )
