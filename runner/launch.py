"""Training a stage on several processes: ftlab launches `torchrun` itself.

`resources.processes × resources.nodes > 1` makes each trained stage a torchrun job:
`python -m torch.distributed.run … -m ftlab.runner.worker RUN_DIR STAGE`. Every process
rebuilds the stage from the run directory and trains it with the strategy's trainer
settings (DDP; FSDP through the trainer's `fsdp` options; DeepSpeed through a config file
written into `stages/<stage>/launch/`). Only global rank 0 writes: step metrics, the
artifact (saved whole: the trainer gathers FSDP/ZeRO-3 state before saving) and
`launch/result.json`, which this process (the one `ftlab run` started) turns into the
stage record — so a run directory has one set of files however many processes trained.

Trainer callbacks that can be rebuilt in another process (`for_workers()` → a factory
path and JSON arguments, e.g. a sweep's pruning callback) go to every rank through
`launch/callbacks.json`; a rank that stops the stage on purpose (`RunStopped`, e.g.
pruned) leaves `launch/stopped.json`, and the stage ends in that state here too.

A rank that dies ends the job: torchrun's agent stops the other ranks and exits non-zero;
each rank that raised leaves its traceback in `launch/rank<N>.err`, and the stage fails
with the first of them. `ftlab run --resume RUN` relaunches from the last checkpoint.
The same launch serves sweeps (`--gpus-per-trial`): a trial is a run like any other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import read_json, write_json

WORKER_ENV = "FTLAB_STAGE_WORKER"


class StageLaunchError(RuntimeError):
    """A distributed stage failed; the message names the rank and its error."""


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def distributed(spec: Any) -> bool:
    """Whether this process should launch stages through torchrun: several processes, or
    a sharding strategy (FSDP / ZeRO on one GPU still goes through the launcher)."""
    res = spec.resources
    return (res.world_size > 1 or res.strategy != "ddp") and not in_worker()


def trainer_kwargs(spec: Any, launch_dir: Path, precision: str) -> dict[str, Any]:
    """TrainingArguments for the strategy, inside a worker; {} outside one."""
    if not in_worker():
        return {}
    import torch

    res = spec.resources
    out: dict[str, Any] = {"ddp_backend": "nccl" if torch.cuda.is_available() else "gloo"}
    if res.strategy == "fsdp":  # FSDP2 through the trainer's fsdp_config
        f = res.fsdp
        policy = {
            "transformer": "TRANSFORMER_BASED_WRAP",
            "size": "SIZE_BASED_WRAP",
            "none": "NO_WRAP",
        }[f.auto_wrap]
        config: dict[str, Any] = {
            "version": 2,
            "reshard_after_forward": f.sharding == "full_shard",
            "cpu_offload": f.cpu_offload,
            "activation_checkpointing": f.activation_checkpointing,
            "auto_wrap_policy": policy,
            "state_dict_type": "FULL_STATE_DICT",  # the artifact is saved whole
        }
        if f.auto_wrap == "size":
            config["min_num_params"] = f.min_params
        out |= {"fsdp": True, "fsdp_config": config}
    elif res.strategy == "deepspeed":
        out["deepspeed"] = str(deepspeed_config(spec, launch_dir, precision))
    return out


def deepspeed_config(spec: Any, launch_dir: Path, precision: str) -> Path:
    """A ZeRO config ('auto' values are filled in by the trainer), written once."""
    d = spec.resources.deepspeed
    zero: dict[str, Any] = {"stage": d.stage}
    if d.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if d.offload_params and d.stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if d.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the artifact is whole
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
    }
    path = launch_dir / "deepspeed.json"
    if is_main() or not path.exists():
        launch_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{rank()}.tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(spec: Any, run_path: Path, stage: str, resume_from: Path | None) -> list[str]:
    res = spec.resources
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={res.processes}"]
    if res.nodes == 1:
        cmd += ["--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    else:
        host, _, port = res.main_address.rpartition(":")
        if not host or not port.isdigit():
            raise StageLaunchError(
                f"resources.main_address {res.main_address!r}: expected host:port of node 0 "
                "for a multi-node run (--main-address HOST:PORT)"
            )
        cmd += [
            f"--nnodes={res.nodes}",
            f"--node_rank={res.node_rank}",
            f"--master_addr={host}",
            f"--master_port={port}",
        ]
    cmd += ["--max_restarts=0", "--monitor_interval=1", "-m", "ftlab.runner.worker"]
    cmd += [str(run_path), stage]
    if resume_from is not None:
        cmd += ["--resume-from", str(resume_from)]
    return cmd


def portable_callbacks(callbacks: list[Any], stage: str) -> list[dict[str, Any]]:
    """The callbacks that can be rebuilt in the workers; says which cannot."""
    out, dropped = [], []
    for cb in callbacks:
        entry = cb.for_workers() if hasattr(cb, "for_workers") else None
        if entry is not None:
            out.append(entry)
        else:
            dropped.append(type(cb).__name__)
    if dropped:
        names = ", ".join(dropped)
        print(f"stage {stage}: callbacks {names} cannot be sent to the ranks; not used")
    return out


def launch_stage(
    spec: Any,
    run_path: Path,
    stage: str,
    work: Path,
    resume_from: Path | None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """Run one stage as a torchrun job; returns rank 0's {summary, artifact}."""
    import torch

    from ftlab.runner.execute import RunStopped

    if spec.resources.strategy != "ddp" and not torch.cuda.is_available():
        raise StageLaunchError(
            f"resources.strategy {spec.resources.strategy} needs CUDA: on CPU processes "
            "transformers/accelerate train plain data-parallel (MULTI_CPU) and would ignore "
            "it; use strategy: ddp here, or run on a GPU machine"
        )
    launch_dir = work / "launch"
    launch_dir.mkdir(parents=True, exist_ok=True)
    for old in [*launch_dir.glob("rank*.err"), launch_dir / "result.json"]:
        old.unlink(missing_ok=True)
    (launch_dir / "stopped.json").unlink(missing_ok=True)
    write_json(launch_dir / "callbacks.json", portable_callbacks(callbacks or [], stage))
    cmd = command(spec, run_path, stage, resume_from)
    write_json(
        launch_dir / "launch.json",
        {
            "command": cmd,
            "world_size": spec.resources.world_size,
            "strategy": spec.resources.strategy,
        },
    )
    res = spec.resources
    print(
        f"stage {stage}: launching {res.processes} process(es) × {res.nodes} node(s), "
        f"{res.strategy} (torchrun; command in {launch_dir / 'launch.json'})"
    )
    threads = max(1, (os.cpu_count() or 1) // max(1, res.processes))
    env = os.environ | {WORKER_ENV: "1", "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, env=env, check=False)
    stopped = read_json(launch_dir / "stopped.json")
    if stopped:
        stop = RunStopped(stopped["message"])
        stop.state = stopped["state"]
        raise stop
    result = read_json(launch_dir / "result.json")
    if done.returncode != 0 or result is None:
        raise StageLaunchError(_failure(launch_dir, done.returncode))
    return result  # type: ignore[no-any-return]


def _failure(launch_dir: Path, code: int) -> str:
    errors = sorted(launch_dir.glob("rank*.err"))
    if not errors:
        return (
            f"the torchrun job exited with code {code} and no rank reported an error "
            "(a rank was killed, e.g. out of memory or SIGKILL); the others were stopped. "
            "Continue with `ftlab run --resume RUN`"
        )
    first = errors[0]
    lines = [ln for ln in first.read_text().strip().splitlines() if ln.strip()]
    return (
        f"{first.stem.replace('rank', 'rank ')} failed: {lines[-1] if lines else '?'} "
        f"(traceback: {first}); the other ranks were stopped"
    )
