"""The experiment spec: one strict pydantic schema, nested by concern.

Defaults live here and only here. Each field's docstring is its documentation: it
becomes the JSON Schema description (`ftlab schema`) and the text of errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ftlab.runner.optimizers import names as optim_names
from ftlab.runner.registry import did_you_mean
from ftlab.runner.spec.datasource import DataSource
from ftlab.runner.spec.resources import ResourcesSpec
from ftlab.runner.spec.settings import OutputSpec, SearchSpec, TrackingSpec
from ftlab.runner.spec.strict import Strict

Precision = Literal["auto", "fp32", "bf16", "fp16"]
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # experiment, stage, eval, variant names


class ModelSpec(Strict):
    """The base model. A bare string in YAML (`model: tiny`) fills `name`."""

    name: str = "tiny"
    """`tiny` (the embedded model ftlab builds locally), `random:<shape>` (a randomly
    initialised model of a real architecture, e.g. `random:qwen2-0.5b`, `random:llama-1b`),
    a local directory, or a Hugging Face hub id."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) when `name` is a hub id."""
    trust_remote_code: bool = False
    """Allow custom modelling code from the hub repository."""
    attn_implementation: Literal[
        "auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3"
    ] = "auto"
    """Attention kernel for training (`auto` = transformers' choice: sdpa on CPU)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The dtype the weights are loaded in. `auto`: a frozen adapter base in the training
    precision, full fine-tuning in float32 master weights (mixed precision). `bfloat16`
    with `method: full` trains pure bf16 weights (half the weight and gradient memory,
    less precise updates). Counted by `ftlab plan`."""
    chat_template: str = ""
    """The chat template to train and evaluate with: empty = the checkpoint's own; a name
    (chatml, llama2, mistral, zephyr, alpaca, or any template trl ships: llama3, qwen2_5,
    gemma3, phi3, …) or a `.jinja` file (relative to the spec). Recorded with the run and
    saved with every artifact, so evals and exports format prompts as training did."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class AdapterSpec(Strict):
    """Adapter settings for PEFT methods (ignored by `full`)."""

    r: int = Field(16, ge=1)
    """LoRA/DoRA rank."""
    alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora)."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapter input."""
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    """`all-linear` or a list of module names (e.g. [q_proj, v_proj])."""
    rslora: bool = False
    """Rank-stabilised LoRA scaling (alpha / sqrt(r))."""
    num_virtual_tokens: int = Field(16, ge=1)
    """Virtual tokens for prompt_tuning and prefix_tuning."""
    loraplus_lr_ratio: float = Field(0.0, ge=0.0, le=1000.0)
    """LoRA+: the B matrices learn this many times faster than A (16 in the paper);
    0 = plain LoRA (lora, dora, qlora)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type for qlora."""
    double_quant: bool = True
    """Quantise the quantisation constants too (qlora)."""

    @field_validator("loraplus_lr_ratio")
    @classmethod
    def _loraplus_at_least_one(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("0 (off) or a ratio of at least 1 (B learns faster than A)")
        return value


class TrainSpec(Strict):
    """Optimisation settings, passed to the trainer."""

    learning_rate: float = Field(2e-4, gt=0, le=10.0)
    """Peak learning rate."""
    epochs: float = Field(1.0, gt=0, le=10_000)
    """Passes over the training split (ignored when max_steps > 0)."""
    max_steps: int = Field(0, ge=0, le=100_000_000)
    """Stop after this many optimizer steps; 0 = run `epochs`."""
    batch_size: int = Field(4, ge=1, le=65_536)
    """Per-device batch size."""
    grad_accum: int = Field(1, ge=1, le=65_536)
    """Gradient-accumulation steps (effective batch = batch_size × grad_accum × devices)."""
    max_length: int = Field(512, ge=8, le=1_048_576)
    """The longest training row in tokens (chat template applied); longer rows are dropped,
    cut or refused as the dataset's `overlong` says (default: dropped, and said so)."""
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction of steps used for linear warm-up."""
    scheduler: Literal[
        "linear",
        "cosine",
        "constant",
        "constant_with_warmup",
        "cosine_with_restarts",
        "polynomial",
        "inverse_sqrt",
    ] = "linear"
    """Learning-rate schedule after warm-up."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, ge=0.0)
    """Gradient clipping norm (0 = off)."""
    optimizer: str = Field(
        "adamw_torch", json_schema_extra=lambda schema: schema.update(enum=list(optim_names()))
    )
    """Optimizer name as transformers knows it (`TrainingArguments.optim`): adamw_torch,
    adamw_torch_fused, adamw_8bit, paged_adamw_8bit (QLoRA's), adafactor, sgd, lion_8bit, …
    (`ftlab schema` lists them all). 8-bit and paged optimizers need bitsandbytes."""
    precision: Precision = "auto"
    """Training precision. `auto` = bf16 where the hardware supports it (CUDA with bf16,
    or a CPU with native bf16 matrix units), else fp32. The run records what was used."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""
    padding_free: Literal["auto"] | bool = "auto"
    """SFT batches without padding: a batch's examples laid end to end with restarting
    position ids — the same batches, so the same loss, with no compute on pad tokens
    (examples stay apart: tests/test_packing.py measures it per architecture). `auto` =
    on with flash attention; with eager/sdpa, which attend over the whole flat row, on
    when a cost model of this data's lengths says it is cheaper than padding (data whose
    lengths vary a lot). The stage summary records the choice (`batching`)."""
    group_by_length: bool = False
    """SFT: draw batches of similar lengths (transformers' length-grouped sampler), so
    padded batches waste little. Off by default: it changes what each step averages over
    (short examples weigh more) — benchmarks/throughput.py measured a 2% worse held-out
    loss with it."""
    packing: bool = False
    """Pack several short examples into each `max_length` row (best-fit, padding-free;
    more examples per step than `batch_size`). Packed examples stay apart — trl's forward
    runs without a KV cache, and transformers then masks by position ids."""
    completion_only_loss: bool = True
    """Loss only on assistant/completion tokens, not on the prompt (`false` = loss on
    every token, as `train_on: all`)."""
    train_on: Literal["assistant", "last_assistant", "all"] = "assistant"
    """Conversations: which tokens the SFT loss sees — every assistant turn, only the last
    one (earlier turns are context), or every token."""
    loss_type: Literal["nll", "dft"] = "nll"
    """SFT loss: `nll` (cross-entropy) or `dft` (Dynamic Fine-Tuning: each token's loss
    weighted by its probability)."""
    neftune_noise_alpha: float = Field(0.0, ge=0.0, le=100.0)
    """NEFTune: uniform noise of this scale on the input embeddings while training (5 in
    the paper); 0 = off."""
    liger: bool = False
    """Liger kernels (fused RMSNorm, RoPE, SwiGLU, cross-entropy): less memory and faster
    on CUDA; needs `pip install liger-kernel` and a GPU."""
    logging_steps: int = Field(5, ge=1)
    """Log training loss every N optimizer steps."""
    eval_steps: int = Field(0, ge=0)
    """Evaluate on the validation split every N steps; 0 = only at the end."""
    save_steps: int = Field(50, ge=1)
    """Write a resumable checkpoint every N steps."""
    early_stopping_patience: int = Field(0, ge=0)
    """Stop after N evaluations without improvement of eval loss; 0 = off (needs eval_steps)."""

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        if value not in optim_names():
            raise ValueError(
                f"an optimizer name transformers knows (TrainingArguments.optim), one of "
                f"{', '.join(optim_names())}.{did_you_mean(value, optim_names())}"
            )
        return value

    @model_validator(mode="after")
    def _train_on_needs_masking(self) -> TrainSpec:
        if not self.completion_only_loss and self.train_on == "last_assistant":
            raise ValueError(
                "train_on: last_assistant needs completion_only_loss: true (false trains "
                "on every token); remove one of the two"
            )
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_evals(self) -> TrainSpec:
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError(
                "early_stopping_patience needs periodic evaluation: set eval_steps > 0"
            )
        return self


class SelectSpec(Strict):
    """Which of a stage's checkpoints becomes its artifact."""

    metric: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.[A-Za-z0-9_./-]+$")
    """`<eval>.<metric>` of an eval with `every:` that runs on this stage, e.g.
    `exact.exact_match`."""
    direction: Literal["maximize", "minimize", "auto"] = "auto"
    """auto: what the eval kind calls better (accuracy up, loss down)."""


class StageSpec(Strict):
    """One training stage. Stages run in order; `from` chains them."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Stage name (letters, digits, `_ . -`); used in paths and `stages.<name>.…` overrides."""
    method: str
    """Training method by registry name: full, lora, qlora, dora, ia3, prompt_tuning,
    prefix_tuning (see `ftlab methods`)."""
    from_: str = Field("", alias="from")
    """Start from this earlier stage's artifact; empty = the base model."""
    adapter_mode: Literal["merge", "continue"] = "merge"
    """With `from:` an upstream adapter: `merge` it into its base and train a new adapter
    (the reference model of alignment methods is then the merged upstream model), or
    `continue` training the same adapter (trl keeps a frozen copy of it as reference)."""
    data: str = "sft"
    """Name of the dataset under `data:` this stage trains on."""
    adapter: AdapterSpec = AdapterSpec()
    """Adapter settings (PEFT methods)."""
    train: TrainSpec = TrainSpec()
    """Optimisation settings."""
    params: dict[str, Any] = {}
    """Method-specific parameters, checked against the method's own params model."""
    select: SelectSpec | None = None
    """The stage's artifact is its best checkpoint by this eval metric (measured at the
    eval's `every:` steps and at the end), not its last step; later stages and exports
    use it."""

    model_config = ConfigDict(populate_by_name=True)

    def depends_on(self) -> list[str]:
        """Earlier stages this one needs: `from:` and reward-model stages named in
        `params.rewards` (ppo, grpo, rloo)."""
        deps = [self.from_] if self.from_ else []
        for reward in self.params.get("rewards") or []:
            ref = reward.get("params", {}).get("stage") if isinstance(reward, dict) else None
            if isinstance(ref, str) and ref not in deps:
                deps.append(ref)
        return deps

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from ftlab.runner.methods import METHODS

        if value not in METHODS:
            raise ValueError(
                f"a registered method ({', '.join(METHODS.names())})"
                f"{did_you_mean(value, METHODS.names())}"
            )
        return value


class EvalSpec(Strict):
    """An evaluation, run after training on the final model and on the baselines named in
    `on:` (see `ftlab evals` for the kinds and their params)."""

    kind: str
    """Eval kind by registry name: lm_eval, judge, preference, perplexity, format,
    contamination, exact_match, json_match, rouge, chrf, or a plugin's (`ftlab evals`)."""
    name: str = Field("", pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
    """Name under which results are stored (`evals/<name>/`); defaults to the kind."""
    on: list[str] = ["last"]
    """Models to evaluate: `last` (the run's final model), `base` (the base model before
    any stage), stage names, or `all` (base and every policy stage). Baselines make the
    gain visible: `on: [sft, last]` shows what alignment added to the SFT model."""
    data: str = ""
    """Dataset under `data:` to evaluate on (the eval kind says which formats it reads)."""
    split: Literal["val", "train", "all"] = "val"
    """Which rows of that dataset: its held-out `val` split (default), `train`, or `all`."""
    limit: int | None = Field(None, ge=1)
    """Evaluate at most this many items (the first ones, in a fixed order)."""
    every: int = Field(0, ge=0)
    """Also evaluate every N optimizer steps of each stage it runs on (a snapshot of the
    model at that step), per-item rows stored with the step: metric vs step per run in
    `ftlab report`; 0 = after training only."""
    params: dict[str, Any] = {}
    """Kind-specific parameters, checked against the kind's own params model."""

    @property
    def key(self) -> str:
        return self.name or self.kind


class Spec(Strict):
    """An ftlab experiment: model, data, stages, variants, evals, search, tracking, output."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Experiment name (letters, digits, `_ . -`)."""
    description: str = ""
    """Free text shown in reports."""
    label: str = Field("default", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """The name of the run of the spec as written (each variant is one more run, named by
    its key), e.g. `label: lora` when the spec as written trains LoRA. Not `base`: evals use
    that word for the untrained base model (`on: [base]`, `against: base`)."""

    @field_validator("label")
    @classmethod
    def _not_base(cls, value: str) -> str:
        if value == "base":
            raise ValueError(
                "a label other than 'base' ('base' is the untrained base model in evals: "
                "on: [base], against: base); e.g. label: lora"
            )
        return value

    extends: list[str] = []
    """Spec files this one builds on (relative paths), deep-merged before this file; the
    loader resolves them, so a resolved spec always has an empty list."""
    seed: int = Field(42, ge=0, le=2**32 - 1)
    """Seed for data splits, initialisation and training."""
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field([], max_length=64)
    """Training seeds: the spec as written and every variant run once per seed (training
    randomness: initialisation of adapters, data order, dropout, sampling in RL). Data
    splits, a random model's weights and eval sampling keep `seed`, so every seed is
    scored on the same items and `ftlab compare` tests across seeds and items."""

    train_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """The training seed of this run (set per run by `seeds:`); default: `seed`."""

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(
                f"distinct training seeds ({', '.join(map(str, repeated))} repeated): the same "
                "seed twice trains the same run twice and fakes a spread; e.g. seeds: [1, 2, 3]"
            )
        return value

    model: ModelSpec = ModelSpec()
    """Base model."""
    plugins: list[str] = []
    """Your own methods, eval kinds and reward functions: Python files (relative to this
    spec) or importable module names, imported before the spec is checked; each registers
    with `METHODS.register` / `EVALS.register` / `@reward` (see README, Plugins). The file
    that defines a stage's method, an eval's kind or a reward is part of its hash."""
    data: dict[str, DataSource] = {}
    """Named datasets; stages refer to them by name (`data: sft`)."""
    stages: list[StageSpec] = Field(min_length=1)
    """Training stages, run in order."""
    variants: dict[str, dict[str, Any]] = {}
    """Named sets of dotted overrides; each variant is one more run of this experiment,
    next to the spec as written (run `base`)."""
    evals: list[EvalSpec] = []
    """Evaluations after training."""
    search: SearchSpec = SearchSpec()
    """Search space for `ftlab sweep`."""
    tracking: TrackingSpec = TrackingSpec()
    """Experiment tracking."""
    resources: ResourcesSpec = ResourcesSpec()
    """Processes, nodes and parallel strategy for training stages."""
    output: OutputSpec = OutputSpec()
    """Output locations."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        """`variants:` / `data:` / `evals:` left empty in YAML (None) mean none."""
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k in ("variants", "data", "evals", "extends"))
            }
        return data

    @field_validator("extends", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = [name for name in value if not NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"variant names of letters, digits and `_ . -` (they become run ids and "
                f"folder names), not {', '.join(repr(b) for b in bad)}"
            )
        return value

    def training_seed(self, stage: str = "") -> int:
        """The seed a stage trains with: `train_seed` (from `seeds:`), except for a stage
        that trains an eval's instrument (a judge), which keeps `seed` — every training seed
        is measured with the same instrument, trained once."""
        if self.train_seed is None or (stage and stage in self.evaluator_stages()):
            return self.seed
        return self.train_seed

    def needed_stages(self) -> list[StageSpec]:
        """The stages a run trains, in order: the last stage, the stages evals name, and
        everything those depend on. A stage nothing needs (e.g. a reward model that only
        the `ppo` variant uses) is skipped in runs that do not use it."""
        from ftlab.evals import EVALS

        names = {s.name for s in self.stages}
        wanted = {self.stages[-1].name}
        for ev in self.evals:
            wanted |= {t for t in ev.on if t in names}
            against = _against(EVALS, ev)
            if against in names:  # its replies are compared with that stage's
                wanted.add(against)
            wanted |= {n for n in _stages_used(EVALS, ev) if n in names}  # a trained judge
            if "all" in ev.on:
                wanted |= set(self.policy_stages())
        for stage in reversed(self.stages):
            if stage.name in wanted:
                wanted |= {d for d in stage.depends_on() if d in names}
        return [s for s in self.stages if s.name in wanted]

    def policy_stages(self) -> list[str]:
        """The stages whose model writes text (evals run on these; not reward models, nor
        the judges evals use)."""
        from ftlab.runner.methods import METHODS

        judges = self.evaluator_stages()
        return [
            s.name for s in self.stages if METHODS.get(s.method).generates and s.name not in judges
        ]

    def evaluator_stages(self) -> set[str]:
        """Stages evals use as their instrument (a trained judge), not as a model to test."""
        from ftlab.evals import EVALS

        return {name for ev in self.evals for name in _stages_used(EVALS, ev)}

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _stages_used(evals: Any, ev: EvalSpec) -> list[str]:
    """Stages an eval uses besides its targets (EvalKind.stages; [] when invalid)."""
    if ev.kind not in evals:
        return []
    kind = evals.get(ev.kind)
    try:
        return list(kind.stages(kind.params_model.model_validate(ev.params)))
    except ValueError:
        return []


def _against(evals: Any, ev: EvalSpec) -> str | None:
    """The model an eval's replies are compared with (None for an unknown kind or
    invalid params: `validate` reports those)."""
    if ev.kind not in evals:
        return None
    kind = evals.get(ev.kind)
    try:
        return kind.against(kind.params_model.model_validate(ev.params))  # type: ignore[no-any-return]
    except ValueError:
        return None
