"""Packing (issue 16): packed examples must never attend to each other — measured.

trl's `packing: true` is padding-free: examples are concatenated with restarting position
ids and no attention mask. transformers keeps them apart by the position ids only when the
forward pass runs without a KV cache, which trl's SFTTrainer.compute_loss sets
(`use_cache=False`). Measured here through trl's own collator: per-example losses of 8
examples packed into one row equal their unpacked losses, with each attention kernel the
CPU offers; and with the cache left on (a hand-written forward pass) they do not.
"""

from __future__ import annotations

from typing import Any

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


# Model families whose padding-free batches are measured here (small random configs).
FAMILIES = ["qwen2", "qwen3", "mistral", "gemma2", "gemma3_text", "phi3", "olmo2"]


def _family(model_type: str, attn: str) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=2048,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        pad_token_id=0,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def _losses(
    attn: str, *, use_cache: bool | None, model: Any = None
) -> tuple[list[float], list[float]]:
    """Per-example mean token loss: packed into one padding-free row (trl's collator) vs
    each example alone."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    if model is None:
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


@pytest.mark.parametrize(
    ("family", "attn"),
    # gemma2 has no sdpa kernel in transformers (it refuses to load with one)
    [(f, a) for f in FAMILIES for a in ("eager", "sdpa") if (f, a) != ("gemma2", "sdpa")],
)
def test_padding_free_keeps_examples_apart_in_every_family(family: str, attn: str) -> None:
    """`train.padding_free` / `packing` across architectures: Qwen, Mistral, Gemma (sliding
    window, soft-capping), Phi-3, OLMo — each example's loss as if alone."""
    packed, alone = _losses(attn, use_cache=False, model=_family(family, attn))
    assert max(abs(p - a) for p, a in zip(packed, alone, strict=True)) < TOLERANCE


def test_with_the_cache_on_packed_examples_see_each_other() -> None:
    """Why the above depends on use_cache=False (transformers' default forward leaks)."""
    packed, alone = _losses("sdpa", use_cache=None)
    assert max(abs(p - a) for p, a in zip(packed[1:], alone[1:], strict=True)) > 0.01


def test_auto_padding_free_only_where_it_costs_less() -> None:
    """`train.padding_free: auto` with eager/sdpa: flat batches for lengths that spread
    like instruction data (padding would waste most of each batch), padded ones for
    lengths that are all alike (a flat row's (Σ lengths)² attention costs more)."""
    import random

    from ftlab.runner.methods.sft import flat_is_cheaper

    config = models.load_config(models.resolve("tiny"))
    rng = random.Random(0)
    spread = [max(8, min(600, int(rng.lognormvariate(4.6, 0.9)))) for _ in range(400)]
    alike = [int(rng.uniform(550, 630)) for _ in range(400)]
    assert flat_is_cheaper(spread, 8, config)
    assert not flat_is_cheaper(alike, 8, config)
    assert not flat_is_cheaper([100] * 64, 8, config)  # no padding to save


def test_truncate_cuts_every_per_token_column() -> None:
    """Padding-free batches without packing are cut by ftlab: a `labels` column was left
    longer than its cut input_ids, and trl's collator failed with an IndexError once a
    row exceeded max_length (the pretrained tiny's longer replies hit it)."""
    import datasets

    from ftlab.runner.methods.sft import truncate

    rows = datasets.Dataset.from_list(
        [
            {
                "input_ids": list(range(10)),
                "labels": list(range(10)),
                "assistant_masks": [1] * 10,
                "seq": 10,
                "other": [1, 2],
            }
        ]
    )
    (row,) = truncate(rows, 6)
    assert row["input_ids"] == row["labels"] == list(range(6))
    assert row["assistant_masks"] == [1] * 6 and row["seq"] == 10 and row["other"] == [1, 2]
