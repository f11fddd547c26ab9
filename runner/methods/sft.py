"""Supervised fine-tuning: full, LoRA, QLoRA, DoRA, IA3, prompt tuning, prefix tuning.

All of them are trl's SFTTrainer; the method only decides how the model is loaded
(4-bit for QLoRA) and which peft config wraps it (see `common.policy`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ftlab.runner.methods.base import (
    LORA_KEYS,
    QUANT_KEYS,
    NoParams,
    StageContext,
    StageResult,
    stage_inputs,
)
from ftlab.runner.methods.common import (
    callbacks,
    policy,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.templates import Template, usable_for_training

SFT_FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion")
ADAPTER_KEYS = {  # the adapter settings each method reads (common.peft_config, load_model)
    "full": (),
    "lora": LORA_KEYS,
    "dora": LORA_KEYS,
    "qlora": LORA_KEYS + QUANT_KEYS,
    "ia3": ("target_modules",),
    "prompt_tuning": ("num_virtual_tokens",),
    "prefix_tuning": ("num_virtual_tokens",),
}


@dataclass(frozen=True)
class Supervised:
    """One supervised method; `name` picks the peft config (or none, for `full`)."""

    name: str
    data_formats: tuple[str, ...] = SFT_FORMATS
    params_model: type = NoParams

    def train(self, ctx: StageContext) -> StageResult:
        return train_supervised(ctx, method=self.name)

    def hash_inputs(self, stage: Any) -> dict[str, Any]:
        return stage_inputs(stage, adapter=ADAPTER_KEYS[self.name])


FULL = Supervised("full")
LORA = Supervised("lora")
QLORA = Supervised("qlora")
DORA = Supervised("dora")
IA3 = Supervised("ia3")
PROMPT_TUNING = Supervised("prompt_tuning")
PREFIX_TUNING = Supervised("prefix_tuning")


def sft_args(ctx: StageContext, *, conversational: bool, masked: bool = False) -> Any:
    """trl's SFTConfig; `masked`: ftlab tokenized the rows with their assistant masks."""
    from trl import SFTConfig

    t = ctx.stage.train
    return SFTConfig(
        **training_kwargs(ctx),
        max_length=t.max_length,
        packing=t.packing,
        assistant_only_loss=t.completion_only_loss and conversational and not masked,
        completion_only_loss=t.completion_only_loss if not conversational else None,
        dataset_num_proc=None,
    )


def rows_for(tokenizer: Any, rows: list[dict[str, Any]], *, masked: bool) -> Any:
    """The rows as trl reads them: as they are, or tokenized with ftlab's assistant masks
    (templates trl cannot patch; see runner/templates.py)."""
    import datasets

    from ftlab.runner.templates import encode

    if not masked:
        return datasets.Dataset.from_list(rows)
    text = tokenizer.chat_template
    return datasets.Dataset.from_list([encode(tokenizer, text, r["messages"]) for r in rows])


def _template_record(ctx: StageContext, tokenizer: Any, masking: str) -> dict[str, Any]:
    """What the run used: the template's name and hash (its text is saved with the
    artifact's tokenizer), and how the assistant's tokens were found."""
    text = tokenizer.chat_template or ""
    return {
        "name": ctx.spec.model.chat_template or "checkpoint",
        "sha256": Template("", text).sha256 if text else "",
        "assistant_mask": masking,  # markers | trl | ftlab | none (loss on every token)
    }


def train_supervised(ctx: StageContext, *, method: str) -> StageResult:
    from trl import SFTTrainer

    from ftlab.runner.models import load_tokenizer

    quiet_library_bars()
    started = time.time()
    model, peft_cfg, base = policy(ctx, method=method)
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    conversational = "messages" in ctx.data.train[0]
    masking = "none"
    if conversational and ctx.stage.train.completion_only_loss:
        template = Template(ctx.spec.model.chat_template or "checkpoint", tokenizer.chat_template)
        masking = usable_for_training(template)  # TemplateError: the spec check says why
    masked = masking == "ftlab"
    trainer = SFTTrainer(
        model=model,
        args=sft_args(ctx, conversational=conversational, masked=masked),
        train_dataset=rows_for(tokenizer, ctx.data.train, masked=masked),
        eval_dataset=rows_for(tokenizer, ctx.data.val, masked=masked) if ctx.data.val else None,
        processing_class=tokenizer,
        peft_config=peft_cfg,
        callbacks=callbacks(ctx),
    )
    train_ds: Any = trainer.train_dataset
    tokens = sum(len(ids) for ids in train_ds["input_ids"])
    return run_trainer(
        ctx,
        trainer,
        method=method,
        base=base,
        tokenizer=tokenizer,
        started=started,
        extra={
            "tokens_per_epoch": tokens,
            "chat_template": _template_record(ctx, tokenizer, masking),
        },
    )
