"""`lm_eval`: lm-evaluation-harness tasks, in-process on the already-loaded model.

The model (base + adapter, as trained) is wrapped in lm-eval's HFLM without a reload or
a subprocess. Tasks are any name lm-eval knows, plus task YAMLs in `task_dirs` (default:
`tasks/` next to the spec; `experiments/tasks/` ships `support_intent_mc` and
`support_intent_gen`). Relative `dataset_kwargs.data_files` in those YAMLs resolve against
the YAML's own folder (the shipped YAMLs also load them through `local_files.py`, so the
`lm_eval` CLI finds them from any directory). Every per-sample row is kept, and each metric
gets a 95% interval computed from those rows (Wilson for 0/1 metrics, bootstrap otherwise).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ftlab.evals.base import EVALS, EvalError, EvalInput, EvalKind, EvalOutput, Metric, item_id
from ftlab.reports.stats import bootstrap_mean, wilson


class HarnessParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(min_length=1)
    """lm-eval task (or group) names: local YAMLs in task_dirs, or lm-eval's own."""
    task_dirs: list[str] = ["tasks"]
    """Folders of task YAMLs, relative to the spec file (missing folders are skipped)."""
    num_fewshot: int | None = Field(None, ge=0)
    """Few-shot examples per prompt (None = the task's default)."""
    batch_size: int | str = 8
    """Batch size, or `auto` (lm-eval finds the largest that fits)."""
    apply_chat_template: bool = False
    """Format prompts with the model's chat template (for chat-tuned models)."""
    system_instruction: str | None = None
    """A system message for every prompt (lm-eval's --system_instruction); use the one the
    model was trained with."""
    gen_kwargs: dict[str, Any] = {}
    """Generation overrides for generate_until tasks, e.g. {temperature: 0, max_gen_toks: 32}."""


OFFLINE_HINT = (
    "this machine cannot download it (no Hugging Face hub access). Offline alternative: "
    "a task YAML under the spec's tasks/ folder with `dataset_path: json` and "
    "`dataset_kwargs: {data_files: {test: <local .jsonl>}}` — see "
    "experiments/tasks/support_intent_mc.yaml (its `custom_dataset: !function "
    "local_files.load_json` lets the `lm_eval` CLI read them too)"
)


@EVALS.register("lm_eval")
class HarnessEval(EvalKind):
    data_formats: tuple[str, ...] = ()
    params_model: type[BaseModel] = HarnessParams
    headline: str = "acc"
    higher_is_better: bool = True

    def run(self, inp: EvalInput) -> EvalOutput:
        p: HarnessParams = inp.params
        with tempfile.TemporaryDirectory(prefix="ftlab-tasks-") as tmp:
            local = _stage_task_dirs([inp.base_dir / d for d in p.task_dirs], Path(tmp))
            results = _evaluate(inp, p, include=Path(tmp), local=local)
        metrics: dict[str, Metric] = {}
        samples: list[dict[str, Any]] = []
        for task in results["samples"]:  # groups expand to their subtasks
            task_samples = results["samples"][task]
            names = _metric_names(results["results"].get(task, {}))
            for name, key in names.items():
                values = [float(s[name.split(".", 1)[1]]) for s in task_samples]
                metric = _interval(values, inp.seed, key)
                reported = float(results["results"][task][key])
                if abs(metric.value - reported) > 1e-6:  # rows and aggregate must agree
                    raise EvalError(
                        f"lm-eval {task} {key}: aggregate {reported} but per-sample mean "
                        f"{metric.value}; the task's aggregation is not a mean"
                    )
                metrics[f"{task}.{name.split('.', 1)[1]}"] = metric
            for s in task_samples:
                samples.append(_sample(task, s))
        if not metrics:
            raise EvalError(f"lm-eval returned no metrics for {', '.join(p.tasks)}")
        return EvalOutput(metrics=metrics, samples=samples, headline=next(iter(metrics)))

    def fingerprint(self, params: HarnessParams, base_dir: Path) -> str:
        """Content of the local task YAMLs and their data files (part of the cache key)."""
        import hashlib

        h = hashlib.sha256()
        for folder in (base_dir / d for d in params.task_dirs):
            for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
                if f.is_file() and "__pycache__" not in f.parts:  # lm-eval imports local_files
                    h.update(f.name.encode() + f.read_bytes())
            data = folder.parent / "data"
            for f in sorted(data.glob("*.jsonl")) if data.is_dir() else []:
                h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]


LM_EVAL = HarnessEval()


