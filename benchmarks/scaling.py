"""Data-parallel scaling: LoRA SFT on 1 process vs N processes at the same total batch
(per-process batch = total / N), through ftlab's own launch path (torchrun). Prints
training tokens/s for each and the ratio.

    python benchmarks/scaling.py [--processes 2] [--model tiny] [--steps 30] [--batch 8]

On a CPU machine the processes share its cores (gloo); on a GPU machine give
`--processes` = number of GPUs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = """\
name: scaling
seed: 1
model: {model}
data:
  sft: {{path: {data}/support_sft.jsonl, val_fraction: 0.0}}
stages:
  - name: sft
    method: lora
    adapter: {{r: 16, alpha: 32, dropout: 0.0}}
    train: {{learning_rate: 1.0e-3, max_steps: {steps}, batch_size: {batch}, max_length: 128,
             logging_steps: 5, save_steps: 100000, precision: auto}}
resources: {{processes: {processes}}}
output: {{dir: {runs}}}
"""


def measure(model: str, steps: int, total_batch: int, processes: int) -> tuple[float, float]:
    from ftlab.runner.rundir import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "scaling.yaml"
        spec.write_text(
            SPEC.format(
                model=model,
                data=ROOT / "experiments" / "data",
                steps=steps,
                batch=total_batch // processes,
                processes=processes,
                runs=Path(tmp) / "runs",
            )
        )
        done = subprocess.run(
            [sys.executable, "-m", "ftlab.cli", "run", str(spec)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
        (run_dir,) = [d for d in (Path(tmp) / "runs").iterdir() if (d / "run.json").exists()]
        s = RunDir(run_dir).stage("sft")["summary"]
        tokens_per_example = s["tokens_per_epoch"] / max(1, s["train_rows"])
        seconds = s["train_runtime_s"]
        return steps * total_batch * tokens_per_example / seconds, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8, help="total batch (all processes)")
    args = ap.parse_args()
    one, t1 = measure(args.model, args.steps, args.batch, 1)
    many, tn = measure(args.model, args.steps, args.batch, args.processes)
    print(f"1 process:  {one:9.0f} tokens/s ({t1:.1f} s for {args.steps} steps)")
    print(f"{args.processes} processes: {many:9.0f} tokens/s ({tn:.1f} s)")
    print(f"ratio {many / one:.2f}× (ideal {args.processes}×; same total batch {args.batch})")


if __name__ == "__main__":
    main()
