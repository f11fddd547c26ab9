"""Offline preference alignment: DPO (every trl loss type), IPO, SimPO, CPO, ORPO, KTO.

Each is a trl trainer on a LoRA policy (a new adapter, or the upstream adapter with
`adapter_mode: continue`). The reference model is never a second full copy: trl runs
the policy with its adapter disabled (a new adapter on the merged upstream model), or
with a frozen copy of the continued adapter. Reference-free methods (SimPO, CPO, ORPO)
need none. `params: {full: true}` trains every weight instead; trl then holds a frozen
copy of the start model as the reference.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftlab.runner.data import chat_prompt
from ftlab.runner.methods import METHODS
from ftlab.runner.methods.base import (
    LORA_KEYS,
    Footprint,
    Method,
    Problem,
    StageContext,
    StageResult,
)
from ftlab.runner.methods.common import (
    callbacks,
    policy,
    quiet_library_bars,
    run_trainer,
    training_kwargs,
)
from ftlab.runner.methods.refcache import with_reference_cache
from ftlab.runner.spec.schema import Spec, StageSpec
from ftlab.runner.templates import TemplateError, check_preference

DPOLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    full: bool = False
    """Train every weight (no adapter). trl then keeps a frozen copy of the start model
    as the reference: two models' weights plus the optimiser state."""


