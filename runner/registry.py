"""One small registry for methods, eval kinds and judge backends.

Entries are registered either with the decorator (``@METHODS.register("lora")``) or
lazily by ``"module:attr"`` string, so that ``ftlab --help`` never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


# Names users bring from peft / transformers / trl configs, mapped to ours.
KNOWN_ALIASES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "use_rslora": "rslora",
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "max_seq_length": "max_length",
    "sequence_len": "max_length",
    "lr_scheduler_type": "scheduler",
    "lr_scheduler": "scheduler",
    "optim": "optimizer",
    "bf16": "precision",
    "fp16": "precision",
    "warmup": "warmup_ratio",
    "base_model": "model",
    "datasets": "data",
    "output_dir": "output",
}


def did_you_mean(word: str, options: list[str] | set[str] | tuple[str, ...]) -> str:
    """Return ' Did you mean 'x'?' for the closest option, or '' when none is close."""
    alias = KNOWN_ALIASES.get(str(word))
    if alias in options:
        return f" Did you mean '{alias}'?"
    close = difflib.get_close_matches(str(word), sorted(options), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the fix."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0])


class Registry(Generic[T]):
    """Name → object, with lazy "module:attr" entries and helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T]:
        """Register ``target`` under ``name``; used bare it is a decorator.

        The decorator may replace a lazy ``"module:attr"`` placeholder when it runs in that
        module (importing the module is how the placeholder resolves), and an object of the
        same module registered before (a user's file executed again); anything else under a
        taken name is an error.
        """
        if target is not None and name in self._entries and self._entries[name] != target:
            raise ValueError(f"{self.kind} '{name}' is already registered")

        def deco(obj: T) -> T:
            current = self._entries.get(name)
            module = getattr(obj, "__module__", None)
            if isinstance(current, str):
                if current.partition(":")[0] != module:
                    raise ValueError(
                        f"{self.kind} '{name}' is already registered (lazily, as {current})"
                    )
            elif (
                current is not None
                and current is not obj
                and getattr(current, "__module__", None) != module
            ):
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            return obj

        if target is not None:
            self._entries[name] = target
        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self.names())} "
                f"Available: {', '.join(self.names())}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            # The module's own decorator may have registered it already.
            self._entries[name] = obj
            return obj  # type: ignore[no-any-return]
        return entry
