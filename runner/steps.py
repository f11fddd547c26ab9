"""Optimizer steps of a stage, counted the way the loop that trains it counts them.

transformers' Trainer (every trl method): each process gets ⌈⌈samples / batch⌉ / processes⌉
batches per epoch (accelerate's even batches), an epoch is ⌈batches / grad_accum⌉ (at
least 1) optimizer steps (the last, partial accumulation still steps), and a stage is
`max_steps`, else ⌈epochs × steps per epoch⌉. What a "sample" is depends on the method:
a row; a packed sequence (SFT with packing, trl's best-fit-decreasing packer); a
completion (GRPO/RLOO: trl's RepeatSampler draws num_generations per prompt).
ftlab's PPO loop: a step is one rollout batch of `batch_size` prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Steps:
    total: int  # what the stage record's `steps` (the trainer's global_step) will say
    per_epoch: int


def trainer_steps(
    *, samples: int, batch: int, grad_accum: int, processes: int, epochs: float, max_steps: int
) -> Steps:
    """transformers' Trainer.set_initial_training_values, on accelerate's sharded loader."""
    batches = math.ceil(math.ceil(samples / batch) / processes)
    per_epoch = max(math.ceil(batches / grad_accum), 1)
    return Steps(max_steps or math.ceil(epochs * per_epoch), per_epoch)


def ppo_steps(*, rows: int, batch: int, epochs: float, max_steps: int) -> Steps:
    """Rollout batches of ftlab's PPO loop (runner/methods/ppo.py uses this)."""
    per_epoch = max(1, rows // batch)
    return Steps(max_steps or int(epochs * per_epoch), per_epoch)


def stage_steps(*, stage: Any, lengths: list[int], processes: int) -> Steps:
    """A stage's steps, from its training examples' token lengths (≤ max_length)."""
    t = stage.train
    if stage.method == "ppo":
        return ppo_steps(
            rows=len(lengths), batch=t.batch_size, epochs=t.epochs, max_steps=t.max_steps
        )
    samples, batch = len(lengths), t.batch_size
    if stage.method in ("grpo", "rloo"):
        samples, batch = _repeat_sampler(stage, prompts=len(lengths), processes=processes)
    elif t.packing:
        samples = _packed(lengths, t.max_length)
    return trainer_steps(
        samples=samples,
        batch=batch,
        grad_accum=t.grad_accum,
        processes=processes,
        epochs=t.epochs,
        max_steps=t.max_steps,
    )


def _repeat_sampler(stage: Any, *, prompts: int, processes: int) -> tuple[int, int]:
    """(samples, loader batch) of trl's GRPO/RLOO loader: whole generation batches of
    unique prompts, each repeated num_generations times and reused for steps_per_generation
    (= grad_accum) steps; the loader's batch is batch_size × steps_per_generation."""
    from ftlab.runner.methods import METHODS

    t = stage.train
    params = METHODS.get(stage.method).params_model.model_validate(stage.params)
    generations = params.num_generations
    unique = t.batch_size * processes * t.grad_accum // generations
    samples = (prompts // unique) * unique * generations * t.grad_accum
    return samples, t.batch_size * t.grad_accum


def _packed(lengths: list[int], max_length: int) -> int:
    """Sequences trl's SFT packer (best fit decreasing) makes of these examples."""
    import datasets
    from trl.data_utils import pack_dataset

    rows = datasets.Dataset.from_dict({"input_ids": [[0] * n for n in lengths]})
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a planning step, not a job to watch
    try:
        return len(pack_dataset(rows, max_length, strategy="bfd"))
    finally:
        if bars:
            datasets.enable_progress_bars()
