"""What every training method shares: loading the policy (from the base model or an
upstream artifact), trainer arguments from the spec, and running a trainer to an
artifact and a summary. Heavy imports stay inside functions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ftlab.runner import launch
from ftlab.runner.methods.base import Artifact, StageContext, StageResult


def peft_config(method: str, adapter: Any) -> Any:
    """The peft config for `method` from the spec's adapter block (None for full)."""
    import peft

    targets = adapter.target_modules
    if method in ("lora", "qlora", "dora"):
        return peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=adapter.r,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=targets,
            use_rslora=adapter.rslora,
            use_dora=method == "dora",
        )
    if method == "ia3":
        if targets == "all-linear":
            targets, ff = ["k_proj", "v_proj", "down_proj"], ["down_proj"]
        else:
            ff = [t for t in targets if t in ("down_proj", "up_proj", "gate_proj", "fc2")]
        return peft.IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=ff)
    if method == "prompt_tuning":
        return peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=adapter.num_virtual_tokens
        )
    if method == "prefix_tuning":
        return peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=adapter.num_virtual_tokens
        )
    return None


def base_weights(ctx: StageContext) -> str:
    """The directory (or hub id) whose weights this stage starts from.

    An upstream adapter is merged into its base once and saved in the stage folder, so
    every method (QLoRA included) starts from plain weights.
    """
    up = ctx.upstream
    if up is None:
        return ctx.model.path
    if up.kind == "full":
        return str(up.path)
    merged = ctx.work_dir / "merged_base"
    if not (merged / "READY").is_file():
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        from ftlab.runner.models import load_tokenizer

        base = AutoModelForCausalLM.from_pretrained(up.base, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(up.path)).merge_and_unload()
        tmp = merged.with_name("merged_base.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        load_tokenizer(str(up.path)).save_pretrained(tmp)  # a complete model folder
        (tmp / "READY").write_text("ok\n")
        shutil.rmtree(merged, ignore_errors=True)
        os.replace(tmp, merged)
    return str(merged)


def load_model(
    path: str,
    *,
    method: str,
    precision: str,
    adapter: Any,
    revision: str = "main",
    trust_remote_code: bool = False,
    attn_implementation: str = "auto",
    dtype: str = "auto",
) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # Full fine-tuning keeps fp32 master weights (mixed precision autocasts); a frozen
    # adapter base needs no fp32 copy, and peft keeps the adapter itself in fp32.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    weights = half if half is not None and method != "full" else torch.float32
    kwargs: dict[str, Any] = {
        "dtype": weights if dtype == "auto" else getattr(torch, dtype),
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=adapter.quant_type,
            bnb_4bit_use_double_quant=adapter.double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        # 4-bit weights are placed at load time, on the one device this process trains on.
        cuda = torch.cuda.is_available()
        kwargs["device_map"] = {"": torch.cuda.current_device() if cuda else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        from ftlab.runner.artifacts import no_cpu_repacking

        no_cpu_repacking(model)

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def policy(ctx: StageContext, *, method: str) -> tuple[Any, Any, str]:
    """(model, peft config or None, base directory) for a stage.

    `method` picks the loading (4-bit for qlora) and the new adapter. With
    `adapter_mode: continue` the upstream adapter itself keeps training (no new adapter);
    with `merge` (the default) it is merged into its base and a new one starts.
    """
    up = ctx.upstream
    load = {
        "revision": ctx.model.revision if up is None else "main",
        "trust_remote_code": ctx.spec.model.trust_remote_code,
        "attn_implementation": ctx.spec.model.attn_implementation,
        "dtype": ctx.spec.model.dtype,
        "precision": ctx.precision,
        "adapter": ctx.stage.adapter,
    }
    if up is not None and up.kind == "adapter" and ctx.stage.adapter_mode == "continue":
        from peft import PeftModel

        base = load_model(up.base, method=method, **load)
        model = PeftModel.from_pretrained(base, str(up.path), is_trainable=True)
        return model, None, up.base
    base_dir = base_weights(ctx)
    return (
        load_model(base_dir, method=method, **load),
        peft_config(method, ctx.stage.adapter),
        base_dir,
    )


def training_kwargs(ctx: StageContext) -> dict[str, Any]:
    """TrainingArguments fields every trl config shares, from the spec's `train:` block."""
    import torch

    t = ctx.stage.train
    evaluate = bool(ctx.data.val) and t.eval_steps > 0
    return dict(
        output_dir=str(ctx.work_dir / "checkpoints"),
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        # trl defaults to bf16 and checkpointing even on CPU: we decide, explicitly.
        bf16=ctx.precision == "bf16",
        fp16=ctx.precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name
        logging_steps=t.logging_steps,
        # transformers hides a NaN/inf step loss by default (it logs the running mean):
        # ftlab wants to see it, and fails the stage on it (callbacks.MetricsCallback)
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="steps",
        save_steps=t.save_steps if not evaluate else _multiple(t.save_steps, t.eval_steps),
        save_total_limit=2 if t.early_stopping_patience else 1,
        load_best_model_at_end=bool(t.early_stopping_patience),
        metric_for_best_model="eval_loss" if t.early_stopping_patience else None,
        seed=ctx.spec.training_seed(ctx.stage.name),
        data_seed=ctx.spec.training_seed(ctx.stage.name),
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=not launch.is_main(),  # one progress bar, rank 0's
        neftune_noise_alpha=t.neftune_noise_alpha or None,
        use_liger_kernel=t.liger,
        **launch.trainer_kwargs(ctx.spec, ctx.work_dir / "launch", ctx.precision),
    )


def _multiple(save_steps: int, eval_steps: int) -> int:
    """load_best_model_at_end needs save_steps to be a multiple of eval_steps."""
    return max(eval_steps, (save_steps // eval_steps) * eval_steps)


def callbacks(ctx: StageContext) -> list[Any]:
    from transformers import EarlyStoppingCallback

    from ftlab.runner.methods.callbacks import MetricsCallback

    out: list[Any] = [MetricsCallback(ctx.log, stage=ctx.stage.name), *ctx.extra_callbacks]
    if ctx.stage.train.early_stopping_patience:
        out.append(EarlyStoppingCallback(ctx.stage.train.early_stopping_patience))
    return out


def run_trainer(
    ctx: StageContext,
    trainer: Any,
    *,
    method: str,
    base: str,
    tokenizer: Any,
    started: float,
    extra: dict[str, Any] | None = None,
) -> StageResult:
    """Train (or resume), evaluate before and after, save the artifact, summarise."""
    from peft import PeftModel
    from transformers.trainer_callback import ProgressCallback

    from ftlab.runner.methods.callbacks import StageProgress
    from ftlab.runner.snapshots import attach_snapshots

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress())
    config = getattr(trainer.model, "config", None)
    quant = getattr(config, "quantization_config", None) if method == "qlora" else None
    kind = "adapter" if isinstance(trainer.model, PeftModel) else "full"
    meta = {"method": method, "quantization": _quant_kwargs(quant)}

    def save(folder: Path) -> Artifact:
        return save_artifact(trainer, tokenizer, folder, kind=kind, base=base, meta=meta)

    snapshots = attach_snapshots(trainer, ctx, save)
    trainable, total = count_parameters(trainer.model)
    loraplus(ctx, trainer)
    initial = _initial_eval_loss(ctx, trainer)
    output = trainer.train(resume_from_checkpoint=str(ctx.resume_from) if ctx.resume_from else None)
    final = _evaluate(trainer, reuse_last=not trainer.args.load_best_model_at_end)
    artifact = save(ctx.work_dir / "artifact")
    if ctx.snapshot_every:
        snapshots[str(trainer.state.global_step)] = str(artifact.path.resolve())
    summary = {
        "method": method,
        "trainable_params": trainable,
        "total_params": total,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": _last_train_loss(trainer),
        "train_loss_mean": output.training_loss,
        "initial_eval_loss": initial,
        "eval_loss": final,
        "train_rows": len(ctx.data.train),
        "val_rows": len(ctx.data.val),
        "precision": ctx.precision,
        "pad_token": tokenizer.pad_token,
        "train_runtime_s": output.metrics.get("train_runtime"),
        "wall_time_s": time.time() - started,
        "peak_memory_mb": peak_memory_mb(),
        "data_report": ctx.data.report,
        **({"snapshots": snapshots} if snapshots else {}),
        **(extra or {}),
    }
    if launch.in_worker():  # what the trainer really ran (DDP, FSDP, DEEPSPEED, MULTI_CPU …)
        summary["parallel"] = str(trainer.accelerator.distributed_type).rsplit(".", 1)[-1]
    return StageResult(artifact=artifact, summary=summary)


def loraplus(ctx: StageContext, trainer: Any) -> None:
    """`adapter.loraplus_lr_ratio`: peft's LoRA+ optimizer (B matrices at ratio × the
    learning rate), of the optimizer class the spec names, set before the trainer would
    build its own."""
    ratio = ctx.stage.adapter.loraplus_lr_ratio
    if not ratio or not any("lora_B" in n for n, _ in trainer.model.named_parameters()):
        return
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    kwargs.pop("lr", None)
    trainer.optimizer = create_loraplus_optimizer(
        trainer.model,
        cls,
        lr=trainer.args.learning_rate,
        loraplus_lr_ratio=ratio,
        loraplus_weight_decay=trainer.args.weight_decay,
        **kwargs,
    )


def quiet_library_bars() -> None:
    """Keep one progress bar (training steps); hide datasets' and saving bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def _evaluate(trainer: Any, *, reuse_last: bool = False) -> float | None:
    """The eval loss of the model as it is; `reuse_last`: the trainer's own evaluation at
    this very step when it just ran one (a stage whose last step is a multiple of
    eval_steps is not evaluated twice — not with load_best_model_at_end, whose final
    model may be an earlier checkpoint)."""
    if trainer.eval_dataset is None:
        return None
    if reuse_last:
        for entry in reversed(trainer.state.log_history):
            if "eval_loss" in entry:
                if entry.get("step") == trainer.state.global_step:
                    return float(entry["eval_loss"])
                break
    return float(trainer.evaluate()["eval_loss"])


def _initial_eval_loss(ctx: StageContext, trainer: Any) -> float | None:
    """The eval loss before training; kept in the stage folder, so a resumed stage still
    reports where it started."""
    import json

    kept = ctx.work_dir / "initial_eval.json"
    if ctx.resume_from is not None:
        try:
            return json.loads(kept.read_text())["eval_loss"]  # type: ignore[no-any-return]
        except (OSError, ValueError, KeyError):
            return None
    loss = _evaluate(trainer)
    if launch.is_main():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"eval_loss": loss}))
    return loss


def _last_train_loss(trainer: Any) -> float | None:
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return float(losses[-1]) if losses else None


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def reset_peak_memory() -> None:
    """Start a new peak-memory window (one per stage), so a stage's peak is its own and
    not the highest of everything this process ran before it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # Linux: "5" resets the RSS high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    """Peak GPU memory allocated on CUDA; else the peak resident set (RAM) since the last
    `reset_peak_memory`."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _quant_kwargs(quant: Any) -> dict[str, Any] | None:
    if quant is None:
        return None
    q = quant if isinstance(quant, dict) else quant.to_dict()
    keys = ("load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant")
    out = {k: q[k] for k in keys if k in q}
    out["bnb_4bit_compute_dtype"] = str(q.get("bnb_4bit_compute_dtype", "float32")).replace(
        "torch.", ""
    )
    return out


def save_artifact(
    trainer: Any, tokenizer: Any, target: Path, *, kind: str, base: str, meta: dict[str, Any]
) -> Artifact:
    """Write the adapter (or full weights) and tokenizer atomically to `target`."""
    import json

    tmp = target.with_name(target.name + ".tmp")
    main = trainer.args.should_save  # several processes: only the main one writes
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # every rank: FSDP / ZeRO-3 gather the full state here
    if main:
        tokenizer.save_pretrained(str(tmp))
        (tmp / "ftlab_artifact.json").write_text(
            json.dumps({"kind": kind, "base": base, **meta}, indent=2)
        )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    trainer.accelerator.wait_for_everyone()
    return Artifact(path=target, kind=kind, base=base)
