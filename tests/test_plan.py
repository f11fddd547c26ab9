"""`ftlab plan`: parameter counts match the real models; memory estimates order sensibly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ftlab.runner import models
from ftlab.runner.data import DataError
from ftlab.runner.methods.common import count_parameters, peft_config
from ftlab.runner.plan import meta_counts, plan_runs
from ftlab.runner.spec.schema import AdapterSpec

from .conftest import EXPERIMENTS
from .helpers import run_spec

FULL_SPEC = """\
name: p
data: {sft: {path: data/support_sft.jsonl, overlong: truncate}}
stages: [{name: sft, method: full, train: {max_length: 128}}]
"""

SUPERVISED = ["full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"]


@pytest.mark.parametrize("method", SUPERVISED)
def test_meta_counts_match_a_real_model(method: str) -> None:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    ref = models.resolve("tiny")
    adapter = AdapterSpec(r=8)
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    cfg = peft_config(method, adapter)
    if cfg is not None:
        model = get_peft_model(model, cfg)
    counts = meta_counts(models.load_config(ref), method, adapter)
    assert (counts.trainable, counts.total) == count_parameters(model)


def test_quickstart_plan() -> None:
    plans = {p.variant: p.stages[-1] for p in plan_runs(EXPERIMENTS / "quickstart.yaml", [])}
    assert set(plans) == {"lora", "qlora", "full"}
    assert plans["full"].trainable == plans["full"].total
    assert plans["lora"].trainable == plans["qlora"].trainable < plans["full"].trainable
    assert plans["lora"].tokens_per_epoch > 30_000  # 360 conversations of ~95 tokens
    assert plans["lora"].steps_per_epoch == 45  # 360 rows / batch 8
    assert plans["qlora"].memory["weights"] < plans["lora"].memory["weights"]


def test_plan_says_when_rows_are_cut_at_max_length() -> None:
    """A judge trained at max_length 256 lost the verdict at the end of every prompt, and
    nothing said so (found by a fresh-eyes user)."""
    over = ["stages.judge.train.max_length=256"]
    with pytest.raises(DataError, match="600 of 600 rows .* no training row is left"):
        plan_runs(EXPERIMENTS / "quickstart.yaml", over)
    over.append("data.judge_pairs.overlong=truncate")  # cut at 256, no verdict is left
    with pytest.raises(DataError, match="no reply token is left to learn from"):
        plan_runs(EXPERIMENTS / "quickstart.yaml", over)
    over[0] = "stages.judge.train.max_length=445"
    (plan, *_) = plan_runs(EXPERIMENTS / "quickstart.yaml", over)
    judge, sft = plan.stages
    cut = "61 of 600 rows of data judge_pairs are longer than train.max_length 445: kept and cut"
    assert any(cut in n for n in judge.notes), judge.notes
    assert not any("longer than train.max_length" in n for n in sft.notes)


def test_seven_b_full_finetune_needs_far_more_than_qlora() -> None:
    over = ["model=random:llama-7b", "stages.sft.train.precision=bf16"]
    plans = {p.variant: p.stages[-1] for p in plan_runs(EXPERIMENTS / "quickstart.yaml", over)}
    full, lora, qlora = plans["full"], plans["lora"], plans["qlora"]
    assert full.total > 6.5e9
    assert full.peak_bytes > 80 * 2**30  # weights + grads + AdamW alone exceed 24 GB
    assert qlora.peak_bytes < lora.peak_bytes < full.peak_bytes
    assert full.memory["optimizer"] == pytest.approx(full.trainable * 8)


def test_plan_cli_prints_formula() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ftlab.cli", "plan", str(EXPERIMENTS / "quickstart.yaml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "peak ≈ weights + gradients + optimizer" in out.stdout
    assert "qlora" in out.stdout


def test_rlhf_plan_counts_the_reward_model_ppo_holds() -> None:
    plans = {
        p.variant: {s.stage: s for s in p.stages}
        for p in plan_runs(EXPERIMENTS / "rlhf_ppo.yaml", [])
    }
    ppo, rm = plans["ppo"]["rl"], plans["ppo"]["rm"]
    assert rm.memory["logits"] == 0.0  # a scalar head
    frozen_bytes = (ppo.total - ppo.trainable) * 4
    assert ppo.memory["extra models"] == pytest.approx(frozen_bytes + (192 + 1) * 16)
    assert plans["grpo"]["rl"].memory["extra models"] == 0.0  # keyword reward, no model


def test_per_gpu_share_under_each_strategy_and_fit_advice() -> None:
    from types import SimpleNamespace

    from ftlab.runner.plan import StagePlan, advice, per_gpu
    from ftlab.runner.spec.schema import ResourcesSpec

    g = 2**30
    memory = {
        "weights": 8 * g,
        "gradients": 8 * g,
        "optimizer": 16 * g,
        "activations": 4 * g,
        "logits": 0.0,
        "extra models": 0.0,
    }
    ddp = ResourcesSpec(processes=4)
    assert per_gpu(memory, ddp) == memory  # a full replica per GPU
    fsdp = ResourcesSpec(processes=4, strategy="fsdp")
    assert sum(per_gpu(memory, fsdp).values()) == (8 + 8 + 16) / 4 * g + 4 * g
    grad_op = ResourcesSpec(processes=4, strategy="fsdp", fsdp={"sharding": "shard_grad_op"})
    assert per_gpu(memory, grad_op)["weights"] == 8 * g
    zero1 = ResourcesSpec(processes=4, strategy="deepspeed", deepspeed={"stage": 1})
    assert (
        per_gpu(memory, zero1)["optimizer"] == 4 * g
        and per_gpu(memory, zero1)["gradients"] == 8 * g
    )
    offload = ResourcesSpec(
        processes=2,
        strategy="deepspeed",
        deepspeed={"stage": 3, "offload_optimizer": True, "offload_params": True},
    )
    assert per_gpu(memory, offload)["optimizer"] == 0 and per_gpu(memory, offload)["weights"] == 0
    stage = StagePlan(
        stage="sft",
        method="full",
        weights="full",
        trainable=1,
        total=1,
        tokens_per_epoch=1,
        steps=1,
        steps_per_epoch=1,
        seq_len=1,
        precision="bf16",
        memory=memory,
    )
    assert advice(stage, SimpleNamespace(world_size=1, strategy="ddp"), 64 * g) == ""
    text = advice(stage, ddp, 16 * g)
    assert "needs ≈36.0G per GPU" in text and "lora or qlora" in text
    assert "ZeRO-3 on 4 GPUs" in text


def test_8bit_optimizer_state_counts_one_byte_per_value(write, sft_data) -> None:
    """bitsandbytes keeps 8-bit state (plus an fp32 absmax per 256 values) for tensors of
    at least 4096 values and fp32 state for smaller ones."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = write("full.yaml", FULL_SPEC)
    (torch32,) = plan_runs(spec, [])
    (bnb8,) = plan_runs(spec, ["stages.sft.train.optimizer=adamw_8bit"])
    model = AutoModelForCausalLM.from_pretrained(models.resolve("tiny").path, dtype=torch.float32)
    large = sum(p.numel() for p in model.parameters() if p.numel() >= 4096)
    assert 0 < large < torch32.stages[0].trainable
    saved = torch32.stages[0].memory["optimizer"] - bnb8.stages[0].memory["optimizer"]
    assert saved == pytest.approx(large * (8 - 2 * (1 + 4 / 256)))


