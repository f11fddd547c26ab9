"""Tokens per second of ftlab's default SFT against a plain trl script (trl's defaults:
padded batches in random order), same data, same steps, same run.

The data is generated to spread like real instruction data (a user turn of a few to a
hundred words, a reply of a few to several hundred tokens, log-normal), because the
shipped SFT rows are all 79–116 tokens and no batching could show a gain on them. Both
paths train the same LoRA on the same rows for one epoch with the same loss (assistant
tokens only), then report their held-out loss on the same validation rows.

    python benchmarks/throughput.py [--rows 480] [--batch 8] [--rounds 2]

Printed: real (non-pad) tokens/s of each path, their ratio, the padding share of each
path's batches, and the held-out loss of each. Both paths start from the same seed (the
trl script seeds torch before peft initialises LoRA, as ftlab does): seeds alone move the
held-out loss by ~1%, more than the goal's tolerance. Goal: ratio ≥ 1.3 on CPU at equal
held-out loss ±1%. On CPU, `train.padding_free: auto` picks padding-free batches for data
like this (a cost model of the lengths: flat batches attend over Σ lengths at once).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "oven",
    "flour",
    "rise",
    "knead",
    "bake",
    "dough",
    "salt",
    "water",
    "yeast",
    "crust",
    "loaf",
    "proof",
    "hour",
    "minutes",
    "warm",
]


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Baking Q&A-shaped rows whose lengths spread like instruction data."""
    rng = random.Random(seed)

    def text(mu: float, sigma: float, cap: int) -> str:
        n = max(2, min(cap, int(rng.lognormvariate(mu, sigma))))
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with path.open("w") as f:
        for _ in range(rows):
            messages = [
                {"role": "user", "content": text(2.8, 0.8, 100)},
                {"role": "assistant", "content": text(3.8, 1.0, 450)},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")


def spec_text(data: Path, out: Path, batch: int, lr: float, seed: int = 0, extra: str = "") -> str:
    return f"""
name: throughput
model: tiny
seed: {seed}
data:
  sft: {{path: {data}, val_fraction: 0.1}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 16, alpha: 32, dropout: 0.0}}
    train: {{learning_rate: {lr}, epochs: 1, batch_size: {batch}, max_length: 1024,
             precision: fp32, logging_steps: 10, save_steps: 100000{extra}}}
output: {{dir: {out}}}
"""


class Counting:
    """Wraps a collator: counts real and padded token slots (it changes nothing)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.real, self.slots = inner, 0, 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        self.real += int(batch["attention_mask"].sum())
        self.slots += int(batch["attention_mask"].numel())
        return batch


def run_trl(data: Path, work: Path, batch: int, lr: float, seed: int = 0) -> dict[str, float]:
    """The plain trl script a user would write: SFTTrainer with trl's defaults."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ftlab.runner import models
    from ftlab.runner.data import load
    from ftlab.runner.spec.schema import DataSource

    ds = load(DataSource(path=str(data), val_fraction=0.1), base_dir=data.parent, seed=0)
    ref = models.resolve("tiny")
    tok = models.load_tokenizer(ref)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    collator = Counting(DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id))
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(work / "trl"),
            num_train_epochs=1,
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=batch,
            learning_rate=lr,
            max_length=1024,
            assistant_only_loss=True,  # the same loss as ftlab's default
            bf16=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=10,
            disable_tqdm=True,
            seed=seed,
        ),
        train_dataset=datasets.Dataset.from_list(ds.train),
        eval_dataset=datasets.Dataset.from_list(ds.val),
        processing_class=tok,
        peft_config=LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
        data_collator=collator,
    )
    out = trainer.train()
    runtime = out.metrics["train_runtime"]
    real, slots = collator.real, collator.slots
    held_out = trainer.evaluate()["eval_loss"]
    return {
        "tokens_per_s": real / runtime,
        "padding": 1 - real / slots,
        "held_out": held_out,
        "steps": trainer.state.global_step,
        "runtime": runtime,
    }


def run_ftlab(
    data: Path, work: Path, batch: int, lr: float, seed: int = 0, extra: str = ""
) -> dict[str, float]:
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    work.mkdir(parents=True, exist_ok=True)
    spec_file = work / "ftlab.yaml"
    spec_file.write_text(spec_text(data, work / "runs", batch, lr, seed, extra))
    ((variant, spec),) = expand_runs(spec_file)
    rd = execute.create_run(spec, variant=variant, spec_file=spec_file, overrides=[])
    summary = execute.execute(rd, spec).stages["sft"]["summary"]
    runtime = summary["train_runtime_s"]
    return {
        "tokens_per_s": summary["tokens_per_epoch"] / runtime,
        "held_out": summary["eval_loss"],
        "steps": summary["steps"],
        "runtime": runtime,
        "batching": summary["batching"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("ftlab").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "baking.jsonl"
        generate(data, args.rows)
        results: dict[str, list[dict[str, float]]] = {"trl": [], "ftlab": []}
        order = ["trl", "ftlab", "ftlab", "trl"] * args.rounds  # ABBA: drift hits both
        for i, path in enumerate(order[: 2 * args.rounds]):
            run = run_trl if path == "trl" else run_ftlab
            started = time.time()
            r = run(data, work / f"{path}-{i}", args.batch, args.lr)
            results[path].append(r)
            print(
                f"  {path:<5} round {i + 1}/{2 * args.rounds}: {r['tokens_per_s']:8.0f} tok/s, "
                f"{r['steps']} steps, held-out loss {r['held_out']:.4f} "
                f"({time.time() - started:.0f} s)",
                flush=True,
            )
    trl_tps = statistics.median(r["tokens_per_s"] for r in results["trl"])
    ftlab_tps = statistics.median(r["tokens_per_s"] for r in results["ftlab"])
    trl_loss = statistics.median(r["held_out"] for r in results["trl"])
    ftlab_loss = statistics.median(r["held_out"] for r in results["ftlab"])
    print(f"\nrows {args.rows}, batch {args.batch}, one epoch, LoRA r16 on tiny, CPU")
    print(
        f"trl defaults (padded, random order): {trl_tps:8.0f} tok/s, padding "
        f"{results['trl'][0]['padding']:.1%} of batch slots, held-out loss {trl_loss:.4f}"
    )
    batching = ", ".join(k for k, v in results["ftlab"][0]["batching"].items() if v) or "padded"
    print(f"ftlab defaults ({batching}): {ftlab_tps:8.0f} tok/s, held-out loss {ftlab_loss:.4f}")
    print(
        f"ratio ftlab / trl: {ftlab_tps / trl_tps:.2f}× (goal ≥ 1.3×); held-out loss "
        f"{(ftlab_loss / trl_loss - 1):+.2%} (goal within ±1%)"
    )


if __name__ == "__main__":
    main()
