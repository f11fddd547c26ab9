"""Trainer callbacks shared by every method: step metrics and the stage's progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


class MetricsCallback(TrainerCallback):
    """Append every numeric log record (loss, lr, grad_norm, eval_loss …) to the run."""

    def __init__(self, log: Callable[[dict[str, Any]], None], *, stage: str = "") -> None:
        self._log = log
        self._stage = stage

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        from ftlab.runner.methods.base import check_finite

        if not logs:
            return
        values = {
            k: float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "total_flos"
        }
        check_finite({**values, "step": state.global_step}, stage=self._stage)  # every rank
        if values and state.is_world_process_zero:
            self._log(
                {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **values}
            )


class StageProgress(TrainerCallback):
    """The stage's steps on ftlab's display (runner/progress.py), the latest loss beside
    them; rank 0 only. Evaluation passes are short and get no bar."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from ftlab.runner.progress import Bar

        quiet = not state.is_world_process_zero
        self.bar = Bar(state.max_steps, "training", initial=state.global_step, quiet=quiet)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None and state.global_step > self.bar.n:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        shown = {k: f"{logs[k]:.3f}" for k in ("loss", "eval_loss") if k in (logs or {})}
        if self.bar is not None and shown:
            self.bar.set_postfix(shown)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Snapshots(TrainerCallback):
    """Saves the model at every multiple of `steps` before the last step (the last step
    is the stage's artifact)."""

    def __init__(self, steps: tuple[int, ...], save: Any) -> None:
        self.steps, self.save = steps, save

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        step = state.global_step
        if step < state.max_steps and any(step % n == 0 for n in self.steps):
            self.save(step)


class CompletionLog(TrainerCallback):
    """The first `n` completions of the latest generation batch (prompt, completion, each
    reward term, advantage) appended to `path` at each logging step, from the trainer's
    own record of them (trl's GRPO/RLOO `_logs`); rank 0 only. A batch reused by later
    steps (`num_iterations` > 1) is written once."""

    def __init__(self, trainer: Any, path: Any, n: int) -> None:
        self.trainer, self.path, self.n, self.last = trainer, path, n, -1
        self.written: list[Any] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        import json

        from ftlab.runner.rewards import text_of

        record = getattr(self.trainer, "_logs", None)
        if not record or not state.is_world_process_zero or state.global_step == self.last:
            return
        self.last = state.global_step
        prompts, completions = list(record["prompt"]), list(record["completion"])
        if completions[: self.n] == self.written:
            return  # the same generation batch, trained on again
        self.written = completions[: self.n]
        rewards = {name: list(values) for name, values in record["rewards"].items()}
        advantages = list(record.get("advantages") or [])
        with open(self.path, "a", encoding="utf-8") as f:
            for i in range(min(self.n, len(completions))):
                prompt = prompts[i]
                row = {
                    "step": state.global_step,
                    "prompt": text_of(prompt[-1:]) if isinstance(prompt, list) else prompt,
                    "completion": text_of(completions[i]),
                    "rewards": {k: v[i] for k, v in rewards.items() if i < len(v)},
                    "advantage": advantages[i] if i < len(advantages) else None,
                }
                f.write(json.dumps(row, ensure_ascii=False, default=float) + "\n")
