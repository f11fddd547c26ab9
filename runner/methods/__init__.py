"""The method registry. A method is a `base.Method` subclass registered in its own module
(`METHODS.register("name")`); the lazy placeholders below only let `ftlab --help` and
`ftlab validate` list the shipped methods without importing torch — importing the module
replaces them with what it registers."""

from __future__ import annotations

from ftlab.runner.methods.base import Method
from ftlab.runner.registry import Registry

METHODS: Registry[Method] = Registry("method", base=Method)

for _module, _names in (
    ("sft", ("full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning")),
    ("reward_model", ("reward_model",)),
    ("ppo", ("ppo",)),
    ("online", ("grpo", "rloo")),
    ("online_dpo", ("online_dpo",)),
    ("preference", ("dpo", "ipo", "simpo", "cpo", "orpo", "kto")),
):
    for _name in _names:
        METHODS.register(_name, f"ftlab.runner.methods.{_module}")