class DPOParams(_Params):
    beta: float = Field(0.1, gt=0)
    """Strength of the implicit KL penalty towards the reference model."""
    loss_type: DPOLoss | list[DPOLoss] = "sigmoid"
    """trl DPO loss, or several combined with `loss_weights`."""
    loss_weights: list[float] = []
    """Weights for several loss types (empty = equal weights)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """Assumed label noise (robust/cDPO); exo_pair needs it > 0."""
    precompute_ref_log_probs: bool = True
    """Compute the reference log-probs once before training instead of at every step and
    evaluation; kept in the runs directory's cache for runs with the same reference model
    and rows (a sweep over beta computes them once)."""

    @model_validator(mode="after")
    def _consistent(self) -> DPOParams:
        types = self.loss_type if isinstance(self.loss_type, list) else [self.loss_type]
        if self.loss_weights and len(self.loss_weights) != len(types):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} values for {len(types)} loss types"
            )
        if "exo_pair" in types and self.label_smoothing <= 0:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (e.g. 1e-3)")
        return self


class IPOParams(_Params):
    beta: float = Field(0.1, gt=0)
    """IPO regularisation strength (tau)."""
    precompute_ref_log_probs: bool = True
    """Compute the reference log-probs once before training (cached like DPO's)."""


class SimPOParams(_Params):
    beta: float = Field(2.0, gt=0)
    """Reward scale of the length-normalised log-probabilities."""
    gamma: float = Field(0.5, ge=0)
    """Target reward margin (SimPO's gamma, in units of beta)."""


class CPOParams(_Params):
    beta: float = Field(0.1, gt=0)
    """Preference loss temperature."""
    cpo_alpha: float = Field(1.0, ge=0)
    """Weight of the behaviour-cloning (NLL on chosen) term."""
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    """Preference loss."""


class ORPOParams(_Params):
    beta: float = Field(0.1, gt=0)
    """Weight of the odds-ratio term (ORPO's lambda)."""


class KTOParams(_Params):
    beta: float = Field(0.1, gt=0)
    """Strength of the implicit KL penalty."""
    desirable_weight: float = Field(1.0, gt=0)
    """Loss weight of good examples (raise it when they are rarer than bad ones)."""
    undesirable_weight: float = Field(1.0, gt=0)
    """Loss weight of bad examples."""
    precompute_ref_log_probs: bool = False
    """Compute the reference log-probs once before training."""


class Preference(Method):
    """One preference-alignment method; `name` picks the trl trainer and its config."""

    adapter_keys = LORA_KEYS
    figures = (("eval_reward_accuracy", "reward acc"), ("eval_reward_margin", "margin"))

    def __init__(
        self,
        name: str,
        params_model: type[BaseModel],
        data_formats: tuple[str, ...] = ("preference",),
    ) -> None:
        self.name, self.params_model, self.data_formats = name, params_model, data_formats

    def train(self, ctx: StageContext) -> StageResult:
        return train_preference(ctx, method=self)

    def template_problem(self, stage: StageSpec, spec: Spec, template: Any) -> Problem | None:
        try:
            check_preference(template)
        except TemplateError as exc:
            return (
                ("method",),
                "a chat template that renders a prompt and its reply alike (preference rows)",
                f"{template.name}: {exc}",
                "set model.chat_template to the family's template without a reasoning block "
                "(or chatml, or a .jinja file)",
            )
        return None

    def footprint(self, stage: StageSpec) -> Footprint:
        # each example is a pair (chosen and rejected, or KTO's target and KL sample)
        full = self.params_model.model_validate(stage.params).full  # type: ignore[attr-defined]
        return Footprint(weights="full" if full else "lora", rows=2)


DPO = METHODS.register("dpo")(Preference("dpo", DPOParams))
IPO = METHODS.register("ipo")(Preference("ipo", IPOParams))
SIMPO = METHODS.register("simpo")(Preference("simpo", SimPOParams))
CPO = METHODS.register("cpo")(Preference("cpo", CPOParams))
ORPO = METHODS.register("orpo")(Preference("orpo", ORPOParams))
KTO = METHODS.register("kto")(Preference("kto", KTOParams, ("unpaired",)))


def _conversational(rows: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Plain-text rows as chat turns when the model has a chat template (as in SFT)."""
    if not getattr(tokenizer, "chat_template", None):
        return rows
    out = []
    for row in rows:
        new = dict(row)
        new["prompt"] = chat_prompt(row)
        new.pop("system", None)
        for key in ("chosen", "rejected", "completion"):
            if key in row:
                new[key] = [{"role": "assistant", "content": row[key]}]
        out.append(new)
    return out


def _trainer(method: str, params: Any, ctx: StageContext) -> tuple[Any, Any, dict[str, Any]]:
    """(config, trainer class, config kwargs) for a method."""
    common = {**training_kwargs(ctx), "max_length": ctx.stage.train.max_length}
    if method in ("dpo", "ipo"):
        from trl import DPOConfig, DPOTrainer

        loss = params.loss_type if method == "dpo" else "ipo"
        kw = {
            "beta": params.beta,
            "loss_type": loss if isinstance(loss, list) else [loss],
            "precompute_ref_log_probs": params.precompute_ref_log_probs,
        }
        if method == "dpo":
            kw["label_smoothing"] = params.label_smoothing
            if params.loss_weights:
                kw["loss_weights"] = params.loss_weights
        return DPOConfig, DPOTrainer, {**common, **kw}
    if method in ("simpo", "cpo"):
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        if method == "simpo":
            kw = {
                "loss_type": "simpo",
                "cpo_alpha": 0.0,
                "beta": params.beta,
                "simpo_gamma": params.gamma,
            }
        else:
            kw = {"loss_type": params.loss_type, "cpo_alpha": params.cpo_alpha, "beta": params.beta}
        # its collator needs the raw columns (it sets this itself, with a warning)
        return CPOConfig, CPOTrainer, {**common, **kw, "remove_unused_columns": False}
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        kw = {"beta": params.beta, "remove_unused_columns": False}
        return ORPOConfig, ORPOTrainer, {**common, **kw}
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        kw = {
            "beta": params.beta,
            "desirable_weight": params.desirable_weight,
            "undesirable_weight": params.undesirable_weight,
            "precompute_ref_log_probs": params.precompute_ref_log_probs,
        }
        return KTOConfig, KTOTrainer, {**common, **kw}
    raise KeyError(method)


def pair_trainer(
    trainer_cls: Any, args: Any, *, ctx: StageContext, model: Any, tokenizer: Any, peft_config: Any
) -> Any:
    """A trl trainer on the stage's rows (as chat turns) with ftlab's callbacks."""
    import datasets

    train = _conversational(ctx.data.train, tokenizer)
    val = _conversational(ctx.data.val, tokenizer)
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train),
        eval_dataset=datasets.Dataset.from_list(val) if val else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks(ctx),
    )


def train_preference(ctx: StageContext, *, method: Preference) -> StageResult:

    from ftlab.runner.models import load_tokenizer

    quiet_library_bars()
    started = time.time()
    params = method.params_model.model_validate(ctx.stage.params)
    if method.name == "kto" and len({row["label"] for row in ctx.data.train}) < 2:
        from ftlab.runner.data import DataError

        only = ctx.data.train[0]["label"]
        raise DataError(
            f"{ctx.spec.data[ctx.stage.data].path}: KTO needs both desirable (label: true) and "
            f"undesirable (label: false) examples; every training row has label: "
            f"{str(only).lower()}. Add the other kind, or use sft/dpo instead"
        )
    model, peft_cfg, base = policy(ctx, method="full" if params.full else "lora")  # type: ignore[attr-defined]
    tokenizer = load_tokenizer(
        str(ctx.upstream.path) if ctx.upstream else ctx.model,
        chat_template=ctx.spec.model.chat_template,
    )
    config_cls, trainer_cls, kwargs = _trainer(method.name, params, ctx)
    if kwargs.get("precompute_ref_log_probs") and method.name in ("dpo", "ipo"):
        reuse = ctx.spec.output.reuse
        cache = Path(ctx.spec.output.dir) / "cache" / "reflogps" if reuse else None
        trainer_cls = with_reference_cache(trainer_cls, cache)
    trainer = pair_trainer(
        trainer_cls,
        config_cls(**kwargs),
        ctx=ctx,
        model=model,
        tokenizer=tokenizer,
        peft_config=peft_cfg,
    )
    result = run_trainer(
        ctx,
        trainer,
        method=method.name,
        base=base,
        tokenizer=tokenizer,
        started=started,
        extra={"params": params.model_dump(), "ref_logps": getattr(trainer, "source", None)},
    )
    result.summary.update(_reward_stats(trainer.state.log_history))
    return result


def _reward_stats(history: list[dict[str, Any]]) -> dict[str, float]:
    """Last logged implicit-reward margin and accuracy (train and eval), where trl logs them."""
    out: dict[str, float] = {}
    for key, name in (
        ("rewards/margins", "reward_margin"),
        ("rewards/accuracies", "reward_accuracy"),
        ("eval_rewards/margins", "eval_reward_margin"),
        ("eval_rewards/accuracies", "eval_reward_accuracy"),
    ):
        values = [e[key] for e in history if key in e]
        if values:
            out[name] = float(values[-1])
    return out
