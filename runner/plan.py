"""`ftlab plan`: parameters, tokens and a peak-memory estimate per run and stage.

The model is instantiated on the meta device (no weights allocated, nothing downloaded
for `tiny` or `random:` shapes), wrapped with the stage's peft config, and counted.

Peak memory (bytes), the sum of:
  weights      = frozen_params × w_bytes + trainable_params × 4
                 (w_bytes: 4 for full FT and fp32, 2 for a bf16/fp16 adapter base,
                 ~0.56 for QLoRA's NF4 linear weights incl. double-quant constants;
                 `model.dtype` bfloat16/float16 sets 2, and for full FT also halves
                 trainable weights, gradients and 32-bit optimizer state)
  gradients    = trainable_params × 4
  optimizer    = trainable_params × state tensors × bytes (AdamW: two fp32 moments = 8;
                 8-bit optimizers (adamw_8bit, paged_adamw_8bit, …): 1 byte per value + an
                 fp32 scale per 256, for tensors of ≥ 4096 values, fp32 for smaller ones;
                 sgd 0, adafactor 4: the table in runner/optimizers.py); ftlab's PPO
                 loop always uses AdamW
  activations  = b·s·h·L·(34 + 5·a·s/h) × act_bytes/2   (Korthikanti et al. 2022)
                 with gradient checkpointing: b·s·h·L·2·act_bytes + one layer as above
  logits       = b·s·V × 8 (fp32 logits and their gradient; 0 for a reward model's head)
  extra        = reward models held by online stages (frozen, same shape) + PPO's value
                 head; a LoRA policy's reference is the adapter disabled, so it costs 0
where b = batch size (×2 for preference methods: chosen and rejected), s = longest
tokenised example (≤ max_length), h = hidden size,
L = layers, a = attention heads, V = vocabulary. CUDA context and allocator slack are
not included. `ftlab plan` prints it (cli/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ftlab.runner import lengths as lengths_mod
from ftlab.runner import optimizers
from ftlab.runner.lengths import Tokens
from ftlab.runner.methods.base import Footprint


@dataclass(kw_only=True)
class StagePlan:
    stage: str
    method: str
    weights: str = ""  # how the trained weights are held (Footprint.weights)
    trainable: int
    total: int
    tokens_per_epoch: int
    tokens_estimated: bool = False  # no tokenizer, or no chat template (see notes)
    steps: int  # optimizer steps of the whole stage (runner/steps.py)
    steps_per_epoch: int
    seq_len: int
    precision: str
    memory: dict[str, float] = field(default_factory=dict)  # bytes per component
    notes: tuple[str, ...] = ()  # where a figure is an estimate, and why

    @property
    def peak_bytes(self) -> float:
        return sum(self.memory.values())


@dataclass
class RunPlan:
    variant: str
    model: str
    stages: list[StagePlan]
    resources: Any = None  # the spec's ResourcesSpec


def per_gpu(memory: dict[str, float], resources: Any) -> dict[str, float]:
    """A stage's estimate on one GPU under the strategy: DDP keeps a full replica per
    GPU; FSDP `full_shard` / ZeRO-3 divide weights, gradients and optimizer state by the
    number of GPUs (FSDP `shard_grad_op` / ZeRO-2: gradients and optimizer; ZeRO-1: the
    optimizer); offload moves what it names to CPU RAM. Activations and logits stay."""
    if resources is None:
        return dict(memory)
    n = max(1, resources.world_size)
    out = dict(memory)
    sharded, offloaded = _placement(resources)
    for key in sharded:
        out[key] = out.get(key, 0.0) / n
    for key in offloaded:
        out[key] = 0.0
    return out


def _placement(resources: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(components sharded over the GPUs, components offloaded to CPU RAM)."""
    if resources.strategy == "fsdp":
        f = resources.fsdp
        everything: tuple[str, ...] = ("weights", "gradients", "optimizer")
        on_gpus = everything if f.sharding == "full_shard" else ("gradients", "optimizer")
        return on_gpus, everything if f.cpu_offload else ()
    if resources.strategy == "deepspeed":
        d = resources.deepspeed
        sharded: tuple[str, ...] = {
            1: ("optimizer",),
            2: ("gradients", "optimizer"),
            3: ("weights", "gradients", "optimizer"),
        }[d.stage]
        offloaded = (("optimizer",) if d.offload_optimizer else ()) + (
            ("weights",) if d.offload_params and d.stage == 3 else ()
        )
        return sharded, offloaded
    return (), ()


