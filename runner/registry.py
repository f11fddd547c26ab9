"""One small registry for methods, eval kinds and judge backends.

Entries are registered either with the decorator (``@METHODS.register("lora")``) or
lazily by ``"module:attr"`` string, so that ``ftlab --help`` never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
    """Name → object, with lazy "module[:attr]" entries and helpful errors.

    With a `base` class, only its instances register, and decorating a subclass registers
    an instance of it (``@EVALS.register("toy") class Toy(EvalKind): ...``): the plugin
    declares what it can do on the base's attributes, and the core reads them.
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str | None = None) -> Callable[[Any], Any]:
        """Register ``target`` under ``name``; used bare it is a decorator.

        The decorator may replace a lazy ``"module:attr"`` placeholder when it runs in that
        module (importing the module is how the placeholder resolves), and an object of the
        same module registered before (a user's file executed again, a test module
        re-imported); anything else under a taken name is an error.
        """
        if target is not None and name in self._entries and self._entries[name] != target:
            raise ValueError(f"{self.kind} '{name}' is already registered")

        def deco(obj: Any) -> Any:
            entry = self._checked(name, obj() if self._is_plugin_class(obj) else obj)
            current = self._entries.get(name)
            module = getattr(entry, "__module__", None)
            if isinstance(current, str):
                if current.partition(":")[0] != module:
                    raise ValueError(
                        f"{self.kind} '{name}' is already registered (lazily, as {current})"
                    )
            elif (
                current is not None
                and current is not entry
                and getattr(current, "__module__", None) != module
            ):
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = entry
            return obj

        if target is not None:
            self._entries[name] = target if isinstance(target, str) else self._checked(name, target)
        return deco

    def _is_plugin_class(self, obj: Any) -> bool:
        return self.base is not None and isinstance(obj, type) and issubclass(obj, self.base)

    def _checked(self, name: str, obj: Any) -> Any:
        if self.base is not None and not isinstance(obj, self.base):
            raise TypeError(
                f"{self.kind} '{name}' must be a {self.base.__name__} (subclass it and set "
                f"what differs from its defaults), not {type(obj).__name__}"
            )
        return obj

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
            imported = importlib.import_module(module)
            # the module's own decorator registered it on import; else the attribute is it
            if isinstance(self._entries[name], str):
                if not attr:
                    raise UnknownNameError(f"{module} did not register {self.kind} '{name}'")
                obj = getattr(imported, attr)
                self._entries[name] = self._checked(
                    name, obj() if self._is_plugin_class(obj) else obj
                )
            return self._entries[name]  # type: ignore[return-value]
        return entry

    def items(self) -> list[tuple[str, T]]:
        """Every entry, resolved (imports the lazy ones)."""
        return [(name, self.get(name)) for name in self.names()]
