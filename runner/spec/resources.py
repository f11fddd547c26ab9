"""`resources:` of a spec: processes, nodes and the parallel strategy (DDP, FSDP,
DeepSpeed ZeRO)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ftlab.runner.spec.strict import Strict


class FsdpSpec(Strict):
    """FSDP options (strategy: fsdp)."""

    sharding: Literal["full_shard", "shard_grad_op"] = "full_shard"
    """FSDP2: `full_shard` re-shards parameters after the forward pass (ZeRO-3-like, least
    memory); `shard_grad_op` keeps them gathered until the backward pass (ZeRO-2-like)."""
    auto_wrap: Literal["transformer", "size", "none"] = "transformer"
    """Wrap each transformer block (the model's `_no_split_modules`), by parameter count,
    or not at all."""
    min_params: int = Field(100_000_000, ge=1)
    """Smallest wrapped module for `auto_wrap: size`."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass (FSDP's own checkpointing)."""
    cpu_offload: bool = False
    """Keep sharded parameters on the CPU between uses."""


class DeepSpeedSpec(Strict):
    """DeepSpeed ZeRO options (strategy: deepspeed)."""

    stage: Literal[1, 2, 3] = 2
    """ZeRO stage: 1 shards optimizer state, 2 adds gradients, 3 adds parameters."""
    offload_optimizer: bool = False
    """Optimizer state in CPU memory."""
    offload_params: bool = False
    """Parameters in CPU memory (stage 3 only)."""


class ResourcesSpec(Strict):
    """Where a stage trains: processes (GPUs) per node, nodes, and the parallel strategy.
    More than one process launches each stage through torchrun; the strategy's settings
    go to the trainer (FSDP) or to a DeepSpeed config written into the run directory."""

    processes: int = Field(1, ge=1)
    """Processes per node (one per GPU; on a CPU-only machine, CPU processes with gloo)."""
    nodes: int = Field(1, ge=1)
    """Machines taking part; start `ftlab run` on each with its `--node-rank`."""
    node_rank: int = Field(0, ge=0)
    """This machine's rank among `nodes` (0 = the main node, which writes the run files)."""
    main_address: str = ""
    """`host:port` of node 0 for multi-node runs (torchrun's rendezvous)."""
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    """Data parallel (a full replica per process), FSDP, or DeepSpeed ZeRO."""
    fsdp: FsdpSpec = FsdpSpec()
    """FSDP settings."""
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    """DeepSpeed settings."""

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes
