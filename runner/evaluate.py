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

from ftlab.evals.base import EvalInput
from ftlab.runner.registry import Registry
from ftlab.runner.rundir import RunDir, read_json, write_json, write_text

if TYPE_CHECKING:
    from ftlab.evals.base import EvalKind
    from ftlab.runner.data import Dataset
    from ftlab.runner.methods.base import Artifact
    from ftlab.runner.models import ModelRef
    from ftlab.runner.spec.schema import EvalSpec, Spec

EVAL_CACHE_VERSION = 2  # bump when an eval kind's scoring or records change

EVALS: Registry[EvalKind] = Registry("eval kind")
EVALS.register("preference", "ftlab.evals.preference:PREFERENCE")
EVALS.register("perplexity", "ftlab.evals.perplexity:PERPLEXITY")
EVALS.register("lm_eval", "ftlab.evals.harness:LM_EVAL")
EVALS.register("judge", "ftlab.evals.judge:JUDGE")
EVALS.register("format", "ftlab.evals.checks:FORMAT")
EVALS.register("contamination", "ftlab.evals.checks:CONTAMINATION")


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


def eval_rows(ev: EvalSpec, datasets: dict[str, Dataset]) -> list[dict[str, Any]]:
    if not ev.data:
        return []
    data = datasets[ev.data]
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
    spec_dir: Path,
    only: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate; returns {eval name: summary}. `only` limits to some eval names."""
    evals = [ev for ev in spec.evals if only is None or ev.key in only]
    if not evals:
        return {}
    from ftlab.runner.execute import model_identity

    identity = {t: hashes[t] for t in hashes} | {"base": model_identity(spec, ref.identity)}
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
    cache = Path(spec.output.dir) / "cache"
    against = {ev.key: _against(ev) for ev in evals}
    order: list[str] = []
    for ev in evals:  # models others are compared with go first: their replies are needed
        if against[ev.key] and against[ev.key] not in order:
            order.append(str(against[ev.key]))
    for ev in evals:
        order += [t for t in targets(spec, ev) if t not in order]
    replies: dict[tuple[str, str], list[str]] = {}  # (model, eval) → generated replies
    for target in order:
        model = _Lazy(target, ref, artifacts, spec.model.chat_template)
        for ev in evals:
            if _needs_replies(ev) and target in (*targets(spec, ev), against[ev.key]):
                replies[(target, ev.key)] = _replies(
                    ev, model, eval_rows(ev, datasets), identity[target], cache
                )
        for ev in evals:
            if target not in targets(spec, ev) or target == against[ev.key]:
                continue  # a model is not judged against itself
            run.set_status(stage=f"eval {ev.key} ({target})")
            rows = eval_rows(ev, datasets)
            kind = EVALS.get(ev.kind)
            params = kind.params_model.model_validate(ev.params)
            data_hash = datasets[ev.data].content_hash if ev.data else ""
            if hasattr(kind, "fingerprint"):  # files the kind reads itself (task YAMLs)
                data_hash += kind.fingerprint(params, spec_dir)
            if against[ev.key]:
                data_hash += identity[str(against[ev.key])]
            key = _cache_key(ev, identity[target], data_hash, spec.seed)
            cache_file = cache / "evals" / f"{key}.json"
            hit = read_json(cache_file)
            started = time.time()
            if hit is None:
                calibration = params_calibration(ev, datasets)
                inp = EvalInput(
                    model=None,
                    tokenizer=None,
                    rows=rows,
                    params=params,
                    seed=spec.seed,
                    target=target,
                    base_dir=spec_dir,
                    cache_dir=cache,
                    limit=ev.limit,
                    responses=replies.get((target, ev.key)),
                    other_responses=replies.get((str(against[ev.key]), ev.key)),
                    calibration_rows=calibration,
                    resolve_model=_resolve_model,
                    train_rows=[
                        row for stage in spec.needed_stages() for row in datasets[stage.data].train
                    ],
                )
                needs_model = getattr(kind, "needs_model", True)
                if needs_model and not getattr(kind, "needs_responses", False):
                    inp.model, inp.tokenizer = model.get()
                out = kind.run(inp)
                hit = {
                    "metrics": {name: m.as_dict() for name, m in out.metrics.items()},
                    "samples": out.samples,
                    "headline": out.headline,
                    "notes": out.notes,
                    "run_id": run.run_id,
                }
                write_json(cache_file, hit)
                cached = ""
            else:
                cached = hit.get("run_id", "")
                print(
                    f"eval {ev.key} on {target}: reusing the result of run {cached} "
                    "(same model, data and settings)"
                )
            summaries[ev.key]["headline"] = hit.get("headline") or summaries[ev.key]["headline"]
            summaries[ev.key]["notes"] = hit.get("notes", [])
            summaries[ev.key]["against"] = against[ev.key] or ""
            summaries[ev.key]["targets"][target] = {
                "metrics": hit["metrics"],
                "model": identity[target],
                "cached_from": cached,
                "wall_time_s": time.time() - started,
            }
            samples[ev.key] += [{**s, "target": target} for s in hit["samples"]]
            _write(run, ev.key, summaries[ev.key], samples[ev.key])
        model.release()
    return summaries


class _Lazy:
    """A target's model, loaded on first use (cached results need none), freed after."""

    def __init__(
        self, target: str, ref: ModelRef, artifacts: dict[str, Artifact], chat_template: str = ""
    ) -> None:
        self.target, self.ref, self.artifacts = target, ref, artifacts
        self.chat_template = chat_template
        self.loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self.loaded is None:
            self.loaded = load_target(
                self.target,
                ref=self.ref,
                artifacts=self.artifacts,
                chat_template=self.chat_template,
            )
        return self.loaded

    def release(self) -> None:
        self.loaded = None
        gc.collect()


