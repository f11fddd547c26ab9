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
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftlab.evals import EVALS
from ftlab.evals.base import EvalInput
from ftlab.runner import plugins, progress
from ftlab.runner.cache import Cache
from ftlab.runner.rundir import RunDir, read_json, write_json, write_text

if TYPE_CHECKING:
    from ftlab.runner.data import Dataset
    from ftlab.runner.methods.base import Artifact
    from ftlab.runner.models import ModelRef
    from ftlab.runner.spec.schema import EvalSpec, Spec

EVAL_CACHE_VERSION = 3  # bump when an eval kind's scoring or records change
GENERATION_CACHE_VERSION = 1  # bump when how replies are generated changes


def targets(spec: Spec, ev: EvalSpec) -> list[str]:
    """The models an eval runs on, as `base` or stage names, in a fixed order."""
    policy = [s.name for s in spec.needed_stages() if s.name in spec.policy_stages()]
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


@dataclass
class _Job:
    """What every eval of one run shares."""

    run: RunDir
    spec: Spec
    datasets: dict[str, Dataset]
    identity: dict[str, str]  # model (base or stage) → what identifies its weights
    spec_dir: Path
    cache: Path
    replies: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (model, eval)
    load_stage: Callable[[str], tuple[Any, Any, str]] | None = None  # a trained judge


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
    only_targets: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate; returns {eval name: summary}. `only` limits to some eval names,
    `only_targets` to some models (a stage's snapshots, for `select:`)."""
    evals = [ev for ev in spec.evals if only is None or ev.key in only]
    if not evals:
        return {}
    on = {ev.key: _with_snapshots(spec, ev, artifacts) for ev in evals}
    if only_targets is not None:
        on = {k: [t for t in v if t in only_targets] for k, v in on.items()}
    from ftlab.runner.execute import model_identity

    identity = {t: hashes[t] for t in hashes} | {"base": model_identity(spec, ref.identity)}
    job = _Job(run, spec, datasets, identity, spec_dir, Path(spec.output.dir) / "cache")

    def load_stage(name: str) -> tuple[Any, Any, str]:
        chat_template = spec.model.chat_template
        model, tokenizer = load_target(
            name, ref=ref, artifacts=artifacts, chat_template=chat_template
        )
        return model, tokenizer, identity[name]

    job.load_stage = load_stage
    summaries = {ev.key: _summary(spec, ev) for ev in evals}
    samples: dict[str, list[dict[str, Any]]] = {ev.key: [] for ev in evals}
    against = {ev.key: _against(ev) for ev in evals}
    for target in _order(on, against):
        model = _Lazy(target, ref, artifacts, spec.model.chat_template)
        for ev in evals:
            if EVALS.get(ev.kind).needs_responses and target in (*on[ev.key], against[ev.key]):
                run.set_status(stage=f"eval {ev.key} ({target}): generating")
                progress.at(stage=f"eval {ev.key} ({target})")
                job.replies[(target, ev.key)] = _replies(
                    ev, model, eval_rows(ev, datasets), identity[target], spec
                )
        for ev in evals:
            if target not in on[ev.key] or target == against[ev.key]:
                continue  # a model is not judged against itself
            run.set_status(stage=f"eval {ev.key} ({target})")
            progress.at(stage=f"eval {ev.key} ({target})")
            progress.note(progress.prefix())
            started = time.time()
            hit, cached = _evaluate(job, ev, target, model, against[ev.key])
            summary = summaries[ev.key]
            summary["headline"] = hit.get("headline") or summary["headline"]
            summary["notes"] = hit.get("notes", [])
            summary["against"] = against[ev.key] or ""
            summary["targets"][target] = {
                "metrics": hit["metrics"],
                "model": identity[target],
                "cached_from": cached,
                "wall_time_s": time.time() - started,
            }
            samples[ev.key] += [{**s, "target": target} for s in hit["samples"]]
            _write(run, ev.key, summary, samples[ev.key])
        model.release()
    return summaries


def _summary(spec: Spec, ev: EvalSpec) -> dict[str, Any]:
    kind = EVALS.get(ev.kind)
    return {
        "eval": ev.key,
        "kind": ev.kind,
        "data": ev.data,
        "split": ev.split,
        "limit": ev.limit,
        "params": ev.params,
        "headline": kind.headline,
        "higher_is_better": kind.higher_is_better,
        "item_scores": dict(kind.item_scores),
        "last": spec.stages[-1].name,
        "targets": {},
    }


def _with_snapshots(spec: Spec, ev: EvalSpec, artifacts: dict[str, Artifact]) -> list[str]:
    """The eval's models; with `every:`, each stage's snapshots (`<stage>@<step>`) first."""
    from ftlab.runner.snapshots import snapshot_targets

    out: list[str] = []
    for t in targets(spec, ev):
        out += snapshot_targets(t, artifacts, ev.every) if ev.every else []
        out.append(t)
    return out


def _order(on: dict[str, list[str]], against: dict[str, str | None]) -> list[str]:
    """Models others are compared with go first: their replies are needed."""
    order: list[str] = []
    for key in on:
        if against[key] and against[key] not in order:
            order.append(str(against[key]))
    for key in on:
        order += [t for t in on[key] if t not in order]
    return order


def _evaluate(
    job: _Job, ev: EvalSpec, target: str, model: _Lazy, against: str | None
) -> tuple[dict[str, Any], str]:
    """One eval of one model: (its record, the run it was cached from or '')."""
    kind = EVALS.get(ev.kind)
    params = kind.params_model.model_validate(ev.params)
    extra = {role: job.datasets[name] for role, name in kind.datasets(params).items()}
    data_hash = job.datasets[ev.data].content_hash if ev.data else ""
    data_hash += kind.fingerprint(params, job.spec_dir) + plugins.code_hash(kind)
    data_hash += "".join(f"{role}:{d.content_hash}" for role, d in sorted(extra.items()))
    if against:
        data_hash += job.identity[against]
    data_hash += "".join(job.identity[name] for name in kind.stages(params))  # a judge
    cache = Cache.of(job.spec, "evals", EVAL_CACHE_VERSION)
    key = cache.key(
        job.identity[target],
        data_hash,
        job.spec.seed,
        ev.model_dump(mode="json", exclude={"name", "on"}),
    )
    hit = cache.get(key)
    if hit is not None:
        cached = str(hit.get("run_id", ""))
        if cached != job.run.run_id:  # this run's own (a snapshot scored for select:)
            print(
                f"eval {ev.key} on {target}: reusing the result of run {cached} "
                "(same model, data and settings)"
            )
        return hit, cached
    inp = EvalInput(
        model=None,
        tokenizer=None,
        rows=eval_rows(ev, job.datasets),
        params=params,
        seed=job.spec.seed,
        target=target,
        base_dir=job.spec_dir,
        cache_dir=job.cache,
        limit=ev.limit,
        responses=job.replies.get((target, ev.key)),
        other_responses=job.replies.get((str(against), ev.key)),
        datasets={role: d.val for role, d in extra.items()},
        reuse=job.spec.output.reuse,
        resolve_model=_resolve_model,
        load_stage=job.load_stage,
        train_rows=[row for s in job.spec.needed_stages() for row in job.datasets[s.data].train],
    )
    if kind.needs_model and not kind.needs_responses:
        inp.model, inp.tokenizer = model.get()
    out = kind.run(inp)
    hit = {
        "metrics": {name: m.as_dict() for name, m in out.metrics.items()},
        "samples": out.samples,
        "headline": out.headline,
        "notes": out.notes,
        "run_id": job.run.run_id,
    }
    cache.put(key, hit)
    return hit, ""


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
    return kind.against(kind.params_model.model_validate(ev.params))


def _resolve_model(name: str) -> str:
    from ftlab.runner.models import resolve

    return resolve(name).path


def _replies(
    ev: EvalSpec, model: _Lazy, rows: list[dict[str, Any]], identity: str, spec: Spec
) -> list[str]:
    """The model's replies to the eval's prompts, from the generation cache if known."""
    from ftlab.evals.generate import GenerationParams, generate

    kind = EVALS.get(ev.kind)
    given = getattr(kind.params_model.model_validate(ev.params), "generation", None)
    gen = GenerationParams.model_validate(given or {})
    cache = Cache.of(spec, "generations", GENERATION_CACHE_VERSION)
    key = cache.key(identity, rows, gen.model_dump())
    known = cache.get(key)
    if known is not None:
        return list(known)
    model_obj, tokenizer = model.get()
    out = generate(model_obj, tokenizer, rows, gen, desc=f"generating ({model.target})")
    cache.put(key, out)
    return out


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
