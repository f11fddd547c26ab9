"""The method registry: one entry per training method, imported lazily.

A method is one module (see `base.Method`): it declares its params model, the data
format it trains on, and `train(ctx) -> Artifact`. Adding a method is one module, one
line here and one test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftlab.runner.registry import Registry

if TYPE_CHECKING:
    from ftlab.runner.methods.base import Method

METHODS: Registry[Method] = Registry("method")

for _name in ("full", "lora", "qlora", "dora", "ia3", "prompt_tuning", "prefix_tuning"):
    METHODS.register(_name, f"ftlab.runner.methods.sft:{_name.upper()}")
METHODS.register("reward_model", "ftlab.runner.methods.reward_model:REWARD_MODEL")
METHODS.register("ppo", "ftlab.runner.methods.ppo:PPO_METHOD")
for _name in ("grpo", "rloo"):
    METHODS.register(_name, f"ftlab.runner.methods.online:{_name.upper()}")
for _name in ("dpo", "ipo", "simpo", "cpo", "orpo", "kto"):
    METHODS.register(_name, f"ftlab.runner.methods.preference:{_name.upper()}")
