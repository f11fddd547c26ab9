"""Export a stage's artifact as a standalone model folder, and merge LoRA adapters.

`export`: full weights are copied; an adapter is either merged into its base (a plain
transformers model folder) or written as adapter + base reference (peft loads it).
`merge_adapters`: several LoRA adapters on the same base combined with peft's
`add_weighted_adapter` (linear, cat, ties, dare_linear, dare_ties, magnitude_prune).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ftlab.runner.rundir import RunDir

COMBINATIONS = (
    "linear",
    "cat",
    "svd",
    "ties",
    "ties_svd",
    "dare_linear",
    "dare_ties",
    "magnitude_prune",
)


class ExportError(Exception):
    """An export that cannot be done; the message says what to change."""

    exit_code = 2


def stage_artifact(run: RunDir, stage: str | None) -> tuple[str, dict[str, Any]]:
    """(stage name, artifact record) of a finished stage; the last stage by default."""
    stages = run.stage_names()
    if not stages:
        raise ExportError(f"run {run.run_id} has no stages yet")
    name = stage or stages[-1]
    if name not in stages:
        raise ExportError(f"run {run.run_id} has no stage '{name}'; it has {', '.join(stages)}")
    record = run.stage(name)
    if record.get("state") != "completed" or "artifact" not in record:
        raise ExportError(
            f"stage '{name}' of run {run.run_id} has not finished "
            f"(state {record.get('state')}); `ftlab run --resume {run.run_id}`"
        )
    return name, record["artifact"]


def export(run: RunDir, out: Path, *, stage: str | None = None, merge: bool = False) -> Path:
    """Write the stage's model to `out` (which must not exist); returns `out`."""
    if out.exists():
        raise ExportError(f"{out} already exists; choose a new folder (nothing is overwritten)")
    _, artifact = stage_artifact(run, stage)
    src = Path(artifact["path"])
    meta = json.loads((src / "ftlab_artifact.json").read_text())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if meta["kind"] == "full":
        shutil.copytree(
            src, tmp, ignore=shutil.ignore_patterns("ftlab_artifact.json", "training_args.bin")
        )
    elif merge:
        _merged(src, meta, tmp)
    else:
        shutil.copytree(
            src, tmp, ignore=shutil.ignore_patterns("ftlab_artifact.json", "training_args.bin")
        )
        cfg_file = tmp / "adapter_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["base_model_name_or_path"] = meta["base"]  # where peft finds the base
        cfg_file.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, out)
    return out


def _merged(src: Path, meta: dict[str, Any], out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    if meta.get("task") == "reward_model":
        from ftlab.runner.methods.reward_model import load_reward_model

        model, tokenizer = load_reward_model(src)
    else:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(meta["base"], dtype=torch.float32)
        model = PeftModel.from_pretrained(base, src)
        tokenizer = AutoTokenizer.from_pretrained(src)
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def merge_adapters(
    adapters: list[tuple[Path, float]],
    out: Path,
    *,
    combination: str = "linear",
    density: float = 0.5,
    merge: bool = False,
) -> Path:
    """Combine LoRA adapters trained on the same base into one adapter (or merged weights)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if combination not in COMBINATIONS:
        raise ExportError(
            f"unknown combination '{combination}'; use one of {', '.join(COMBINATIONS)}"
        )
    if out.exists():
        raise ExportError(f"{out} already exists; choose a new folder (nothing is overwritten)")
    if len(adapters) < 2:
        raise ExportError("give at least two adapters to merge")
    metas = [json.loads((p / "ftlab_artifact.json").read_text()) for p, _ in adapters]
    bases = {m["base"] for m in metas}
    if len(bases) != 1 or any(m["kind"] != "adapter" for m in metas):
        raise ExportError(
            f"merging needs LoRA adapters on one and the same base model; got bases {sorted(bases)}"
        )
    base = AutoModelForCausalLM.from_pretrained(bases.pop(), dtype=torch.float32)
    names = [f"a{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(base, adapters[0][0], adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:], strict=True):
        model.load_adapter(path, adapter_name=name)
    kwargs: dict[str, Any] = {}
    if combination in ("ties", "ties_svd", "dare_linear", "dare_ties", "magnitude_prune"):
        kwargs["density"] = density
    model.add_weighted_adapter(
        names, [w for _, w in adapters], "merged", combination_type=combination, **kwargs
    )
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(adapters[0][0])
    if merge:
        model.merge_and_unload().save_pretrained(tmp)
    else:
        model.save_pretrained(str(tmp), selected_adapters=["merged"])
        nested = tmp / "merged"  # peft writes non-default adapters into a subfolder
        if nested.is_dir():
            for f in nested.iterdir():
                shutil.move(str(f), tmp / f.name)
            nested.rmdir()
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out
