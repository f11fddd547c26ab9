"""PPO for language models — ftlab's own, since trl removed its PPO trainer after 1.12.

The standard RLHF recipe (Ziegler et al. 2019; Ouyang et al. 2022), kept small:
  policy     a LoRA adapter on the upstream (merged) model
  reference  the same model with the adapter disabled — no second copy in memory
  value      a linear head on the policy's last hidden state, trained jointly
  reward     registered reward functions (a reward_model stage's artifact among them),
             scored once per completion, minus a per-token KL penalty (fixed or adaptive)
  update     GAE advantages (whitened), clipped policy and value losses, several PPO
             epochs of minibatches per rollout batch
The maths lives in `ppo_math.py`; this module is the loop around it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ftlab.runner.data import chat_prompt
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import (
    Artifact,
    Footprint,
    Problem,
    StageContext,
    StageResult,
    check_finite,
)
from ftlab.runner.methods.common import count_parameters, peak_memory_mb, policy
from ftlab.runner.methods.online import RolloutParams, Rollouts, reward_functions
from ftlab.runner.spec.schema import Spec, StageSpec
from ftlab.runner.steps import Steps, ppo_steps


class PPOParams(RolloutParams):
    ppo_epochs: int = Field(4, ge=1)
    """Optimisation passes over each rollout batch."""
    mini_batch_size: int = Field(4, ge=1)
    """Rollouts per gradient step within a PPO epoch."""
    clip_range: float = Field(0.2, gt=0)
    """ε of the clipped policy objective."""
    clip_range_value: float = Field(0.2, gt=0)
    """Clipping of the value update around the rollout's values."""
    vf_coef: float = Field(0.1, ge=0)
    """Weight of the value loss."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE λ."""
    kl_coef: float = Field(0.05, ge=0)
    """Initial KL penalty coefficient β."""
    kl_target: float = Field(0.0, ge=0)
    """Adaptive KL: target KL per sequence (nats); 0 = keep β fixed."""
    kl_horizon: int = Field(10_000, ge=1)
    """Adaptive KL horizon (rollouts)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimator in the reward penalty."""
    whiten_rewards: bool = False
    """Normalise scores over each rollout batch before adding the KL penalty."""


@METHODS.register("ppo")
class PPO(Rollouts):
    """ftlab's own PPO loop (one process; AdamW)."""

    params_model = PPOParams
    distributed = False

    def train(self, ctx: StageContext) -> StageResult:
        return train_ppo(ctx)

    def check(self, stage: StageSpec, spec: Spec) -> list[Problem]:
        if stage.adapter_mode != "continue":
            return []
        return [
            (
                ("adapter_mode",),
                "merge for ppo (its reference is the policy with the adapter disabled, "
                "which must be the upstream model)",
                "continue",
                "use adapter_mode: merge",
            )
        ]

    def footprint(self, stage: StageSpec) -> Footprint:
        rollout = "optim steps of ppo count rollout batches (ppo_epochs × minibatch updates each)"
        notes: tuple[str, ...] = (rollout,)
        if stage.train.optimizer != "adamw_torch":
            notes += (f"ftlab's PPO loop uses AdamW, not train.optimizer {stage.train.optimizer}",)
        return replace(
            super().footprint(stage), value_head=True, optimizer="adamw_torch", notes=notes
        )

    def steps(self, stage: StageSpec, lengths: list[int], processes: int) -> Steps:
        t = stage.train
        return ppo_steps(
            rows=len(lengths), batch=t.batch_size, epochs=t.epochs, max_steps=t.max_steps
        )


def _encode_prompts(rows: list[dict[str, Any]], tokenizer: Any) -> list[Any]:
    chat = bool(getattr(tokenizer, "chat_template", None))
    if chat:
        return [chat_prompt(r) for r in rows]
    return [r["prompt"] for r in rows]


