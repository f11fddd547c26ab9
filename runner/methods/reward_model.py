"""Reward model: trl's RewardTrainer on preference pairs, a scalar head on the policy.

The model is the base (or the merged upstream stage) as a sequence classifier with one
output; with LoRA the new `score` head is trained in full (`modules_to_save`). The stage
reports pairwise accuracy (reward(chosen) > reward(rejected)) on held-out pairs, before
and after training. Its artifact scores text through `ftlab.runner.rewards` (`reward_model`).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import (
    LORA_KEYS,
    Footprint,
    Method,
    StageContext,
    StageResult,
    stage_inputs,
)
from ftlab.runner.methods.common import (
    base_weights,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.spec.schema import StageSpec


class RewardParams(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    center_rewards_coefficient: float = Field(0.0, ge=0)
    """Penalty on the mean reward's square, keeping rewards centred on zero (0 = off)."""
    full: bool = False
    """Train every weight instead of a LoRA adapter plus the score head."""


@METHODS.register("reward_model")
class RewardModel(Method):
    """A scorer, not a policy: evals do not run on it; online stages use it as a reward."""

    params_model = RewardParams
    data_formats = ("preference",)
    generates = False
    figures = (("pairwise_accuracy", "pair acc"),)

    def train(self, ctx: StageContext) -> StageResult:
        return train_reward_model(ctx)

    def hash_inputs(self, stage: Any) -> dict[str, Any]:
        full = RewardParams.model_validate(stage.params).full
        return stage_inputs(stage, adapter=() if full else LORA_KEYS)

    def footprint(self, stage: StageSpec) -> Footprint:
        return Footprint(weights="lora", rows=2, logits=False)  # a scalar head


def load_classifier(path: str, *, pad_token_id: int, precision: str) -> Any:
    """A causal LM checkpoint as a one-score sequence classifier (new `score` head)."""
    import logging

    import torch
    from transformers import AutoModelForSequenceClassification

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    # transformers reports lm_head as unused and score as new: expected here, so the
    # report is kept out of the terminal while this one checkpoint loads.
    log = logging.getLogger("transformers.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, pad_token_id=pad_token_id, dtype=half
        )
    finally:
        log.setLevel(level)


def train_reward_model(ctx: StageContext) -> StageResult:
    import torch
    from peft import LoraConfig
    from trl import RewardConfig, RewardTrainer

    from ftlab.runner.methods.preference import pair_trainer
    from ftlab.runner.models import load_tokenizer

    quiet_library_bars()
    started = time.time()
    params = RewardParams.model_validate(ctx.stage.params)
    base = base_weights(ctx)
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    precision = ctx.precision if not params.full else "fp32"  # full: fp32 master weights
    model = load_classifier(base, pad_token_id=tokenizer.pad_token_id, precision=precision)
    model.score.to(torch.float32)  # the new head trains in fp32 either way
    a = ctx.stage.adapter
    peft_cfg = (
        None
        if params.full
        else LoraConfig(
            task_type="SEQ_CLS",
            r=a.r,
            lora_alpha=a.alpha,
            lora_dropout=a.dropout,
            target_modules=a.target_modules,
            use_rslora=a.rslora,
            modules_to_save=["score"],
        )
    )
    args = RewardConfig(
        **training_kwargs(ctx),
        max_length=ctx.stage.train.max_length,
        center_rewards_coefficient=params.center_rewards_coefficient or None,
    )
    trainer = pair_trainer(
        RewardTrainer, args, ctx=ctx, model=model, tokenizer=tokenizer, peft_config=peft_cfg
    )
    result = run_trainer(
        ctx,
        trainer,
        method="full" if params.full else "reward_model",
        base=base,
        tokenizer=tokenizer,
        started=started,
    )
    result.summary["method"] = "reward_model"
    accuracies = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    if accuracies:
        result.summary["initial_pairwise_accuracy"] = float(accuracies[0])
        result.summary["pairwise_accuracy"] = float(accuracies[-1])
    _mark_classifier(result.artifact.path)
    return result


def _mark_classifier(path: Any) -> None:
    import json

    meta_file = path / "ftlab_artifact.json"
    meta = json.loads(meta_file.read_text())
    meta["task"] = "reward_model"
    meta_file.write_text(json.dumps(meta, indent=2))


def load_reward_model(path: Any, *, device: str = "cpu") -> tuple[Any, Any]:
    """(classifier, tokenizer) from a reward_model stage's artifact, in eval mode."""
    import json
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    meta = json.loads((path / "ftlab_artifact.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if meta["kind"] == "full":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    else:
        from peft import PeftModel

        base = load_classifier(meta["base"], pad_token_id=tokenizer.pad_token_id, precision="fp32")
        model = PeftModel.from_pretrained(base, path)
    return model.to(device).eval(), tokenizer
