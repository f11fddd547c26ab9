"""What identifies a stage's inputs (the stage cache's key) and a model's weights (the
eval cache's): content hashes of the model, data, method settings, upstream stages, seed,
resources and, where asked for, snapshots and selection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ftlab.runner import data as data_mod
from ftlab.runner import snapshots
from ftlab.runner.methods import METHODS
from ftlab.runner.spec.schema import Spec, StageSpec

CACHE_VERSION = 1  # bump to invalidate every cached stage (e.g. a training-loop fix)


def model_identity(spec: Spec, identity: str) -> str:
    """The base model's identity with the model settings that change what it computes
    (chat template text, attention kernel, weight dtype); defaults add nothing, so runs
    made before these settings existed keep their hashes."""
    from ftlab.runner import templates

    m = spec.model
    settings: dict[str, str] = {}
    if m.chat_template:
        settings["chat_template"] = templates.named(m.chat_template).sha256
    if m.attn_implementation != "auto":
        settings["attn_implementation"] = m.attn_implementation
    if m.dtype != "auto":
        settings["dtype"] = m.dtype
    if not settings:
        return identity
    blob = json.dumps(settings, sort_keys=True).encode()
    return f"{identity}+{hashlib.sha256(blob).hexdigest()[:12]}"


def stage_hashes(
    spec: Spec, *, spec_dir: Path, model: str, datasets: dict[str, data_mod.Dataset]
) -> dict[str, str]:
    """Content hash of every stage's inputs, upstream hashes included. A stage with
    `select:` also gets `<name>#train`: the hash of its training alone (without the
    choice), under which the stage cache keeps it before selection — changing only
    `select:` chooses again among the same snapshots instead of training again."""
    hashes: dict[str, str] = {}
    for stage in spec.needed_stages():
        payload = {
            "cache_version": CACHE_VERSION,
            "model": model_identity(spec, model),
            "seed": spec.seed,
            **({"train_seed": s} if (s := spec.training_seed(stage.name)) != spec.seed else {}),
            "data": datasets[stage.data].content_hash,
            "stage": _stage_inputs(stage),
            "upstream": hashes[stage.from_] if stage.from_ else "",
            "depends": {d: hashes[d] for d in stage.depends_on() if d != stage.from_},
            **snapshots.hash_inputs(spec, stage, datasets),
        }
        res = spec.resources
        if res.world_size > 1 or res.strategy != "ddp":  # bigger batch, other numerics
            payload["resources"] = {
                "world_size": res.world_size,
                "strategy": res.strategy,
                "options": getattr(res, res.strategy).model_dump() if res.strategy != "ddp" else {},
            }
        choice = payload.pop("select", None)
        blob = json.dumps(payload, sort_keys=True).encode()
        hashes[stage.name] = hashlib.sha256(blob).hexdigest()[:20]
        if choice is not None:
            hashes[f"{stage.name}#train"] = hashes[stage.name]
            both = json.dumps([hashes[stage.name], choice], sort_keys=True).encode()
            hashes[stage.name] = hashlib.sha256(both).hexdigest()[:20]
    return hashes


def _stage_inputs(stage: StageSpec) -> dict[str, Any]:
    """What the stage's method reads, plus its code when it is a user's plugin."""
    from ftlab.runner import plugins

    method = METHODS.get(stage.method)
    inputs = method.hash_inputs(stage)
    if code := plugins.code_hash(method):
        inputs["plugin_code"] = code
    return inputs