def advice(plan: StagePlan, resources: Any, budget: float) -> str:
    """What would make a stage fit in `budget` bytes per GPU, or '' when it fits."""
    from types import SimpleNamespace

    need = sum(per_gpu(plan.memory, resources).values())
    if need <= budget:
        return ""
    tips = []
    m = plan.memory
    if plan.method == plan.weights and plan.weights in ("full", "lora", "dora"):
        tips.append(  # a supervised stage: the same data trains with a 4-bit base
            "method qlora (4-bit base weights)"
            if plan.weights != "full"
            else "method lora or qlora (frozen base, small optimizer state)"
        )
    if offload := _offload_tip(m, resources, budget):
        tips.append(offload)
    for gpus in (2, 4, 8, 16, 32, 64):
        zero3 = SimpleNamespace(
            world_size=gpus,
            strategy="deepspeed",
            deepspeed=SimpleNamespace(stage=3, offload_optimizer=False, offload_params=False),
        )
        if sum(per_gpu(m, zero3).values()) <= budget:
            tips.append(
                f"FSDP full_shard / ZeRO-3 on {gpus} GPUs "
                f"(≈{_mb(sum(per_gpu(m, zero3).values()))} each)"
            )
            break
    if m.get("activations", 0) > budget / 4:
        tips.append("train.gradient_checkpointing: true or a smaller batch_size / max_length")
    return (
        f"stage {plan.stage} needs ≈{_mb(need)} per GPU, more than {_mb(budget)}; "
        f"try: {'; '.join(tips) or 'a smaller model'}"
    )


def _offload_tip(memory: dict[str, float], resources: Any, budget: float) -> str:
    """The least offload to CPU RAM that makes a stage fit on the spec's own GPUs, with
    the resources keys that turn it on (YAML keys, or `ftlab run SPEC key=value`)."""
    current = _resources(resources)
    for label, option in _offload_options(current):
        gpu = sum(per_gpu(memory, option).values())
        if gpu > budget:
            continue
        cpu = sum(memory.get(k, 0.0) for k in _placement(option)[1]) / current.nodes
        keys = " ".join(_changed_keys(current, option))
        n = current.world_size
        return (
            f"{label} on {n} GPU{'s' * (n != 1)} (≈{_mb(gpu)} each; "
            f"≈{_mb(cpu)} of CPU RAM per node): {keys}"
        )
    return ""


def _resources(resources: Any) -> Any:
    """The spec's resources with every setting present (None: one GPU, the defaults)."""
    from ftlab.runner.spec.schema import ResourcesSpec

    return resources if isinstance(resources, ResourcesSpec) else ResourcesSpec()


def _offload_options(current: Any) -> list[tuple[str, Any]]:
    """Offload settings to try, least offloaded first, on the spec's own GPUs."""
    if current.strategy == "fsdp":
        fsdp = current.fsdp.model_copy(update={"cpu_offload": True})
        return [("FSDP with CPU offload", current.model_copy(update={"fsdp": fsdp}))]

    def zero(stage: int, *, params: bool) -> Any:
        ds = current.deepspeed.model_copy(
            update={"stage": stage, "offload_optimizer": True, "offload_params": params}
        )
        return current.model_copy(update={"strategy": "deepspeed", "deepspeed": ds})

    options = []
    if current.strategy == "deepspeed" and current.deepspeed.stage != 3:
        stage = current.deepspeed.stage
        options.append((f"ZeRO-{stage} with optimizer offload", zero(stage, params=False)))
    options.append(("ZeRO-3 with optimizer offload", zero(3, params=False)))
    options.append(("ZeRO-3 with optimizer and parameter offload", zero(3, params=True)))
    return options


def _changed_keys(current: Any, option: Any) -> list[str]:
    """`resources.…=value` for each setting `option` changes."""
    keys = []
    if option.strategy != current.strategy:
        keys.append(f"resources.strategy={option.strategy}")
    for group in ("deepspeed", "fsdp"):
        old, new = getattr(current, group), getattr(option, group)
        for name in type(new).model_fields:
            if getattr(new, name) != getattr(old, name):
                keys.append(f"resources.{group}.{name}={_yaml(getattr(new, name))}")
    return keys


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _config(spec: Any) -> tuple[Any, Tokens]:
    """The model config and its tokenizer, without loading weights. A folder holding only
    config.json (planning before a download) plans from the config alone."""
    from ftlab.runner import models

    name = spec.model.name
    if name.startswith("random:"):
        shape = name.split(":", 1)[1]
        if shape not in models.RANDOM_SHAPES:
            models.resolve(name)  # raises the helpful unknown-shape error
        return models.random_config(shape), _tokens(str(models.ensure_tiny()), spec)
    ref = models.resolve(name, revision=spec.model.revision, seed=spec.seed)
    return models.load_config(ref), _tokens(ref.path, spec)


