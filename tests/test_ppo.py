"""ftlab's PPO end to end on the tiny model: reward rises, KL stays bounded, resume works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftlab.runner.artifacts import load_artifact
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import StageContext
from ftlab.runner.rundir import latest_checkpoint
from ftlab.runner.spec.schema import Spec

from .conftest import DATA
from .helpers import stage_ctx


def _ctx(tmp_path: Path, records: list, upstream, *, steps: int = 12, **params) -> StageContext:
    spec = Spec.model_validate(
        {
            "name": "ppo",
            "data": {
                "p": {
                    "path": str(DATA / "support_eval.jsonl"),
                    "format": "prompts",
                    "max_rows": 64,
                    "val_fraction": 0.0,
                }
            },
            "stages": [
                {
                    "name": "rl",
                    "method": "ppo",
                    "data": "p",
                    "adapter": {"r": 8, "dropout": 0.0},
                    "params": {
                        "rewards": [{"name": "keywords", "params": {"groups": [["sorry"]]}}],
                        "max_completion_length": 24,
                        "ppo_epochs": 2,
                        "mini_batch_size": 4,
                        "kl_coef": 0.05,
                        **params,
                    },
                    "train": {
                        "learning_rate": 1e-3,
                        "max_steps": steps,
                        "batch_size": 8,
                        "save_steps": 5,
                        "precision": "fp32",
                    },
                }
            ],
        }
    )
    return stage_ctx(spec, spec.stages[0], "p", tmp_path, upstream=upstream, log=records.append)


@pytest.mark.integration
def test_ppo_raises_reward_with_bounded_kl(tmp_path: Path, sft_model) -> None:
    from transformers import AutoModelForCausalLM

    records: list[dict] = []
    result = METHODS.get("ppo").train(_ctx(tmp_path, records, sft_model, kl_target=1.0))
    rewards = [r["reward"] for r in records]
    assert len(rewards) == 12
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3, rewards
    kls = [r["kl"] for r in records]
    assert max(kls) < 20.0, kls  # nats per 48-token completion (≤ 0.4 per token)
    for key in ("entropy", "clip_fraction", "value_loss", "policy_loss", "kl_coef"):
        assert all(key in r for r in records)
    # the adaptive controller moved β towards its target, step by step
    for prev, rec in zip(records, records[1:], strict=False):
        moved = rec["kl_coef"] - prev["kl_coef"]
        assert (moved > 0) == (rec["kl"] > 1.0) or moved == 0
    assert (result.artifact.path / "value_head.pt").is_file()
    # the artifact reloads; without the adapter it is the untouched SFT model (reference)
    model, _ = load_artifact(result.artifact.path)
    orig = dict(AutoModelForCausalLM.from_pretrained(sft_model.path).named_parameters())
    lora_changed = False
    for name, param in model.named_parameters():
        if "lora_" in name:
            lora_changed |= bool(param.abs().sum() > 0)
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(param, orig[key]), name
    assert lora_changed


@pytest.mark.integration
def test_ppo_checkpoint_resume_reaches_the_same_step(tmp_path: Path, sft_model) -> None:
    first: list[dict] = []
    METHODS.get("ppo").train(_ctx(tmp_path, first, sft_model, steps=7))
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "checkpoint-5"
    resumed: list[dict] = []
    ctx = _ctx(tmp_path, resumed, sft_model, steps=7)
    ctx.resume_from = ckpt
    result = METHODS.get("ppo").train(ctx)
    assert [r["step"] for r in resumed] == [6, 7]
    assert result.summary["steps"] == 7
