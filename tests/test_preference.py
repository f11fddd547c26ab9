"""Preference alignment methods train on the tiny model after (or without) an SFT stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftlab.runner import models
from ftlab.runner.artifacts import load_artifact
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import Artifact
from ftlab.runner.spec.schema import Spec

from .conftest import DATA
from .helpers import Snapshot, stage_ctx

PREFERENCE = ["dpo", "ipo", "simpo", "cpo", "orpo", "kto"]


def _spec(method: str, **params) -> Spec:
    fmt, path = (
        ("unpaired", "support_feedback.jsonl")
        if method == "kto"
        else ("preference", "support_prefs.jsonl")
    )
    return Spec.model_validate(
        {
            "name": "align",
            "data": {
                "sft": {"path": str(DATA / "support_sft.jsonl"), "max_rows": 64},
                "pref": {
                    "path": str(DATA / path),
                    "format": fmt,
                    "max_rows": 48,
                    "val_fraction": 0.17,
                },
            },
            "stages": [
                {
                    "name": "sft",
                    "method": "lora",
                    "adapter": {"r": 8, "dropout": 0.0},
                    "train": {
                        "learning_rate": 5e-3,
                        "max_steps": 16,
                        "max_length": 128,
                        "precision": "fp32",
                    },
                },
                {
                    "name": "align",
                    "method": method,
                    "from": "sft",
                    "data": "pref",
                    "adapter": {"r": 8, "dropout": 0.0},
                    "params": params,
                    "train": {
                        "learning_rate": 5e-3,
                        "max_steps": 10,
                        "batch_size": 4,
                        "max_length": 128,
                        "logging_steps": 2,
                        "precision": "fp32",
                    },
                },
            ],
        }
    )


@pytest.fixture(scope="module")
def sft_artifact(sft_model) -> Artifact:
    """Alignment starts from the SFT-trained tiny model (full fine-tune, see conftest)."""
    return sft_model


@pytest.mark.integration
@pytest.mark.parametrize("method", PREFERENCE)
def test_preference_method_after_sft(method: str, sft_artifact: Artifact, tmp_path) -> None:
    spec = _spec(method)
    stage = spec.stages[1]
    tok = models.load_tokenizer(models.resolve("tiny"))
    probe = tok("My order is late.", return_tensors="pt")["input_ids"]
    snap = Snapshot(probe)
    records: list[dict] = []
    ctx = stage_ctx(
        spec,
        stage,
        "pref",
        tmp_path,
        upstream=sft_artifact,
        log=records.append,
        extra_callbacks=[snap],
    )
    result = METHODS.get(method).train(ctx)

    # Judged on the same held-out pairs before and after training (per-batch training
    # losses are too noisy over 10 steps to compare).
    evals = [r for r in records if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1]["eval_loss"] < evals[0]["eval_loss"], evals
    if method in ("dpo", "ipo", "cpo"):  # ORPO: its loss holds the odds ratio
        key = "eval_rewards/margins"
        assert evals[-1][key] > evals[0][key], (evals[0][key], evals[-1][key])
    if method == "simpo":  # starts saturated on the pretrained tiny's SFT model (margin ~11,
        # loss ~1e-5): the margin drifts; what it separates must not get worse
        key = "eval_rewards/accuracies"
        assert evals[-1][key] >= evals[0][key], (evals[0][key], evals[-1][key])
    assert snap.trainable
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), name
    for name in set(snap.before) - snap.trainable:
        assert torch.equal(snap.before[name], snap.after[name]), name
    # the new adapter sits on the SFT model, not on the untrained base
    assert result.artifact.base == str(sft_artifact.path)
    model, _ = load_artifact(result.artifact.path)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=probe).logits, snap.logits, atol=1e-4)


@pytest.mark.integration
def test_orpo_from_the_base_model_without_sft(tmp_path) -> None:
    spec = _spec("orpo")
    stage = spec.stages[1].model_copy(update={"from_": ""})
    records: list[dict] = []
    ctx = stage_ctx(spec, stage, "pref", tmp_path, log=records.append)
    result = METHODS.get("orpo").train(ctx)
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    assert result.artifact.base == models.resolve("tiny").path


def test_params_are_checked_in_the_spec(tmp_path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    (tmp_path / "s.yaml").write_text(
        "name: a\n"
        f"data: {{pref: {{path: {DATA / 'support_prefs.jsonl'}, format: preference}}}}\n"
        "stages:\n"
        "  - {name: a, method: dpo, data: pref, params: {beta: 0.1, loss_type: exo_pair}}\n"
        "  - {name: b, method: dpo, data: pref, params: {betta: 0.1}}\n"
        "  - {name: c, method: kto, data: pref}\n"
    )
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "s.yaml")
    text = err.value.format()
    assert "exo_pair needs label_smoothing" in text
    assert "stages.1.params.betta" in text
    assert "formats unpaired for method kto" in text


def test_plan_counts_a_lora_policy_and_pairs_for_alignment() -> None:
    from ftlab.runner.plan import plan_runs

    path = Path(__file__).parent.parent / "experiments" / "align_offline.yaml"
    plans = {p.variant: p for p in plan_runs(path, [])}
    sft, align = plans["dpo"].stages
    assert sft.method == "full" and align.method == "dpo"
    assert align.trainable == 217_088 < sft.trainable < align.total  # a LoRA r=16 policy
    assert align.memory["logits"] > sft.memory["logits"]  # chosen + rejected per row


def test_kto_with_one_label_is_a_clear_error(tmp_path) -> None:
    from ftlab.runner.data import DataError

    rows = tmp_path / "fb.jsonl"
    rows.write_text(
        "".join(f'{{"prompt": "p{i}", "completion": "c", "label": true}}\n' for i in range(10))
    )
    spec = _spec("kto")
    spec.data["pref"].path = str(rows)
    ctx = stage_ctx(spec, spec.stages[1], "pref", tmp_path)
    with pytest.raises(DataError, match="KTO needs both desirable"):
        METHODS.get("kto").train(ctx)


@pytest.mark.integration
def test_reward_model_learns_pairs_and_scores_as_a_reward_function(
    sft_artifact: Artifact, tmp_path
) -> None:
    from ftlab.runner import rewards

    spec = _spec("dpo")
    stage = spec.stages[1].model_copy(update={"method": "reward_model", "params": {}})
    records: list[dict] = []
    ctx = stage_ctx(spec, stage, "pref", tmp_path, upstream=sft_artifact, log=records.append)
    result = METHODS.get("reward_model").train(ctx)
    s = result.summary
    assert s["eval_loss"] < s["initial_eval_loss"]
    assert (
        s["pairwise_accuracy"] >= 0.75 and s["pairwise_accuracy"] >= s["initial_pairwise_accuracy"]
    )
    # the artifact, used as a reward function, prefers the chosen replies
    (fn,), _ = rewards.build(
        rewards.resolve_stage_refs(
            [rewards.RewardSpec(name="reward_model", params={"stage": "rm"})],
            {"rm": result.artifact},
        )
    )
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in ctx.data.val]
    chosen = fn([r["chosen"] for r in ctx.data.val], prompts=prompts)
    rejected = fn([r["rejected"] for r in ctx.data.val], prompts=prompts)
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    assert wins / len(chosen) >= 0.75


def test_ppo_needs_a_reward(tmp_path) -> None:
    from ftlab.runner.spec.errors import SpecError
    from ftlab.runner.spec.load import load_spec

    (tmp_path / "s.yaml").write_text(
        "name: a\n"
        f"data: {{p: {{path: {DATA / 'support_eval.jsonl'}, format: prompts}}}}\n"
        "stages:\n"
        "  - {name: rl, method: ppo, data: p, params: {kl_coef: 0.1}}\n"
        "  - {name: later, method: lora, data: p, from: nope}\n"
    )
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "s.yaml")
    text = err.value.format()
    assert "stages.0.params.rewards" in text
    assert "stages.1.from" in text


def test_reference_cache_key_follows_the_token_ids() -> None:
    """The reference log-prob cache key is the rows' content: equal rows give one key
    (however they are stored), a changed token or an extra row another; the `ref_*`
    columns the cache itself adds do not count."""
    import datasets

    from ftlab.runner.methods.refcache import rows_hash

    rows = {
        "prompt_ids": [[1, 2, 3], [4, 5]],
        "chosen_ids": [[6, 7], [8]],
        "rejected_ids": [[9], [10, 11]],
    }
    base = rows_hash(datasets.Dataset.from_dict(rows))
    assert rows_hash(datasets.Dataset.from_dict(rows)) == base
    flipped = datasets.Dataset.from_dict({k: v[::-1] for k, v in rows.items()})
    assert rows_hash(flipped.select([1, 0])) == base  # an index mapping is read through
    changed = {**rows, "chosen_ids": [[6, 7], [12]]}
    assert rows_hash(datasets.Dataset.from_dict(changed)) != base
    longer = {k: [*v, [1]] for k, v in rows.items()}
    assert rows_hash(datasets.Dataset.from_dict(longer)) != base
    moved = {**rows, "prompt_ids": [[1, 2], [3, 4, 5]]}  # same tokens, other boundaries
    assert rows_hash(datasets.Dataset.from_dict(moved)) != base
    with_ref = datasets.Dataset.from_dict({**rows, "ref_chosen_logps": [-1.0, -2.0]})
    assert rows_hash(with_ref) == base


@pytest.mark.integration
def test_full_parameter_dpo_changes_every_weight(sft_artifact: Artifact, tmp_path) -> None:
    """Issue 21: `params: {full: true}` trains the whole model (no adapter): the held-out
    loss falls, every parameter moves, and the artifact is full weights that reload to
    the trained model's logits."""
    spec = _spec("dpo", full=True)
    spec.stages[1].train.learning_rate = 5e-4
    tok = models.load_tokenizer(models.resolve("tiny"))
    probe = tok("My order is late.", return_tensors="pt")["input_ids"]
    snap = Snapshot(probe)
    records: list[dict] = []
    ctx = stage_ctx(
        spec,
        spec.stages[1],
        "pref",
        tmp_path,
        upstream=sft_artifact,
        log=records.append,
        extra_callbacks=[snap],
    )
    result = METHODS.get("dpo").train(ctx)
    evals = [r for r in records if "eval_loss" in r]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"], evals
    assert snap.trainable == set(snap.before)  # no frozen weight, no adapter
    assert result.summary["trainable_params"] == result.summary["total_params"]
    for name in snap.trainable:
        assert not torch.equal(snap.before[name], snap.after[name]), name
    assert result.artifact.kind == "full"
    model, _ = load_artifact(result.artifact.path)
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=probe).logits, snap.logits, atol=1e-4)