def _tokens(where: str, spec: Any) -> Tokens:
    """The tokenizer as training uses it: the spec's `model.chat_template` applied."""
    from ftlab.runner import models

    try:
        return Tokens(models.load_tokenizer(where, chat_template=spec.model.chat_template), where)
    except Exception:  # noqa: BLE001 - no or an unloadable tokenizer: token counts are estimated
        return Tokens(None, where)


class Counts(NamedTuple):
    trainable: int
    total: int
    linear: int  # quantisable linear weights (QLoRA's 4-bit part)
    trainable_small: int  # trainable values in tensors too small for 8-bit optimizer state


def meta_counts(config: Any, method: str, adapter: Any) -> Counts:
    """Parameter counts from a meta-device model wrapped with the method's peft config."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftlab.runner.methods.common import count_parameters, peft_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in n
    )
    cfg = peft_config(method, adapter)
    if cfg is not None:
        from peft import get_peft_model

        model = get_peft_model(model, cfg, low_cpu_mem_usage=True)
    trainable, total = count_parameters(model)
    small = sum(
        p.numel()
        for p in model.parameters()
        if p.requires_grad and p.numel() < optimizers.MIN_QUANTISED_SIZE
    )
    return Counts(trainable, total, linear, small)


def estimate(
    *,
    counts: Counts,
    method: str,
    precision: str,
    optimizer: str,
    batch: int,
    seq: int,
    config: Any,
    checkpointing: bool,
    dtype: str = "auto",
) -> dict[str, float]:
    trainable, total, linear, small = counts
    frozen = total - trainable
    half = precision in ("bf16", "fp16")
    w_frozen = 2.0 if half else 4.0
    w_train = 4.0  # fp32 master weights / peft's fp32 adapters
    if dtype != "auto":  # `model.dtype`: weights (and, for full, gradients and state) as set
        w_frozen = 4.0 if dtype == "float32" else 2.0
        w_train = w_frozen if method == "full" else 4.0
    if method == "full":
        weights = total * w_train
    elif method == "qlora":
        weights = linear * 0.5625 + (frozen - linear) * w_frozen + trainable * w_train
    else:
        weights = frozen * w_frozen + trainable * w_train
    h, layers = config.hidden_size, config.num_hidden_layers
    heads, vocab = config.num_attention_heads, config.vocab_size
    act_bytes = 2 if half else 4
    per_layer = batch * seq * h * (34 + 5 * heads * seq / h) * act_bytes / 2
    activations = (
        (batch * seq * h * layers * 2 * act_bytes + per_layer)
        if checkpointing
        else per_layer * layers
    )
    return {
        "weights": weights,
        "gradients": trainable * w_train,
        "optimizer": optimizers.state_bytes(optimizer, large=trainable - small, small=small)
        * (w_train / 4.0 if optimizers.state(optimizer).bits == 32 else 1.0),
        "activations": activations,
        "logits": batch * seq * vocab * 8.0,
    }


def _extra_models(
    fp: Footprint, config: Any, *, trainable: int, total: int, precision: str
) -> float:
    """Bytes of the models a stage holds besides its policy: each reward model (a frozen
    copy of a model of this shape) and a value head. The reference costs nothing: it is
    the policy with its adapter disabled."""
    w_bytes = 2.0 if precision in ("bf16", "fp16") else 4.0
    value_head = (config.hidden_size + 1) * 16.0 if fp.value_head else 0.0
    return fp.reward_models * (total - trainable) * w_bytes + value_head


def _optimizer_notes(stage: Any, fp: Footprint) -> tuple[str, ...]:
    if fp.optimizer and fp.optimizer != stage.train.optimizer:
        return fp.notes
    note = optimizers.state(stage.train.optimizer).note
    return (*fp.notes, f"optimizer {stage.train.optimizer}: {note}") if note else fp.notes


def plan_runs(path: Path, overrides: list[str]) -> list[RunPlan]:
    from ftlab.runner.spec.load import expand_runs

    plans = []
    spec_dir = Path(path).resolve().parent
    for variant, spec in expand_runs(path, overrides):
        config, tokens = _config(spec)
        stages = [
            _plan_stage(spec=spec, stage=s, config=config, tokens=tokens, spec_dir=spec_dir)
            for s in spec.needed_stages()
        ]
        plans.append(RunPlan(variant, spec.model.name, stages, spec.resources))
    return plans


def _stage_rows(
    spec: Any, stage: Any, tokens: Tokens, spec_dir: Path, fp: Footprint
) -> tuple[list[int], str, tuple[str, str]]:
    """Tokens per training row (≤ max_length) after `overlong`, the estimate note, and the
    data line and overlong warning the run prints."""
    from ftlab.runner import data as data_mod

    t = stage.train
    ds = data_mod.load(
        spec.data[stage.data], base_dir=spec_dir, seed=spec.seed, sources=spec.data, name=stage.data
    )
    ds = lengths_mod.fit(
        ds,
        data=stage.data,
        tokens=tokens,
        max_length=t.max_length,
        policy=spec.data[stage.data].overlong,
        applies=not fp.generated,
    )
    rows, tokens_note = lengths_mod.row_lengths(ds.train, tokens)
    notes = lengths_mod.describe(ds.report, data=stage.data)
    return [min(n.total, t.max_length) for n in rows], tokens_note, notes


def _plan_stage(*, spec: Any, stage: Any, config: Any, tokens: Tokens, spec_dir: Path) -> StagePlan:
    from ftlab.runner.methods import METHODS
    from ftlab.runner.models import length_warning, resolve_precision

    t = stage.train
    method = METHODS.get(stage.method)
    fp = method.footprint(stage)
    lengths, tokens_note, data_notes = _stage_rows(spec, stage, tokens, spec_dir, fp)
    weights = fp.weights
    if stage.adapter_mode == "continue" and stage.from_:
        weights = (
            METHODS.get(spec.stage(stage.from_).method).footprint(spec.stage(stage.from_)).weights
        )
    counts = meta_counts(config, weights, stage.adapter)
    precision = resolve_precision(t.precision)
    seq = max(lengths)
    if fp.generated:  # each prompt grows by the generated completion
        seq = min(seq, t.max_length) + fp.generated
    extra = _extra_models(
        fp, config, trainable=counts.trainable, total=counts.total, precision=precision
    )
    memory = estimate(
        counts=counts,
        method=weights,
        precision=precision,
        optimizer=fp.optimizer or t.optimizer,
        batch=t.batch_size * fp.rows,
        seq=seq,
        config=config,
        checkpointing=t.gradient_checkpointing,
        dtype=spec.model.dtype,
    )
    if not fp.logits:
        memory["logits"] = 0.0
    memory["extra models"] = extra
    steps = method.steps(stage, lengths, spec.resources.world_size)
    return StagePlan(
        stage=stage.name,
        method=stage.method,
        weights=weights,
        trainable=counts.trainable,
        total=counts.total,
        tokens_per_epoch=sum(lengths),
        tokens_estimated=bool(tokens_note),
        steps=steps.total,
        steps_per_epoch=steps.per_epoch,
        seq_len=seq,
        precision=precision,
        memory=memory,
        notes=tuple(n for n in (tokens_note, length_warning(stage, config), *data_notes) if n)
        + _optimizer_notes(stage, fp)
        + _snapshot_note(
            spec, stage, steps.total, counts.trainable if weights != "full" else counts.total
        ),
    )


def _snapshot_note(spec: Any, stage: Any, steps: int, saved: int) -> tuple[str, ...]:
    """How many snapshots the stage's `every:` evals make, and their size on disk."""
    from ftlab.runner.snapshots import every

    intervals = every(spec, stage)
    if not intervals:
        return ()
    k = len({s for n in intervals for s in range(n, steps, n)})
    if not k:
        return (
            f"every: {', '.join(map(str, intervals))} ≥ the stage's {steps} steps: only its last "
            "step is evaluated; lower every: for a curve",
        )
    return (
        f"snapshots: {k} (every {', '.join(map(str, intervals))} of {steps} steps), about "
        f"{_mb(saved * 4)} each on disk, evaluated after the stage (`every:` evals)",
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f}M" if n < 2**30 else f"{n / 2**30:,.1f}G"
