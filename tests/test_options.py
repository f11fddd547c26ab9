"""Training options users expect, a chained stage, and bad input failing before any write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

from ftlab.runner.methods import METHODS
from ftlab.runner.models import resolve_precision

from .helpers import context, tiny_spec
from .test_runner import SPEC, _run, _spec


@pytest.mark.integration
def test_packing_periodic_eval_early_stopping_checkpointing_bf16(tmp_path: Path) -> None:
    spec = tiny_spec(
        "lora",
        steps=40,
        rows=96,
        packing=True,
        eval_steps=2,
        early_stopping_patience=1,
        gradient_checkpointing=True,
        precision="bf16",
        learning_rate=1e-7,
        save_steps=2,
    )
    spec.stages[0].adapter.rslora = True
    spec.stages[0].adapter.target_modules = ["q_proj", "v_proj"]
    ctx = context(spec, tmp_path)
    ctx.precision = "bf16"
    result = METHODS.get("lora").train(ctx)
    evals = [r for r in ctx.records if "eval_loss" in r]
    assert len(evals) >= 2  # evaluated every 2 steps
    assert result.summary["steps"] < 40  # a near-zero learning rate stops improving early
    assert result.summary["precision"] == "bf16"
    cfg = json.loads((result.artifact.path / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is True and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]


@pytest.mark.integration
def test_prompt_completion_data_trains(tmp_path: Path) -> None:
    path = tmp_path / "pc.jsonl"
    rows = [
        {"prompt": f"Order #{i} is late.", "completion": " I have traced it."} for i in range(40)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tiny_spec("lora", steps=8)
    spec.data["sft"].path = str(path)
    spec.data["sft"].format = "prompt_completion"
    ctx = context(spec, tmp_path / "work")
    result = METHODS.get("lora").train(ctx)
    assert result.summary["eval_loss"] < result.summary["initial_eval_loss"]


@pytest.mark.integration
def test_chained_stage_starts_from_upstream_adapter(write, sft_data, tmp_path: Path) -> None:
    text = SPEC.format(steps=4, save=50, runs=tmp_path / "runs")
    head, _, tail = text.partition("output:")
    text = head + (
        "  - {name: more, method: full, from: sft,"
        " train: {max_steps: 4, learning_rate: 1.0e-3, precision: fp32, max_length: 96}}\n"
        "output:" + tail
    )
    res = _run(write("chain.yaml", text))
    more = res.stages["more"]
    assert more["summary"]["method"] == "full"
    assert more["artifact"]["base"].endswith("merged_base")
    # it started where sft ended, not from the untrained model
    assert more["summary"]["initial_eval_loss"] == pytest.approx(
        res.stages["sft"]["summary"]["eval_loss"], abs=1e-3
    )


def test_auto_precision_follows_the_hardware() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expect = "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"
    import torch

    if torch.cuda.is_available():
        expect = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto") == expect
    assert resolve_precision("fp32") == "fp32"


def test_bad_data_fails_before_anything_is_written(write, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "support_sft.jsonl").write_text('{"messages": [}\n')
    path = write("spec.yaml", SPEC.format(steps=2, save=50, runs=tmp_path / "runs"))
    out = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "support_sft.jsonl:1: not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.glob("runs/*/run.json"))


@pytest.mark.integration
def test_continue_keeps_training_the_upstream_adapter(write, sft_data, tmp_path: Path) -> None:
    text = SPEC.format(steps=4, save=50, runs=tmp_path / "runs")
    head, _, tail = text.partition("output:")
    text = head + (
        "  - {name: more, method: lora, from: sft, adapter_mode: continue,"
        " train: {max_steps: 4, learning_rate: 5.0e-3, precision: fp32, max_length: 96}}\n"
        "output:" + tail
    )
    res = _run(write("cont.yaml", text))
    sft, more = res.stages["sft"], res.stages["more"]
    assert more["artifact"]["base"] == sft["artifact"]["base"]  # same base, no merge
    assert more["summary"]["trainable_params"] == sft["summary"]["trainable_params"]
    assert more["summary"]["initial_eval_loss"] == pytest.approx(
        sft["summary"]["eval_loss"], abs=1e-4
    )
    assert more["summary"]["eval_loss"] < more["summary"]["initial_eval_loss"]


def test_continue_needs_an_adapter_upstream(write) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    text = SPEC.format(steps=4, save=50, runs="runs").replace("method: lora", "method: full")
    head, _, tail = text.partition("output:")
    text = head + "  - {name: b, method: lora, from: sft, adapter_mode: continue}\noutput:" + tail
    with pytest.raises(SpecError, match="use adapter_mode: merge"):
        load_spec(write("c.yaml", text))


class _Seen(TrainerCallback):
    """What the trainer really runs with, seen from inside (optimizer, model, args)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.args = args
        self.lrs = sorted({g["lr"] for g in kw["optimizer"].param_groups if g["params"]})
        embed = kw["model"].get_input_embeddings()
        self.embedding_hooks = len(embed._forward_hooks)


@pytest.mark.integration
def test_recipe_knobs_reach_the_trainer(tmp_path: Path) -> None:
    """Issue 16: LoRA+ (B at ratio × lr), NEFTune (a hook on the input embeddings while
    training), trl's DFT loss, padding-free batches — set in the spec, seen by the
    trainer, recorded in the summary."""
    spec = tiny_spec(
        "lora",
        steps=4,
        learning_rate=1e-3,
        neftune_noise_alpha=5.0,
        loss_type="dft",
        padding_free=True,
    )
    spec.stages[0].adapter.loraplus_lr_ratio = 16
    seen = _Seen()
    ctx = context(spec, tmp_path, extra_callbacks=[seen])
    result = METHODS.get("lora").train(ctx)
    assert seen.lrs == pytest.approx([1e-3, 16e-3])
    assert seen.embedding_hooks == 1
    assert seen.args.loss_type == "dft" and seen.args.padding_free
    assert result.summary["batching"] == {
        "padding_free": True,
        "packing": False,
        "group_by_length": False,
    }
    assert result.summary["train_on"] == "assistant"
    assert result.summary["steps"] == 4


@pytest.mark.integration
def test_full_finetune_in_bfloat16_weights(tmp_path: Path) -> None:
    """`model.dtype: bfloat16` with `full`: the trained weights are bf16, as the plan
    counts them, and the stage trains."""
    import torch

    spec = tiny_spec("full", steps=3, precision="bf16")
    spec.model.dtype = "bfloat16"
    seen = _Seen()
    ctx = context(spec, tmp_path, extra_callbacks=[seen])
    ctx.precision = "bf16"
    result = METHODS.get("full").train(ctx)
    assert result.summary["steps"] == 3
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(result.artifact.path, dtype="auto")
    assert next(saved.parameters()).dtype == torch.bfloat16


def test_liger_on_a_machine_without_cuda_says_what_to_do(write, sft_data, tmp_path) -> None:
    from ftlab.runner.execute import preflight
    from ftlab.runner.models import ModelError
    from ftlab.runner.spec.load import expand_runs

    path = _spec(write, sft_data, tmp_path)
    ((_, spec),) = expand_runs(path, ["stages.sft.train.liger=true"])
    with pytest.raises(ModelError, match="needs a CUDA GPU .* set train.liger: false"):
        preflight(spec, spec_dir=path.parent)
