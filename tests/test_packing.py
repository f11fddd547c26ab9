"""Packing (issue 16): packed examples must never attend to each other — measured.

trl's `packing: true` is padding-free: examples are concatenated with restarting position
ids and no attention mask. transformers keeps them apart by the position ids only when the
forward pass runs without a KV cache, which trl's SFTTrainer.compute_loss sets
(`use_cache=False`). Measured here through trl's own collator: per-example losses of 8
examples packed into one row equal their unpacked losses, with each attention kernel the
CPU offers; and with the cache left on (a hand-written forward pass) they do not.
"""

from __future__ import annotations

import pytest
import torch

from ftlab.runner import models
from ftlab.runner.data import load
from ftlab.runner.spec.schema import DataSource

from .conftest import DATA

TOLERANCE = 1e-4  # fp32, CPU: observed differences are ~1e-6


def _examples(tok, n: int = 8) -> list[list[int]]:
    rows = load(
        DataSource(path=str(DATA / "support_sft.jsonl"), val_fraction=0.0), base_dir=DATA, seed=0
    )
    return [
        tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"][:96]
        for r in rows.train[:n]
    ]


def _losses(attn: str, *, use_cache: bool | None) -> tuple[list[float], list[float]]:
    """Per-example mean token loss: packed into one padding-free row (trl's collator) vs
    each example alone."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    model = AutoModelForCausalLM.from_pretrained(
        ref.path, dtype=torch.float32, attn_implementation=attn
    ).eval()
    examples = _examples(tok)
    collate = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    batch = collate([{"input_ids": ids} for ids in examples])
    kwargs = {} if use_cache is None else {"use_cache": use_cache}
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs
        ).logits[0]
        packed, start = [], 0
        for ids in examples:
            chunk = logits[start : start + len(ids) - 1]
            target = torch.tensor(ids[1:])
            packed.append(float(torch.nn.functional.cross_entropy(chunk, target)))
            start += len(ids)
        alone = [
            float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
            for ids in examples
        ]
    return packed, alone


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_examples_keep_their_own_losses_as_trl_trains(attn: str) -> None:
    packed, alone = _losses(attn, use_cache=False)  # what SFTTrainer.compute_loss passes
    assert max(abs(p - a) for p, a in zip(packed, alone, strict=True)) < TOLERANCE


def test_with_the_cache_on_packed_examples_see_each_other() -> None:
    """Why the above depends on use_cache=False (transformers' default forward leaks)."""
    packed, alone = _losses("sdpa", use_cache=None)
    assert max(abs(p - a) for p, a in zip(packed[1:], alone[1:], strict=True)) > 0.01