def _plan_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from ftlab.cli.main import app

    result = CliRunner().invoke(app, ["plan", *args])
    assert result.exception is None and result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines


def _tiny_files(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy(models.ensure_tiny() / name, folder / name)
    return folder


def test_plan_cli_from_config_json_alone(write, sft_data, tmp_path: Path) -> None:
    folder = _tiny_files(tmp_path / "weights-not-downloaded", "config.json")
    spec = write("s.yaml", FULL_SPEC + f"model: {folder}\n")
    out = _plan_cli(str(spec))
    assert f"no tokenizer in {folder}" in out and "≈" in out
    (estimated,) = plan_runs(spec, [])
    (exact,) = plan_runs(spec, ["model=tiny"])
    assert estimated.stages[0].total == exact.stages[0].total  # counts need the config only
    assert 0.5 < estimated.stages[0].tokens_per_epoch / exact.stages[0].tokens_per_epoch < 2


def test_plan_cli_with_a_tokenizer_but_no_chat_template(write, sft_data, tmp_path: Path) -> None:
    folder = _tiny_files(
        tmp_path / "no-template", "config.json", "tokenizer.json", "tokenizer_config.json"
    )
    spec = write("s.yaml", FULL_SPEC + f"model: {folder}\n")
    out = _plan_cli(str(spec))
    assert f"the tokenizer in {folder} has no chat template" in out
    keep = ["data.sft.overlong=truncate"]  # the same rows in both counts
    (plan,) = plan_runs(spec, keep)
    (exact,) = plan_runs(spec, [*keep, "model=tiny"])
    assert 0.5 < plan.stages[0].tokens_per_epoch / exact.stages[0].tokens_per_epoch <= 1


STEPS_SPEC = """\
name: steps
data:
  sft: {{path: data/support_sft.jsonl, overlong: truncate, max_rows: 48, val_fraction: 0.125}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 4, alpha: 8, dropout: 0.0}}
    train: {{learning_rate: 5.0e-3, epochs: {epochs}, grad_accum: {accum}, batch_size: 4,
             max_length: {max_length}, packing: {packing}, logging_steps: 2, save_steps: 1000,
             precision: fp32}}
output: {{dir: {runs}}}
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("epochs", "accum", "max_length", "packing"),
    [(3, 3, 96, False), (2.5, 2, 256, True)],
    ids=["3-epochs-accum-3", "2.5-epochs-accum-2-packed"],
)
def test_plan_steps_are_the_optimizer_steps_a_real_run_does(
    write, sft_data, tmp_path: Path, epochs: float, accum: int, max_length: int, packing: bool
) -> None:

    text = STEPS_SPEC.format(
        epochs=epochs,
        accum=accum,
        max_length=max_length,
        packing=str(packing).lower(),
        runs=tmp_path / "runs",
    )
    path = write("steps.yaml", text)
    (plan,) = plan_runs(path, [])
    done = run_spec(path)[1].stages["sft"]["summary"]
    assert done["steps"] > done["train_rows"] / 4 / accum  # several epochs, accumulated
    assert plan.stages[0].steps == done["steps"]  # the trainer's global_step


SEVENTY_B = """\
name: big
model: random:llama-70b
data: {sft: {path: data/support_sft.jsonl, overlong: truncate, max_rows: 64}}
stages: [{name: sft, method: full, train: {precision: bf16, batch_size: 1}}]
resources: {processes: 8, strategy: deepspeed, deepspeed: {stage: 3}}
"""


def test_plan_advises_offload_when_it_makes_a_70b_full_finetune_fit(write, sft_data) -> None:
    from ftlab.runner.plan import _mb, advice, per_gpu
    from ftlab.runner.spec.schema import ResourcesSpec

    path = write("big.yaml", SEVENTY_B)
    out = _plan_cli(str(path), "--gpu-memory", "80")
    (plan,) = plan_runs(path, [])
    stage, g = plan.stages[0], 2**30
    assert stage.total > 69e9
    zero3 = dict(processes=8, strategy="deepspeed")
    offload_opt = ResourcesSpec(**zero3, deepspeed={"stage": 3, "offload_optimizer": True})
    both = ResourcesSpec(
        **zero3, deepspeed={"stage": 3, "offload_optimizer": True, "offload_params": True}
    )
    as_planned, opt_only, everything = (
        sum(per_gpu(stage.memory, r).values()) for r in (plan.resources, offload_opt, both)
    )
    assert as_planned > 80 * g >= opt_only > 40 * g >= everything
    assert (
        f"ZeRO-3 with optimizer offload on 8 GPUs (≈{_mb(opt_only)} each" in out
        and "resources.deepspeed.offload_optimizer=true" in out
    )
    fsdp = advice(stage, ResourcesSpec(processes=8, strategy="fsdp"), 80 * g)
    assert "FSDP with CPU offload on 8 GPUs" in fsdp and "resources.fsdp.cpu_offload=true" in fsdp
    tight = advice(stage, plan.resources, 40 * g)  # only both offloads fit in 40 GiB
    assert f"(≈{_mb(everything)} each" in tight
    assert "resources.deepspeed.offload_optimizer=true resources.deepspeed.offload_params=true" in (
        tight
    )


GRPO_SPEC = """\
name: grpo_steps
data:
  p: {{path: {data}/support_eval.jsonl, format: prompts, max_rows: 11, val_fraction: 0.0}}
stages:
  - name: rl
    method: grpo
    data: p
    adapter: {{r: 4}}
    params:
      rewards: [{{name: length, params: {{target_words: 4}}}}]
      num_generations: 4
      max_completion_length: 6
    train: {{epochs: 1.5, batch_size: 4, grad_accum: 2, precision: fp32, save_steps: 1000}}
"""


@pytest.mark.integration
def test_plan_steps_of_grpo_are_the_steps_a_real_run_does(write, tmp_path: Path) -> None:
    """trl's GRPO loader draws whole generation batches of batch_size × grad_accum / 4
    unique prompts (here 2 of 11: one is left out), each repeated num_generations times."""
    from ftlab.runner.methods import METHODS
    from ftlab.runner.spec.load import expand_runs

    from .conftest import DATA
    from .helpers import stage_ctx

    path = write("grpo.yaml", GRPO_SPEC.format(data=DATA))
    (plan,) = plan_runs(path, [])
    ((_, spec),) = expand_runs(path, [])
    ctx = stage_ctx(spec, spec.stages[0], "p", tmp_path / "work")
    done = METHODS.get("grpo").train(ctx).summary
    assert (plan.stages[0].steps_per_epoch, plan.stages[0].steps) == (5, 8)
    assert plan.stages[0].steps == done["steps"]


def test_model_dtype_bfloat16_halves_full_finetune_weights_gradients_and_state(
    write, sft_data
) -> None:
    """Issue 16: `model.dtype: bfloat16` with `full` trains bf16 weights: weights,
    gradients and AdamW state (torch keeps it in the parameter dtype) cost half; an adapter
    base loaded as float32 costs double its bf16 size."""
    import torch

    spec = write("full.yaml", FULL_SPEC)
    (auto,) = plan_runs(spec, [])
    (bf16,) = plan_runs(spec, ["model.dtype=bfloat16"])
    a, b = auto.stages[0].memory, bf16.stages[0].memory
    for part in ("weights", "gradients", "optimizer"):
        assert b[part] == pytest.approx(a[part] / 2), part
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(8, dtype=torch.bfloat16))])
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(8, dtype=torch.bfloat16)
    opt.step()
    assert all(v.dtype == torch.bfloat16 for s in opt.state.values() for v in s.values() if v.dim())
    lora = ["stages.sft.method=lora", "stages.sft.train.precision=bf16"]
    (half,) = plan_runs(spec, lora)
    (fp32,) = plan_runs(spec, [*lora, "model.dtype=float32"])
    frozen = half.stages[0].total - half.stages[0].trainable
    extra = fp32.stages[0].memory["weights"] - half.stages[0].memory["weights"]
    assert extra == pytest.approx(frozen * 2)
