"""ftlab's per-step overhead: the same LoRA SFT through `ftlab` and through plain trl.

Both paths run in this one process, in ABBA order (trl, ftlab, ftlab, trl …) so that
machine drift hits both alike. Per-step time is measured by the same callback in both
(optimizer step to optimizer step), skipping warm-up steps; the end-to-end wall time of
each path (model load, tokenisation, saving) is printed beside it.

    python benchmarks/overhead.py [--model tiny|random:smollm2-135m] [--steps 60] [--rounds 2]

Goal: per-step ratio ftlab / trl ≤ 1.02 once models are warm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "experiments" / "data" / "support_sft.jsonl"


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)


def spec_text(model: str, steps: int, out: Path) -> str:
    return f"""
name: overhead
model: {model}
data:
  sft: {{path: {DATA}, format: messages, val_fraction: 0.0}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 16, alpha: 32, dropout: 0.0}}
    train: {{learning_rate: 1.0e-3, max_steps: {steps}, batch_size: 4, max_length: 256,
             precision: fp32, logging_steps: 5, save_steps: 100000}}
output: {{dir: {out}}}
"""


def run_ftlab(model: str, steps: int, warmup: int, work: Path) -> tuple[list[float], float]:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    path = work / "spec.yaml"
    path.write_text(spec_text(model, steps, work / f"runs-{time.time_ns()}"))
    ((name, spec),) = expand_runs(path)
    timer = StepTimer(warmup)
    start = time.perf_counter()
    rd = execute.create_run(spec, variant=name, spec_file=path, overrides=[])
    execute.execute(rd, spec, extra_callbacks=[timer])
    return timer.times, time.perf_counter() - start


def same_rows() -> list[dict[str, Any]]:
    from ftlab.runner import data
    from ftlab.runner.spec.schema import DataSource

    src = DataSource(path=str(DATA), format="messages", val_fraction=0.0)
    return data.load(src, base_dir=ROOT, seed=42).train


def run_trl(model_path: str, steps: int, warmup: int, work: Path) -> tuple[list[float], float]:
    """What a user would write by hand with trl + peft."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    timer = StepTimer(warmup)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    # The same rows in the same order as ftlab's loader gives its trainer, so that both
    # trainers (same seed) see identical batches and the step times are comparable.
    ds = datasets.Dataset.from_list(same_rows())
    args = SFTConfig(
        output_dir=str(work / f"trl-{time.time_ns()}"),
        learning_rate=1e-3,
        max_steps=steps,
        per_device_train_batch_size=4,
        max_length=256,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        assistant_only_loss=True,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=42,
        data_seed=42,
    )
    peft_config = LoraConfig(
        task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    trainer.train()
    trainer.save_model(str(work / "trl-out"))
    return timer.times, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from ftlab.cli.main import _quiet_libraries
    from ftlab.runner import models

    _quiet_libraries()
    model_path = models.resolve(args.model).path
    per_step: dict[str, list[float]] = {"trl": [], "ftlab": []}
    wall: dict[str, list[float]] = {"trl": [], "ftlab": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i in range(args.rounds):
            # ABBA order: whatever drifts over time (caches, clocks) hits both paths alike
            for name in ("trl", "ftlab") if i % 2 == 0 else ("ftlab", "trl"):
                if name == "trl":
                    times, total = run_trl(model_path, args.steps, args.warmup, work)
                else:
                    times, total = run_ftlab(args.model, args.steps, args.warmup, work)
                per_step[name] += times
                wall[name].append(total)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    print(
        f"\nmodel {args.model}, LoRA r=16, batch 4, {args.steps} steps × {args.rounds} rounds "
        f"(first {args.warmup} steps of each run skipped)"
    )
    for name in ("trl", "ftlab"):
        print(
            f"  {name:6} median step {med[name] * 1000:8.2f} ms   "
            f"mean end-to-end {statistics.mean(wall[name]):6.2f} s"
        )
    print(f"per-step time ratio ftlab / trl = {med['ftlab'] / med['trl']:.3f}  (goal ≤ 1.02)")


if __name__ == "__main__":
    main()