def _stage_task_dirs(dirs: list[Path], out: Path) -> list[str]:
    """Copy task folders into `out`, making relative data_files absolute (lm-eval would
    resolve them against the working directory). Returns the local task names."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    names = []
    for i, folder in enumerate(d for d in dirs if d.is_dir()):
        target = out / f"dir{i}"
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
        for f in target.rglob("*.yaml"):
            doc = yaml.load(f.read_text())
            if not isinstance(doc, dict):
                continue
            files = (doc.get("dataset_kwargs") or {}).get("data_files")
            src_dir = folder / f.parent.relative_to(target)
            if isinstance(files, dict):
                for split, value in files.items():
                    if isinstance(value, str) and not Path(value).is_absolute():
                        files[split] = str((src_dir / value).resolve())
                with open(f, "w") as handle:
                    yaml.dump(doc, handle)
            if isinstance(doc.get("task"), str):
                names.append(doc["task"])
    return names


def _evaluate(inp: EvalInput, p: HarnessParams, *, include: Path, local: list[str]) -> Any:
    import logging

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    _quiet_git_hash()
    need_builtin = any(t not in local for t in p.tasks)
    manager = TaskManager(include_path=str(include), include_defaults=need_builtin)
    unknown = [t for t in p.tasks if t not in manager.all_tasks]
    if unknown:
        raise EvalError(
            f"lm-eval knows no task {', '.join(unknown)}. Local tasks: "
            f"{', '.join(local) or 'none'} (task YAMLs in {', '.join(p.task_dirs)} next to "
            "the spec); `lm-eval ls tasks` lists lm-eval's own"
        )
    lm = HFLM(pretrained=inp.model, tokenizer=inp.tokenizer, batch_size=p.batch_size)
    bars = io.StringIO()  # lm-eval's own tqdm bars ("Running loglikelihood requests"):
    try:  # ftlab's display names the eval instead; kept only to show with an error
        with contextlib.redirect_stderr(bars):
            return simple_evaluate(
                model=lm,
                tasks=p.tasks,
                task_manager=manager,
                num_fewshot=p.num_fewshot,
                limit=inp.limit,
                log_samples=True,
                apply_chat_template=p.apply_chat_template,
                system_instruction=p.system_instruction,
                gen_kwargs=p.gen_kwargs or None,
                bootstrap_iters=0,  # ftlab computes intervals from the per-sample rows
                random_seed=inp.seed,
                numpy_random_seed=inp.seed,
                torch_random_seed=inp.seed,
                fewshot_random_seed=inp.seed,
                verbosity="ERROR",
            )
    except Exception as exc:  # noqa: BLE001 - turned into an actionable message
        sys.stderr.write(bars.getvalue()[-2000:])
        text = f"{type(exc).__name__}: {exc}"
        offline = ("offline", "connect", "resolve", "hub", "Couldn't reach", "LocalEntryNotFound")
        if any(word.lower() in text.lower() for word in offline):
            raise EvalError(
                f"lm-eval task(s) {', '.join(p.tasks)} need a dataset download; "
                f"{OFFLINE_HINT} ({text[:200]})"
            ) from exc
        raise


def _quiet_git_hash() -> None:
    """lm-eval records `git describe` of the working directory with git's stderr open:
    outside a checkout the user's run printed "fatal: not a git repository". Same
    lookup, stderr silenced (the hash is unused: ftlab records its own in env.json)."""
    import subprocess

    import lm_eval.evaluator

    def git_hash() -> str | None:
        done = subprocess.run(
            ["git", "describe", "--always"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() or None

    lm_eval.evaluator.get_git_commit_hash = git_hash  # type: ignore[assignment]


def _metric_names(task_results: dict[str, Any]) -> dict[str, str]:
    """{"<filter>.<metric>": "<metric>,<filter>"} for the task's scalar metrics."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or "_stderr" in key or not isinstance(value, int | float):
            continue
        metric, filt = key.split(",", 1)
        out[f"{filt}.{metric}"] = key
    return out


def _interval(values: list[float], seed: int, key: str) -> Metric:
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if all(v in (0.0, 1.0) for v in values):
        return Metric(mean, *wilson(int(sum(values)), n), n=n)
    return Metric(mean, *bootstrap_mean(values, seed=seed), n=n)


def _sample(task: str, s: dict[str, Any]) -> dict[str, Any]:
    args = s.get("arguments") or [[""]]
    first = args[0] if isinstance(args, list | tuple) else [""]
    prompt = first[0] if isinstance(first, list | tuple) and first else str(first)
    resps = s.get("filtered_resps")
    if resps and isinstance(resps[0], list | tuple):  # multiple choice: (loglik, greedy)
        logliks = [float(r[0]) for r in resps]
        response: Any = max(range(len(logliks)), key=logliks.__getitem__)
        extra = {"choice_logliks": logliks}
    else:
        response = resps[0] if resps else ""
        extra = {}
    metrics = s.get("metrics") or []
    return {
        "item": item_id({"task": task, "doc": s.get("doc")}),
        "task": task,
        "doc_id": s.get("doc_id"),
        "prompt": prompt,
        "gold": str(s.get("target")),
        "response": response,
        **extra,
        # keyed like the aggregate metrics (`<task>.<metric>`), so a comparison pairs them
        "scores": {
            f"{task}.{m}": float(s[m]) for m in metrics if isinstance(s.get(m), int | float)
        },
    }
