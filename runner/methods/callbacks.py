"""Trainer callbacks shared by every method: step metrics and a quiet progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


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


class QuietProgress(ProgressCallback):
    """transformers' progress bar, with the latest loss on the bar instead of a log line."""

    def __init__(self, description: str) -> None:
        super().__init__()
        self.description = description

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        super().on_train_begin(args, state, control, **kw)
        if self.training_bar is not None:
            self.training_bar.set_description(self.description)
            self.training_bar.update(state.global_step)  # resumed runs start part-way
            self.current_step = state.global_step

    def on_prediction_step(
        self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kw: Any
    ) -> None:
        pass  # evaluation passes are short; their bars only add noise

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if self.training_bar is None or not logs:
            return
        shown = {k: f"{logs[k]:.3f}" for k in ("loss", "eval_loss") if k in logs}
        if shown:
            self.training_bar.set_postfix(shown, refresh=False)
