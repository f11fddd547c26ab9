"""GPU checks (skipped without CUDA; `make gpu-test` on a GPU machine).

Each supervised method trains a randomly initialised model of a real shape (Qwen2 0.5B)
on CUDA, and the memory plan is compared with `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ftlab.runner import models
from ftlab.runner.lengths import Tokens, row_lengths
from ftlab.runner.methods import METHODS
from ftlab.runner.plan import estimate, meta_counts

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
    counts = meta_counts(config, method, spec.stages[0].adapter)
    assert counts.trainable == s["trainable_params"]
    rows, _ = row_lengths(ctx.data.train, Tokens(tok, ref.path))
    seq = max(min(n.total, 128) for n in rows)
    planned = sum(
        estimate(
            counts=counts,
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


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharded_strategy_through_the_launcher(strategy: str, tmp_path) -> None:
    """FSDP2 and DeepSpeed ZeRO-3 on this machine's GPU(s), through ftlab's torchrun
    launch: the trainer really ran the strategy, and the adapter is saved whole."""
    import subprocess
    import sys

    import torch
    from safetensors import safe_open

    from ftlab.runner.rundir import RunDir

    from .conftest import DATA

    if strategy == "deepspeed":
        pytest.importorskip("deepspeed", reason="pip install deepspeed on the GPU machine")
    spec = tmp_path / "sharded.yaml"
    spec.write_text(
        f"""name: sharded
model: {SHAPE}
data:
  sft: {{path: {DATA}/support_sft.jsonl, overlong: truncate, max_rows: 64, val_fraction: 0.25}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 8, alpha: 16}}
    train: {{max_steps: 4, batch_size: 4, max_length: 128, precision: bf16, eval_steps: 4}}
resources:
  processes: {torch.cuda.device_count()}
  strategy: {strategy}
  deepspeed: {{stage: 3}}
output: {{dir: {tmp_path / "runs"}}}
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if (d / "run.json").exists()]
    record = RunDir(run_dir).stage("sft")
    assert record["summary"]["parallel"] == {"fsdp": "FSDP", "deepspeed": "DEEPSPEED"}[strategy]
    path = Path(record["artifact"]["path"]) / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as f:  # gathered: full LoRA shapes, not shards
        shapes = {tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert all(0 not in s for s in shapes) and any(8 in s for s in shapes)


def test_flash_attention_padding_free_keeps_examples_apart() -> None:
    """Issue 16: padding-free batches under flash attention's varlen kernels (the `auto`
    choice for `train.padding_free`): each example's loss as if alone (bf16 tolerance)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM

    from .test_packing import _losses

    assert importlib.util.find_spec("flash_attn"), "pip install flash-attn for this check"
    ref = models.resolve(SHAPE)
    model = AutoModelForCausalLM.from_pretrained(
        ref.path, dtype=torch.bfloat16, attn_implementation="flash_attention_2"
    ).cuda()
    packed, alone = _losses("flash_attention_2", use_cache=False, model=model)
    assert max(abs(p - a) for p, a in zip(packed, alone, strict=True)) < 2e-2


@pytest.mark.parametrize("knob", ["liger", "paged_adamw_8bit"], ids=["liger", "paged-8bit-adamw"])
def test_cuda_only_knobs_train(knob: str, tmp_path) -> None:
    """Liger kernels and bitsandbytes' paged 8-bit AdamW: a LoRA stage trains on CUDA with
    them, and they are really in use (Liger's modules, bnb's optimizer class)."""
    import torch
    from transformers import TrainerCallback

    train = {"liger": True} if knob == "liger" else {"optimizer": "paged_adamw_8bit"}
    spec = tiny_spec("lora", steps=6, precision="bf16", learning_rate=1e-3, **train)
    spec.model.name = SHAPE

    class Seen(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            opt = kw["optimizer"]
            self.optimizer = type(getattr(opt, "optimizer", opt)).__name__
            self.modules = {type(m).__name__ for m in kw["model"].modules()}

    seen = Seen()
    ctx = context(spec, tmp_path, extra_callbacks=[seen])
    ctx.model = models.resolve(SHAPE)
    ctx.precision = "bf16"
    result = METHODS.get("lora").train(ctx)
    assert math.isfinite(result.summary["eval_loss"]) and result.summary["steps"] == 6
    assert result.summary["eval_loss"] < result.summary["initial_eval_loss"]
    if knob == "liger":
        assert any(name.startswith("Liger") for name in seen.modules), seen.modules
    else:
        assert seen.optimizer == "PagedAdamW8bit", seen.optimizer
    assert torch.cuda.max_memory_allocated() > 0
