"""Running a run's `evals:` on its models, with an eval cache, into the run directory.

For every eval, the models named in `on:` are evaluated (each model loaded once for all
the evals that want it). Results land in `evals/<name>/summary.json` (metrics with
intervals, per model) and `evals/<name>/samples.jsonl` (one line per item and model).
An eval of the same model (stage hash) on the same data with the same settings is
answered from `<output>/cache/evals/<hash>.json` instead of being recomputed, so a
baseline shared by every variant (the SFT model) is evaluated once.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlab.runner.registry import Registry
from ftlab.runner.rundir import RunDir, read_json, write_json, write_text

if TYPE_CHECKING:
    from ftlab.evals.base import EvalKind
    from ftlab.runner.data import Dataset
    from ftlab.runner.methods.base import Artifact
    from ftlab.runner.models import ModelRef
    from ftlab.runner.spec.schema import EvalSpec, Spec

EVAL_CACHE_VERSION = 1  # bump when an eval kind's scoring changes

EVALS: Registry[EvalKind] = Registry("eval kind")
EVALS.register("preference", "ftlab.evals.preference:PREFERENCE")
EVALS.register("perplexity", "ftlab.evals.perplexity:PERPLEXITY")


def targets(spec: Spec, ev: EvalSpec) -> list[str]:
    """The models an eval runs on, as `base` or stage names, in a fixed order."""
    policy = [s.name for s in spec.needed_stages() if s.method != "reward_model"]
    out: list[str] = []
    for item in ev.on:
        names = (
            ["base", *policy]
            if item == "all"
            else [spec.stages[-1].name]
            if item == "last"
            else [item]
        )
        out += [n for n in names if n not in out]
    return out


def eval_rows(ev: EvalSpec, data: Dataset) -> list[dict[str, Any]]:
    rows = {"val": data.val, "train": data.train, "all": data.train + data.val}[ev.split]
    return rows[: ev.limit] if ev.limit else rows


def run_evals(
    run: RunDir,
    spec: Spec,
    *,
    ref: ModelRef,
    datasets: dict[str, Dataset],
    hashes: dict[str, str],
    artifacts: dict[str, Artifact],
    only: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate; returns {eval name: summary}. `only` limits to some eval names."""
    evals = [ev for ev in spec.evals if only is None or ev.key in only]
    if not evals:
        return {}
    identity = {t: hashes[t] for t in hashes} | {"base": ref.identity}
    summaries: dict[str, dict[str, Any]] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    for ev in evals:
        summaries[ev.key] = {
            "eval": ev.key,
            "kind": ev.kind,
            "data": ev.data,
            "split": ev.split,
            "limit": ev.limit,
            "params": ev.params,
            "headline": EVALS.get(ev.kind).headline,
            "higher_is_better": EVALS.get(ev.kind).higher_is_better,
            "last": spec.stages[-1].name,
            "targets": {},
        }
        samples[ev.key] = []
    order: list[str] = []
    for ev in evals:
        order += [t for t in targets(spec, ev) if t not in order]
    for target in order:
        wanted = [ev for ev in evals if target in targets(spec, ev)]
        loaded: tuple[Any, Any] | None = None
        for ev in wanted:
            run.set_status(stage=f"eval {ev.key} ({target})")
            rows = eval_rows(ev, datasets[ev.data])
            key = _cache_key(ev, identity[target], datasets[ev.data].content_hash, spec.seed)
            cache_file = Path(spec.output.dir) / "cache" / "evals" / f"{key}.json"
            hit = read_json(cache_file)
            started = time.time()
            if hit is None:
                if loaded is None:
                    loaded = load_target(target, ref=ref, artifacts=artifacts)
                hit = _evaluate(ev, loaded, rows, seed=spec.seed, target=target)
                hit["run_id"] = run.run_id
                write_json(cache_file, hit)
                cached = ""
            else:
                cached = hit.get("run_id", "")
                print(
                    f"eval {ev.key} on {target}: reusing the result of run {cached} "
                    "(same model, data and settings)"
                )
            summaries[ev.key]["targets"][target] = {
                "metrics": hit["metrics"],
                "model": identity[target],
                "cached_from": cached,
                "wall_time_s": time.time() - started,
            }
            samples[ev.key] += [{"target": target, **s} for s in hit["samples"]]
            _write(run, ev.key, summaries[ev.key], samples[ev.key])
        loaded = None
        gc.collect()
    return summaries


def _cache_key(ev: EvalSpec, model_identity: str, data_hash: str, seed: int) -> str:
    payload = {
        "version": EVAL_CACHE_VERSION,
        "model": model_identity,
        "data": data_hash,
        "seed": seed,
        "eval": ev.model_dump(mode="json", exclude={"name", "on"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _evaluate(
    ev: EvalSpec, loaded: tuple[Any, Any], rows: list[dict[str, Any]], *, seed: int, target: str
) -> dict[str, Any]:
    from ftlab.evals.base import EvalInput

    kind = EVALS.get(ev.kind)
    model, tokenizer = loaded
    out = kind.run(
        EvalInput(
            model=model,
            tokenizer=tokenizer,
            rows=rows,
            params=kind.params_model.model_validate(ev.params),
            seed=seed,
            target=target,
        )
    )
    return {
        "metrics": {name: m.as_dict() for name, m in out.metrics.items()},
        "samples": out.samples,
    }


def _write(run: RunDir, name: str, summary: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    folder = run.path / "evals" / name
    write_json(folder / "summary.json", summary)
    lines = (json.dumps(s, sort_keys=True, ensure_ascii=False, default=str) for s in samples)
    write_text(folder / "samples.jsonl", "".join(line + "\n" for line in lines))


def load_target(target: str, *, ref: ModelRef, artifacts: dict[str, Artifact]) -> tuple[Any, Any]:
    """(model, tokenizer) for `base` or a stage's artifact, in eval mode on the device."""
    import torch

    from ftlab.runner.artifacts import load_artifact
    from ftlab.runner.models import load_tokenizer

    cuda = torch.cuda.is_available()
    dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    if target == "base":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            ref.path, revision=ref.revision, dtype=getattr(torch, dtype)
        )
        tokenizer = load_tokenizer(ref)
    else:
        model, tokenizer = load_artifact(artifacts[target].path, dtype=dtype)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    if cuda and getattr(model, "hf_device_map", None) is None:
        model = model.to("cuda")  # type: ignore[arg-type]
    return model.eval(), tokenizer


def read_results(run_path: Path) -> dict[str, dict[str, Any]]:
    """{eval name: summary.json} of a run directory."""
    out = {}
    for f in sorted((run_path / "evals").glob("*/summary.json")):
        data = read_json(f)
        if data:
            out[f.parent.name] = data
    return out