def _against(ev: EvalSpec) -> str | None:
    kind = EVALS.get(ev.kind)
    if not hasattr(kind, "against"):
        return None
    result: str | None = kind.against(kind.params_model.model_validate(ev.params))
    return result


def _needs_replies(ev: EvalSpec) -> bool:
    return bool(getattr(EVALS.get(ev.kind), "needs_responses", False))


def params_calibration(ev: EvalSpec, datasets: dict[str, Dataset]) -> list[dict[str, Any]] | None:
    name = ev.params.get("calibration")
    return datasets[name].val if name else None


def _resolve_model(name: str) -> str:
    from ftlab.runner.models import resolve

    return resolve(name).path


def _replies(
    ev: EvalSpec, model: _Lazy, rows: list[dict[str, Any]], identity: str, cache: Path
) -> list[str]:
    """The model's replies to the eval's prompts, from the generation cache if known."""
    from ftlab.evals.generate import GenerationParams, generate

    gen = GenerationParams.model_validate(ev.params.get("generation") or {})
    blob = json.dumps([identity, rows, gen.model_dump()], sort_keys=True, default=str)
    path = cache / "generations" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"
    known = read_json(path)
    if known is not None:
        return list(known)
    model_obj, tokenizer = model.get()
    out = generate(model_obj, tokenizer, rows, gen, desc=f"generating ({model.target})")
    write_json(path, out)
    return out


def _cache_key(ev: EvalSpec, model_identity: str, data_hash: str, seed: int) -> str:
    payload = {
        "version": EVAL_CACHE_VERSION,
        "model": model_identity,
        "data": data_hash,
        "seed": seed,
        "eval": ev.model_dump(mode="json", exclude={"name", "on"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _write(run: RunDir, name: str, summary: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    folder = run.path / "evals" / name
    write_json(folder / "summary.json", summary)
    lines = (json.dumps(s, sort_keys=True, ensure_ascii=False, default=str) for s in samples)
    write_text(folder / "samples.jsonl", "".join(line + "\n" for line in lines))


def load_target(
    target: str, *, ref: ModelRef, artifacts: dict[str, Artifact], chat_template: str = ""
) -> tuple[Any, Any]:
    """(model, tokenizer) for `base` or a stage's artifact, in eval mode on the device;
    `chat_template` is the spec's (artifacts carry it already)."""
    import torch

    from ftlab.runner.artifacts import load_artifact
    from ftlab.runner.models import load_tokenizer, pad_token_for

    cuda = torch.cuda.is_available()
    dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    if target == "base":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            ref.path, revision=ref.revision, dtype=getattr(torch, dtype)
        )
        tokenizer = load_tokenizer(ref, chat_template=chat_template)
    else:
        model, tokenizer = load_artifact(artifacts[target].path, dtype=dtype)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = pad_token_for(tokenizer)
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