def _prompt_ids(prompts: list[Any], tokenizer: Any, device: Any) -> Any:
    if isinstance(prompts[0], list):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    else:
        texts = prompts
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def _forward(
    model: Any, value_head: Any, ids: Any, attn: Any, n_prompt: int, temperature: float
) -> tuple[Any, Any, Any]:
    """(log-probs of the response tokens, values, logits) for full sequences."""
    import torch

    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids,
        attention_mask=attn,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
    )
    logits = out.logits[:, n_prompt - 1 : -1].float() / temperature
    response = ids[:, n_prompt:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    hidden = out.hidden_states[-1][:, n_prompt - 1 : -1]
    values = value_head(hidden.to(value_head.weight.dtype)).squeeze(-1)
    return logp, values, logits


def _response_mask(response: Any, eos_id: int) -> Any:
    """1 up to and including the first EOS, 0 after it."""
    is_eos = (response == eos_id).int()
    after = (is_eos.cumsum(-1) - is_eos) > 0
    return (~after).float()


def train_ppo(ctx: StageContext) -> StageResult:
    import torch
    from peft import PeftModel, get_peft_model

    from ftlab.runner.methods import ppo_math as pm
    from ftlab.runner.models import load_tokenizer
    from ftlab.runner.progress import Bar

    started = time.time()
    params = PPOParams.model_validate(ctx.stage.params)
    t = ctx.stage.train
    fns, weights = reward_functions(ctx, params)
    seed = ctx.spec.training_seed(ctx.stage.name)
    torch.manual_seed(seed)
    random.seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, peft_cfg, base = policy(ctx, method="lora")
    if peft_cfg is not None:
        model = get_peft_model(model, peft_cfg)
    if not isinstance(model, PeftModel):
        raise ValueError("ppo trains a LoRA policy; its reference is the adapter disabled")
    model.to(device)
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    base_model: Any = model.get_base_model()
    hidden = int(base_model.config.hidden_size)
    value_head = torch.nn.Linear(hidden, 1).to(device)
    # values start at 0: the first advantages are the (whitened) returns themselves, not
    # the noise of a random head, so early updates point where the reward does
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay)
    kl_ctl = pm.AdaptiveKLController(
        params.kl_coef, target=params.kl_target or None, horizon=params.kl_horizon
    )
    prompts = _encode_prompts(ctx.data.train, tokenizer)
    planned = ppo_steps(
        rows=len(prompts), batch=t.batch_size, epochs=t.epochs, max_steps=t.max_steps
    )
    batches_per_epoch, total_steps = planned.per_epoch, planned.total
    step = 0
    if ctx.resume_from is not None:
        step = _load_checkpoint(ctx.resume_from, model, value_head, optimizer, kl_ctl)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx.precision == "bf16")
    order = list(range(len(prompts)))
    bar = Bar(total_steps, "training", initial=step)
    rewards_logged: list[float] = []
    kls: list[float] = []
    while step < total_steps:
        rng = random.Random(seed * 1_000_003 + step // batches_per_epoch)
        if step % batches_per_epoch == 0:
            rng.shuffle(order)
        k = (step % batches_per_epoch) * t.batch_size
        batch_prompts = [prompts[i] for i in order[k : k + t.batch_size]]
        record = _ppo_step(
            model,
            value_head,
            optimizer,
            tokenizer,
            batch_prompts,
            fns,
            weights,
            params,
            kl_ctl,
            trainable,
            t.max_grad_norm,
            autocast,
            device,
        )
        step += 1
        record["step"] = step
        check_finite(record, stage=ctx.stage.name)
        ctx.log({**record, "time": time.time()})
        rewards_logged.append(record["reward"])
        kls.append(record["kl"])
        bar.update(1)
        bar.set_postfix({"reward": f"{record['reward']:.3f}", "kl": f"{record['kl']:.3f}"})
        if step % t.save_steps == 0 and step < total_steps:
            _save_checkpoint(
                ctx.work_dir / "checkpoints" / f"checkpoint-{step}",
                model,
                value_head,
                optimizer,
                kl_ctl,
                step,
            )
    bar.close()
    artifact = _save_artifact(ctx.work_dir / "artifact", model, value_head, tokenizer, base)
    n_trainable, n_total = count_parameters(model)
    n_value = sum(p.numel() for p in value_head.parameters())
    summary = {
        "method": "ppo",
        "steps": step,
        "trainable_params": n_trainable + n_value,
        "total_params": n_total + n_value,
        "train_rows": len(prompts),
        "val_rows": len(ctx.data.val),
        "precision": ctx.precision,
        "reward_first": rewards_logged[0] if rewards_logged else None,
        "reward_last": rewards_logged[-1] if rewards_logged else None,
        "kl_last": kls[-1] if kls else None,
        "kl_coef": kl_ctl.value,
        "train_loss": None,
        "eval_loss": None,
        "initial_eval_loss": None,
        "wall_time_s": time.time() - started,
        "peak_memory_mb": peak_memory_mb(),
        "params": params.model_dump(),
    }
    return StageResult(artifact=artifact, summary=summary)


def _ppo_step(
    model: Any,
    value_head: Any,
    optimizer: Any,
    tokenizer: Any,
    prompts: list[Any],
    fns: list[Any],
    weights: list[float],
    p: PPOParams,
    kl_ctl: Any,
    trainable: list[Any],
    max_grad_norm: float,
    autocast: Any,
    device: Any,
) -> dict[str, float]:
    """One rollout batch: generate, score, compute advantages, then PPO epochs."""
    import torch

    from ftlab.runner.methods import ppo_math as pm

    enc = _prompt_ids(prompts, tokenizer, device)
    n_prompt = enc["input_ids"].shape[1]
    model.eval()
    with torch.no_grad(), autocast:
        seqs = model.generate(
            **enc,
            do_sample=True,
            temperature=p.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=p.max_completion_length,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    response = seqs[:, n_prompt:]
    mask = _response_mask(response, tokenizer.eos_token_id).to(device)
    attn = torch.cat([enc["attention_mask"], mask.long()], dim=1)
    texts = tokenizer.batch_decode(
        response * mask.long() + tokenizer.pad_token_id * (1 - mask.long()),
        skip_special_tokens=True,
    )
    scores = torch.zeros(len(texts), device=device)
    for fn, w in zip(fns, weights, strict=True):
        scores += w * torch.tensor(fn(texts, prompts=prompts), device=device, dtype=torch.float)
    with torch.no_grad(), autocast:
        old_logp, old_values, logits = _forward(
            model, value_head, seqs, attn, n_prompt, p.temperature
        )
        with model.disable_adapter():
            ref_logp, _, _ = _forward(model, value_head, seqs, attn, n_prompt, p.temperature)
    old_values = old_values.float() * mask
    kl = pm.kl_per_token(old_logp, ref_logp, p.kl_estimator) * mask
    shaped = (
        pm.masked_whiten(scores[:, None], torch.ones_like(scores[:, None]))[:, 0]
        if p.whiten_rewards and len(scores) > 1
        else scores
    )
    token_r = pm.token_rewards(shaped, kl, mask, kl_ctl.value)
    adv, returns = pm.gae(token_r, old_values, mask, gamma=p.gamma, lam=p.lam)
    adv = pm.masked_whiten(adv, mask)
    model.train()
    stats: dict[str, list[float]] = {
        "policy_loss": [],
        "value_loss": [],
        "clip_fraction": [],
        "approx_kl": [],
        "entropy": [],
    }
    n = len(prompts)
    for _ in range(p.ppo_epochs):
        perm = torch.randperm(n)
        for s in range(0, n, p.mini_batch_size):
            idx = perm[s : s + p.mini_batch_size]
            with autocast:
                logp, values, new_logits = _forward(
                    model, value_head, seqs[idx], attn[idx], n_prompt, p.temperature
                )
            m = mask[idx]
            pl = pm.clipped_policy_loss(logp.float(), old_logp[idx], adv[idx], m, clip=p.clip_range)
            vl = pm.clipped_value_loss(
                values.float(), old_values[idx], returns[idx], m, clip=p.clip_range_value
            )
            loss = pl.loss + p.vf_coef * vl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                ent = pm.masked_mean(pm.entropy_from_logits(new_logits), m)
            for key, val in (
                ("policy_loss", pl.loss),
                ("value_loss", vl),
                ("clip_fraction", pl.clip_fraction),
                ("approx_kl", pl.approx_kl),
                ("entropy", ent),
            ):
                stats[key].append(val.item())
    seq_kl = float((kl * mask).sum(1).mean())
    kl_ctl.update(seq_kl, n)
    return {
        "reward": float(scores.mean()),
        "reward_std": float(scores.std()) if n > 1 else 0.0,
        "kl": seq_kl,
        "kl_coef": kl_ctl.value,
        "response_length": float(mask.sum(1).mean()),
        **{k: sum(v) / len(v) for k, v in stats.items()},
    }


def _save_checkpoint(
    path: Path, model: Any, value_head: Any, optimizer: Any, kl_ctl: Any, step: int
) -> None:
    import torch
    from peft import get_peft_model_state_dict

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "adapter": get_peft_model_state_dict(model),
            "value_head": value_head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "kl_coef": kl_ctl.value,
            "step": step,
            "torch_rng": torch.get_rng_state(),
        },
        tmp / "ppo_state.pt",
    )
    # the name the runner looks for when resuming (written last: the checkpoint is whole)
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for old in path.parent.glob("checkpoint-*"):
        if old.name.rsplit("-", 1)[-1].isdigit():  # not the .tmp being written
            shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model: Any, value_head: Any, optimizer: Any, kl_ctl: Any) -> int:
    import torch
    from peft import set_peft_model_state_dict

    state = torch.load(path / "ppo_state.pt", weights_only=False)
    set_peft_model_state_dict(model, state["adapter"])
    value_head.load_state_dict(state["value_head"])
    optimizer.load_state_dict(state["optimizer"])
    kl_ctl.value = state["kl_coef"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _save_artifact(
    target: Path, model: Any, value_head: Any, tokenizer: Any, base: str
) -> Artifact:
    import torch

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(value_head.state_dict(), tmp / "value_head.pt")
    meta = {"kind": "adapter", "base": base, "method": "ppo", "quantization": None}
    (tmp / "ftlab_artifact.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return Artifact(path=target, kind="adapter", base=base)
