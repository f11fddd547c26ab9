"""GPU checks (skipped without CUDA; `make gpu-test` on a GPU machine).

Each supervised method trains a randomly initialised model of a real shape (Qwen2 0.5B)
on CUDA, and the memory plan is compared with `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import math

import pytest

from ftlab.runner import models
from ftlab.runner.methods import METHODS
from ftlab.runner.plan import _token_lengths, estimate, meta_counts

from .helpers import Snapshot, context, tiny_spec

pytestmark = pytest.mark.gpu
SHAPE = "random:qwen2-0.5b"
SUPERVISED = ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


@pytest.mark.parametrize("method", SUPERVISED)
def test_method_on_real_shape_with_memory_plan(method: str, tmp_path) -> None:
    import torch

    spec = tiny_spec(
        method,
        steps=6,
        rows=64,
        precision="bf16",
        batch_size=4,
        max_length=128,
        learning_rate=1e-4 if method == "full" else 1e-3,
    )
    spec.model.name = SHAPE
    ref = models.resolve(SHAPE)
    tok = models.load_tokenizer(ref)
    probe = tok("My order is late.", return_tensors="pt")["input_ids"].cuda()
    snap = Snapshot(probe)
    ctx = context(spec, tmp_path, extra_callbacks=[snap])
    ctx.model = ref
    ctx.precision = "bf16"
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = METHODS.get(method).train(ctx)
    measured = torch.cuda.max_memory_allocated()

    s = result.summary
    assert math.isfinite(s["eval_loss"]) and s["steps"] == 6
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), name

    config = models.load_config(ref)
    trainable, total, linear = meta_counts(config, method, spec.stages[0].adapter)
    assert trainable == s["trainable_params"]
    seq = max(_token_lengths(ctx.data.train, tok, 128))
    planned = sum(
        estimate(
            trainable=trainable,
            total=total,
            linear=linear,
            method=method,
            precision="bf16",
            optimizer="adamw_torch",
            batch=4,
            seq=seq,
            config=config,
            checkpointing=False,
        ).values()
    )
    ratio = planned / measured
    print(
        f"\n[memory plan] {method:14} planned {planned / 2**30:6.2f} GiB  measured "
        f"{measured / 2**30:6.2f} GiB  ratio {ratio:.2f}"
    )
    assert 0.25 < ratio < 4, "the memory plan is off by more than 4x"
