"""Optimizers: the names transformers accepts (`TrainingArguments.optim`) and how many
bytes of state each keeps per trainable value, for `ftlab plan`.

The names are transformers' own `OptimizerNames`, read from its source rather than
imported: `transformers.training_args` pulls in torch and peft (seconds), and
`ftlab validate` checks specs without either.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# bitsandbytes (min_8bit_size) and torchao keep fp32 state for tensors smaller than this,
# and quantise larger ones blockwise with one fp32 scale per block.
MIN_QUANTISED_SIZE = 4096
BLOCK = 256


@functools.cache
def names() -> tuple[str, ...]:
    """Every optimizer name transformers accepts, in its order."""
    found = _names_from_source()
    if found:
        return found
    from transformers.training_args import OptimizerNames  # the class moved: import it

    return tuple(o.value for o in OptimizerNames)


def _names_from_source() -> tuple[str, ...]:
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        return ()
    source = Path(spec.origin).parent / "training_args.py"
    if not source.is_file():
        return ()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef) and node.name == "OptimizerNames":
            return tuple(
                st.value.value
                for st in node.body
                if isinstance(st, ast.Assign)
                and isinstance(st.value, ast.Constant)
                and isinstance(st.value.value, str)
            )
    return ()


@dataclass(frozen=True)
class State:
    """An optimizer's state per trainable value: `tensors` buffers of `bits` each."""

    tensors: float
    bits: int = 32
    note: str = ""  # set where the figure is an approximation


ADAM = State(2)
ADAM_8BIT = State(2, 8)
NOT_MODELLED = State(2, note="low-rank state not modelled; counted as AdamW's 8 B (an upper bound)")
FACTORED = State(1, note="factored second moment; counted as 4 B per value")

# Names not listed here (the AdamW family in fp32: adamw_torch, adamw_torch_fused,
# paged_adamw_32bit, stable_adamw, schedule_free_adamw, …) keep two fp32 moments.
STATES: dict[str, State] = {
    "sgd": State(0),  # transformers' SGD has no momentum by default
    "adafactor": FACTORED,
    "adagrad": State(1),
    "rmsprop": State(1),
    "rmsprop_bnb": State(1),
    "rmsprop_bnb_32bit": State(1),
    "rmsprop_bnb_8bit": State(1, 8),
    "lion_32bit": State(1),
    "paged_lion_32bit": State(1),
    "lion_8bit": State(1, 8),
    "paged_lion_8bit": State(1, 8),
    "adamw_8bit": ADAM_8BIT,
    "adamw_bnb_8bit": ADAM_8BIT,
    "paged_adamw_8bit": ADAM_8BIT,
    "adamw_torch_8bit": ADAM_8BIT,
    "adamw_torch_4bit": State(2, 4),
    "ademamix": State(3),
    "paged_ademamix_32bit": State(3),
    "ademamix_8bit": State(3, 8),
    "paged_ademamix_8bit": State(3, 8),
    "grokadamw": State(3),
    "schedule_free_sgd": State(1),
    "lomo": State(0),
    "adalomo": FACTORED,
    **{
        n: NOT_MODELLED
        for n in (
            "galore_adamw",
            "galore_adamw_8bit",
            "galore_adafactor",
            "galore_adamw_layerwise",
            "galore_adamw_8bit_layerwise",
            "galore_adafactor_layerwise",
            "apollo_adamw",
            "apollo_adamw_layerwise",
        )
    },
}


def state(name: str) -> State:
    return STATES.get(name, ADAM)


def state_bytes(name: str, *, large: int, small: int) -> float:
    """Bytes of optimizer state for `large` trainable values in tensors of at least
    MIN_QUANTISED_SIZE values and `small` values in smaller tensors. An 8- or 4-bit
    optimizer stores `bits`/8 bytes per value plus one fp32 scale per BLOCK values, for
    large tensors only; small ones keep fp32 state."""
    s = state(name)
    if s.bits == 32:
        return s.tensors * 4.0 * (large + small)
    return s.tensors * ((s.bits / 8 + 4 / BLOCK) * large + 4.0 * small)
