"""`ftlab plan`: the memory and step plan of each run and stage (runner/plan.py computes
it; this prints it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ftlab.cli.app import Overrides, app, console, fail
from ftlab.cli.results import cuda
from ftlab.runner.plan import RunPlan, _mb, advice, per_gpu

STEPS = (
    "optim steps = optimizer steps of the whole stage: max_steps, else ⌈epochs × per epoch⌉;  "
    "per epoch = ⌈batches / grad_accum⌉ with batches = ⌈⌈examples / batch_size⌉ / processes⌉ "
    "(as transformers counts; examples = packed sequences with packing, completions for "
    "grpo/rloo)"
)
FORMULA = (
    "peak ≈ weights + gradients + optimizer + activations + logits + extra models;  "
    "activations = b·s·h·L·(34 + 5·a·s/h)·act_bytes/2 (checkpointing: b·s·h·L·2·act_bytes "
    "+ one layer);  logits = b·s·V·8;  AdamW = 8 B per trainable param, 8-bit AdamW ≈ 2 B"
)


@app.command()
def plan(
    spec: Annotated[Path, typer.Argument(help="Experiment spec (YAML).")],
    overrides: Overrides = None,
    gpu_memory: Annotated[
        float | None,
        typer.Option(help="GiB per GPU to check against (default: this machine's GPU, if any)."),
    ] = None,
) -> None:
    """Per run and stage: parameters, tokens per epoch, estimated peak memory, and the
    per-GPU share under resources.strategy (warns when a stage will not fit)."""
    from ftlab.runner.plan import plan_runs

    try:
        plans = plan_runs(spec, overrides or [])
    except Exception as exc:  # noqa: BLE001
        fail(exc)
    if gpu_memory is None and cuda():
        import torch

        gpu_memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    render(plans, console, gpu_memory)


def render(plans: list[RunPlan], console: Console, gpu_memory_gb: float | None = None) -> None:
    console.print(_table(plans))
    console.print(FORMULA, style="dim", markup=False)
    console.print(STEPS, style="dim", markup=False)
    _print_notes(plans, console)
    res = plans[0].resources if plans else None
    if res is not None:
        console.print(
            f"per GPU: {res.strategy} on {res.world_size} process(es); sharding divides "
            "weights/gradients/optimizer state, offload moves them to CPU RAM",
            style="dim",
            markup=False,
        )
    if gpu_memory_gb:
        budget = gpu_memory_gb * 2**30
        for p in plans:
            for s in p.stages:
                if text := advice(s, p.resources, budget):
                    console.print(Text.assemble(("warning", "yellow"), f" ({p.variant}): {text}"))


def _table(plans: list[RunPlan]) -> Table:
    table = Table(title="Plan (memory in bytes: M = MiB, G = GiB)")
    cols = (
        "run",
        "stage",
        "method",
        "trainable",
        "total",
        "tok/epoch",
        "optim steps",
        "per epoch",
        "prec",
        "weights",
        "grads",
        "optim",
        "activ",
        "logits",
        "extra",
        "peak",
        "per GPU",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in cols[:3] else "right", no_wrap=True)
    for p in plans:
        for s in p.stages:
            m = s.memory
            table.add_row(
                p.variant,
                s.stage,
                s.method,
                _count(s.trainable),
                _count(s.total),
                f"{'≈' * s.tokens_estimated}{s.tokens_per_epoch:,}",
                f"{s.steps:,}",
                f"{s.steps_per_epoch:,}",
                s.precision,
                *(
                    _mb(m[k])
                    for k in (
                        "weights",
                        "gradients",
                        "optimizer",
                        "activations",
                        "logits",
                        "extra models",
                    )
                ),
                _mb(s.peak_bytes),
                _mb(sum(per_gpu(s.memory, p.resources).values())),
            )
    return table


def _print_notes(plans: list[RunPlan], console: Console) -> None:
    """Each distinct note once, with the run/stage rows it applies to."""
    where: dict[str, list[str]] = {}
    for p in plans:
        for s in p.stages:
            for note in s.notes:
                where.setdefault(note, []).append(f"{p.variant}/{s.stage}")
    for note, rows in where.items():
        text = f"note ({', '.join(rows)}): {note}"  # printed without markup: paths hold [x]
        console.print(text, style="dim", highlight=False, markup=False)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"
