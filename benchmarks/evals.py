"""Eval throughput: lm-eval in-process (ftlab's way: the loaded model, no reload) vs a
separate `lm_eval` CLI process on the same task and model; and judge calls/s with and
without the judge-call cache.

    python benchmarks/evals.py [--model tiny|random:smollm2-135m] [--limit 120] [--pairs 32]

Prints samples/s for both lm-eval paths (the CLI figure includes its process start and
model load, which is what an out-of-process eval costs per run), and judge calls/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--task", default="support_intent_mc")
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--pairs", type=int, default=32)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from ftlab.evals.base import EvalInput
    from ftlab.evals.harness import LM_EVAL, HarnessParams
    from ftlab.runner import models

    ref = models.resolve(args.model)
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32).eval()
    tok = models.load_tokenizer(ref)
    params = HarnessParams(tasks=[args.task])
    inp = EvalInput(model, tok, [], params, base_dir=EXPERIMENTS, limit=args.limit)
    LM_EVAL.run(EvalInput(model, tok, [], params, base_dir=EXPERIMENTS, limit=4))  # warm up
    started = time.perf_counter()
    out = LM_EVAL.run(inp)
    in_process = time.perf_counter() - started
    n = len(out.samples)
    print(
        f"lm-eval in-process : {n} samples in {in_process:6.2f} s = {n / in_process:7.1f} samples/s"
    )

    with tempfile.TemporaryDirectory() as tmp:  # the CLI runs elsewhere, as a user's would
        cmd = [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={ref.path},dtype=float32",
            "--tasks",
            args.task,
            "--include_path",
            str(EXPERIMENTS / "tasks"),
            "--device",
            "cpu",
            "--batch_size",
            "8",
            "--limit",
            str(args.limit),
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
        cli = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"lm-eval CLI failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    else:
        print(
            f"lm-eval CLI process: {n} samples in {cli:6.2f} s = {n / cli:7.1f} samples/s "
            f"(process start + model load included)"
        )
        print(f"in-process speed-up: {cli / in_process:.1f}x")

    from ftlab.evals.backends import LocalBackend
    from ftlab.evals.judge import Judge, JudgeParams, rubric_text

    backend = LocalBackend(ref.path, max_new_tokens=16)
    rubric = rubric_text("support_reply", EXPERIMENTS)
    prompts = [f"My order #{i} is late. - Ana" for i in range(args.pairs)]
    replies = [f"Hi Ana, I have checked order #{i}; it ships today." for i in range(args.pairs)]
    others = ["Orders ship when they ship."] * args.pairs
    rows = [{"prompt": p} for p in prompts]
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("no cache (first)", "cache hit"):
            calls_before = backend.calls
            judge = Judge(JudgeParams(), backend, rubric, Path(tmp))
            started = time.perf_counter()
            judge.pairwise(prompts, replies, others, rows, seed=0)
            took = time.perf_counter() - started
            questions = 2 * args.pairs  # both orders
            made = backend.calls - calls_before
            print(
                f"judge {label:17}: {questions} verdicts in {took:6.2f} s = "
                f"{questions / took:8.1f} verdicts/s ({made} model calls)"
            )


if __name__ == "__main__":
    main()
