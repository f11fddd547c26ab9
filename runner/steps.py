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


def packed(lengths: list[int], max_length: int) -> int:
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
