"""Supervised fine-tuning: full, LoRA, QLoRA, DoRA, IA3, prompt tuning, prefix tuning.

All of them are trl's SFTTrainer; the method only decides how the model is loaded
(4-bit for QLoRA) and which peft config wraps it (see `common.policy`).
"""

from __future__ import annotations

import time
from typing import Any

from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import (
    LORA_KEYS,
    QUANT_KEYS,
    Footprint,
    Method,
    Problem,
    StageContext,
    StageResult,
)
from ftlab.runner.methods.common import (
    callbacks,
    policy,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.spec.schema import Spec, StageSpec
from ftlab.runner.templates import Template, TemplateError, usable_for_training

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


class Supervised(Method):
    """One supervised method; `name` picks the peft config (or none, for `full`)."""

    data_formats = SFT_FORMATS

    def __init__(self, name: str) -> None:
        self.name = name
        self.adapter_keys = ADAPTER_KEYS[name]
        self.weights = "full" if name == "full" else "adapter"

    def train(self, ctx: StageContext) -> StageResult:
        return train_supervised(ctx, method=self.name)

    def check(self, stage: StageSpec, spec: Spec) -> list[Problem]:
        up = spec.stage(stage.from_) if stage.from_ in {s.name for s in spec.stages} else None
        if stage.adapter_mode == "continue" and up is not None and up.method != self.name:
            return [
                (
                    ("adapter_mode",),
                    f"the upstream's method ({up.method}) to continue its adapter",
                    self.name,
                    f"set method: {up.method}, or adapter_mode: merge",
                )
            ]
        return []

    def template_problem(self, stage: StageSpec, spec: Spec, template: Any) -> Problem | None:
        """Assistant-only loss on conversations needs a template whose assistant tokens
        can be found: said at validate, not at the stage's start."""
        t = stage.train
        source = spec.data.get(stage.data)
        if not t.completion_only_loss or t.train_on == "all" or source is None:
            return None
        if source.format not in ("messages", "sharegpt", "alpaca"):
            return None
        try:
            usable_for_training(template, last_only=t.train_on == "last_assistant")
        except TemplateError as exc:
            return (
                ("train", "completion_only_loss"),
                "a chat template whose assistant turns can be masked (assistant-only loss)",
                f"{template.name}: {exc}",
                "set model.chat_template to a template that fits the checkpoint (e.g. "
                "chatml, llama3, mistral, or a .jinja file), or train.completion_only_loss: "
                "false (loss on every token)",
            )
        return None

    def footprint(self, stage: StageSpec) -> Footprint:
        return Footprint(weights=self.name)

    def objective(self, stage: StageSpec) -> str:
        """Every supervised method minimises the same token NLL (LoRA, QLoRA and full
        compare on it), over the tokens `train_on` selects."""
        t = stage.train
        tokens = "all" if not t.completion_only_loss else t.train_on
        return f"nll:{t.loss_type}:{tokens}"


for _name in ADAPTER_KEYS:
    METHODS.register(_name)(Supervised(_name))


def padding_free(ctx: StageContext, lengths: list[int], config: Any) -> bool:
    """`train.padding_free`. `auto`: always with flash attention (its varlen kernels skip
    the cross-example blocks); with eager/sdpa, which compute the whole (Σ lengths)² score
    matrix of a flat batch, only where that costs less than padding these lengths (the
    cost model below, on random batches as the sampler draws them); never for remote
    modelling code, whose masking ftlab has not measured. Same batches either way, so the
    loss is the padded run's."""
    want = ctx.stage.train.padding_free
    if ctx.spec.model.trust_remote_code or ctx.stage.train.packing:
        return False
    if want != "auto":
        return bool(want)
    if ctx.spec.model.attn_implementation.startswith("flash_attention"):
        return True
    return flat_is_cheaper(lengths, ctx.stage.train.batch_size, config, seed=ctx.spec.seed)


def flat_is_cheaper(lengths: list[int], batch: int, config: Any, *, seed: int = 0) -> bool:
    """Per layer: a token costs ~2·(4h² + 3·h·i) FLOPs in the linear layers, a query-key
    pair ~4·h in attention. Padded: every example costs the batch's longest; flat: one
    row of Σ lengths, attended as a whole."""
    import random

    h = int(config.hidden_size)
    inner = int(getattr(config, "intermediate_size", None) or 4 * h)
    linear, pair = 2 * (4 * h * h + 3 * h * inner), 4 * h
    order = list(lengths)
    random.Random(seed).shuffle(order)
    padded = flat = 0
    for start in range(0, len(order), batch):
        b = order[start : start + batch]
        padded += len(b) * max(b) * (linear + max(b) * pair)
        flat += sum(b) * linear + sum(b) ** 2 * pair
    return flat < padded


def sft_args(ctx: StageContext, *, conversational: bool, masked: bool, flat: bool) -> Any:
    """trl's SFTConfig; `masked`: ftlab tokenized the rows with their assistant masks;
    `flat`: padding-free batches."""
    from trl import SFTConfig

    t = ctx.stage.train
    assistant_only = t.completion_only_loss and t.train_on != "all"
    grouped = t.group_by_length and not t.packing and not flat
    return SFTConfig(
        **training_kwargs(ctx),
        # padding-free without packing: trl leaves truncation to us (truncate())
        max_length=None if flat and not t.packing else t.max_length,
        packing=t.packing,
        padding_free=flat,
        train_sampling_strategy="group_by_length" if grouped else "random",
        loss_type=t.loss_type,
        assistant_only_loss=assistant_only and conversational and not masked,
        completion_only_loss=t.completion_only_loss if not conversational else None,
        dataset_num_proc=None,
    )


def rows_for(tokenizer: Any, rows: list[dict[str, Any]], *, masked: bool, last_only: bool) -> Any:
    """The rows as trl reads them: as they are, or tokenized with ftlab's assistant masks
    (templates trl cannot patch, and `train_on: last_assistant`; see runner/templates.py)."""
    import datasets

    from ftlab.runner.templates import encode

    if not masked:
        return datasets.Dataset.from_list(rows)
    text = tokenizer.chat_template
    return datasets.Dataset.from_list(
        [encode(tokenizer, text, r["messages"], last_only=last_only) for r in rows]
    )


def truncate(dataset: Any, max_length: int) -> Any:
    """Cut every per-token column to `max_length` (trl does it only for padded batches):
    every list as long as the row's input_ids (masks, and `labels` — a row longer than
    max_length left them longer than its ids, and the padding-free collator failed)."""
    if dataset is None:
        return None

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        n = len(row["input_ids"])
        return {c: v[:max_length] for c, v in row.items() if isinstance(v, list) and len(v) == n}

    return dataset.map(cut)


def _lengths(tokenizer: Any, ctx: StageContext) -> list[int]:
    """Tokens per training row, capped at max_length (the run printed what is longer and
    what `data.<name>.overlong` did with it)."""
    from ftlab.runner.lengths import Tokens, row_lengths

    rows, _ = row_lengths(ctx.data.train, Tokens(tokenizer, str(ctx.model.path)))
    return [min(n.total, ctx.stage.train.max_length) for n in rows]


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
    t = ctx.stage.train
    model, peft_cfg, base = policy(ctx, method=method)
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    conversational = "messages" in ctx.data.train[0]
    train_on = t.train_on if t.completion_only_loss else "all"
    last_only = train_on == "last_assistant"
    masking = "none"
    if conversational and train_on != "all":
        template = Template(ctx.spec.model.chat_template or "checkpoint", tokenizer.chat_template)
        # TemplateError: the spec check says why, before training
        masking = usable_for_training(template, last_only=last_only)
    masked = masking == "ftlab"
    flat = padding_free(ctx, _lengths(tokenizer, ctx), model.config)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(ctx, conversational=conversational, masked=masked, flat=flat),
        train_dataset=rows_for(tokenizer, ctx.data.train, masked=masked, last_only=last_only),
        eval_dataset=(
            rows_for(tokenizer, ctx.data.val, masked=masked, last_only=last_only)
            if ctx.data.val
            else None
        ),
        processing_class=tokenizer,
        peft_config=peft_cfg,
        callbacks=callbacks(ctx),
    )
    if flat and not t.packing:
        trainer.train_dataset = truncate(trainer.train_dataset, t.max_length)
        trainer.eval_dataset = truncate(trainer.eval_dataset, t.max_length)
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
            "train_on": train_on,
            "batching": {
                "padding_free": flat,
                "packing": t.packing,
                "group_by_length": t.group_by_length and not t.packing and not flat,
            },
        },
    )
