"""Each supervised method trains the tiny model end to end on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ftlab.runner import models
from ftlab.runner.artifacts import load_artifact
from ftlab.runner.methods import METHODS

from .helpers import Snapshot, context, tiny_spec

SUPERVISED = ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


@pytest.mark.integration
@pytest.mark.parametrize("method", SUPERVISED)
def test_supervised_method_trains_and_reloads(method: str, tmp_path) -> None:
    tok = models.load_tokenizer(models.resolve("tiny"))
    probe = tok.apply_chat_template(
        [{"role": "user", "content": "My order #12345 is late."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    snap = Snapshot(probe)
    spec = tiny_spec(method)
    ctx = context(spec, tmp_path, extra_callbacks=[snap])
    result = METHODS.get(method).train(ctx)
    s = result.summary

    # The loss moved down: on held-out rows, and along the logged training curve.
    assert s["eval_loss"] < s["initial_eval_loss"]
    losses = [r["loss"] for r in ctx.records if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert s["steps"] == 12

    # Every trainable parameter changed; every frozen one did not.
    assert snap.trainable, "no trainable parameters"
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), f"{name} did not change"
    frozen = set(snap.before) - snap.trainable
    if method == "full":
        assert not frozen
    else:
        assert frozen
        for name in frozen:
            before, after = snap.before[name], snap.after[name]
            if name in snap.quantized_names:  # repacked 4-bit kernels round differently
                assert torch.allclose(before, after, atol=2e-2), f"frozen {name} changed"
            else:
                assert torch.equal(before, after), f"frozen {name} changed"
    assert s["trainable_params"] == sum(snap.before[n].numel() for n in snap.trainable)

    # The artifact reloads, reproduces the trained model's logits, and generates.
    model, tokenizer = load_artifact(result.artifact.path)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=probe).logits.float()
    atol = 5e-2 if method == "qlora" else 1e-4
    assert torch.allclose(logits, snap.logits, atol=atol), (logits - snap.logits).abs().max()
    out = model.generate(
        input_ids=probe, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert out.shape[1] > probe.shape[1]


@pytest.mark.integration
def test_a_nan_loss_fails_the_stage_with_what_to_change(tmp_path: Path) -> None:
    """Issue 15.10: a diverging run stops as failed at the step its loss became NaN/inf
    (transformers' default logging hides it behind a running mean)."""
    from ftlab.runner.methods.base import TrainingDiverged

    spec = tiny_spec(
        "full", steps=12, optimizer="sgd", max_grad_norm=0.0, learning_rate=10.0, logging_steps=1
    )
    ctx = context(spec, tmp_path)
    with pytest.raises(TrainingDiverged, match="lower train.learning_rate"):
        METHODS.get("full").train(ctx)
    assert all(math.isfinite(r["loss"]) for r in ctx.records if "loss" in r)  # logged before


def test_plan_and_run_warn_when_max_length_exceeds_the_positions() -> None:
    """Issue 15.10: max_length beyond the model's positions is said before training."""
    from ftlab.runner.models import length_warning, load_config, resolve

    stage = tiny_spec("lora", max_length=100_000).stages[0]
    text = length_warning(stage, load_config(resolve("tiny")))
    assert "exceeds the model's 1024 positions" in text and "max_length <= 1024" in text
    assert length_warning(tiny_spec("lora").stages[0], load_config(resolve("tiny"))) == ""
