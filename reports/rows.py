"""Index rows read from one run directory: the run, its stages, step metrics, and its
evals' results, per-item scores, items and judge verdicts (`store` writes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The per-item score behind each aggregate metric, for eval records written before the
# records carried it (`item_scores` in evals/<name>/summary.json, declared by each eval
# kind since schema 4): what those old records meant, frozen — not a list of kinds.
LEGACY_ITEM_SCORES = {
    "accuracy": "correct",
    "accuracy_per_token": "correct_per_token",
    "win_rate": "win",
    "adherence": "adheres",
    "contaminated_rate": "contaminated",
    "mean_overlap": "overlap",
    "position_consistency": "consistent",
}

Rows = list[dict[str, Any]]


def eval_rows(run_id: str, run_dir: Path) -> tuple[Rows, Rows, Rows, Rows]:
    """(eval_results, eval_samples, eval_items, judge_verdicts) rows from `evals/*/`."""
    from ftlab.runner.rundir import read_json, read_metrics

    results: Rows = []
    scores: Rows = []
    items: Rows = []
    verdicts: Rows = []
    for summary_file in sorted((run_dir / "evals").glob("*/summary.json")):
        summary = read_json(summary_file) or {}
        name = summary.get("eval", summary_file.parent.name)
        item_scores = summary.get("item_scores", LEGACY_ITEM_SCORES)
        for target, res in (summary.get("targets") or {}).items():
            for metric, m in (res.get("metrics") or {}).items():
                results.append(
                    {
                        "run_id": run_id,
                        "eval": name,
                        "kind": summary.get("kind"),
                        "target": target,
                        "is_last": target == summary.get("last"),
                        "metric": metric,
                        "value": m.get("value"),
                        "ci_low": m.get("low"),
                        "ci_high": m.get("high"),
                        "n": m.get("n"),
                        "headline": metric == summary.get("headline"),
                        "higher_is_better": summary.get("higher_is_better"),
                        "cached_from": res.get("cached_from") or "",
                        "score": item_scores.get(metric, metric),
                    }
                )
        for sample in read_metrics(summary_file.parent / "samples.jsonl"):
            key = {
                "run_id": run_id,
                "eval": name,
                "target": sample.get("target"),
                "item": sample.get("item"),
            }
            for metric, value in (sample.get("scores") or {}).items():
                if isinstance(value, int | float):
                    scores.append({**key, "metric": metric, "value": float(value)})
            for field, v in sample.items():  # a grader's verdicts (see EvalOutput.samples)
                if isinstance(v, dict) and (field == "verdict" or field.startswith("verdict_")):
                    position = field.removeprefix("verdict").removeprefix("_")
                    verdicts.append(
                        {
                            **key,
                            "position": position,
                            "verdict": str(v.get("verdict")),
                            "raw": str(v.get("raw", ""))[:2000],
                            "retried": bool(v.get("retried")),
                        }
                    )
            record = {k: v for k, v in sample.items() if k not in ("target", "item", "scores")}
            items.append({**key, "record_json": json.dumps(record, ensure_ascii=False)})
    return results, scores, items, verdicts


def run_rows(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    from ftlab.runner.rundir import RunDir

    run = RunDir(run_dir)
    info, status, notes = run.info(), run.status(), run.notes()
    spec_text = (run_dir / "spec.yaml").read_text() if (run_dir / "spec.yaml").exists() else ""
    spec = _yaml(spec_text)
    run_row = {
        "run_id": run.run_id,
        "experiment": info.get("experiment"),
        "variant": info.get("variant"),
        "state": status.get("state"),
        "created": info.get("created"),
        "finished": status.get("finished"),
        "wall_time_s": status.get("wall_time_s"),
        "model": (spec.get("model") or {}).get("name"),
        "seed": spec["train_seed"] if spec.get("train_seed") is not None else spec.get("seed"),
        "spec_file": info.get("spec_file"),
        "run_dir": str(run_dir.resolve()),
        "spec_json": json.dumps(spec, sort_keys=True),
        "error": status.get("error") or "",
        "study": info.get("study"),
        "trial": info.get("trial"),
        "tags": " ".join(notes["tags"]),
        "note": notes["note"],
        "archived": bool(notes["archived"]),
    }
    return run_row, _stage_rows(run, spec), _metric_rows(run)


def _stage_rows(run: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    stage_rows = []
    order = [s.get("name") for s in spec.get("stages", [])]
    for d in sorted((run.path / "stages").glob("*")):
        st = run.stage(d.name)
        s = st.get("summary", {})
        stage_rows.append(
            {
                "run_id": run.run_id,
                "stage": d.name,
                "position": order.index(d.name) if d.name in order else -1,
                "method": st.get("method"),
                "state": st.get("state"),
                "hash": st.get("hash"),
                "reused_from": st.get("reused_from") or "",
                "trainable_params": s.get("trainable_params"),
                "total_params": s.get("total_params"),
                "steps": s.get("steps"),
                "train_loss": s.get("train_loss"),
                "eval_loss": s.get("eval_loss"),
                "initial_eval_loss": s.get("initial_eval_loss"),
                "tokens_per_epoch": s.get("tokens_per_epoch"),
                "precision": s.get("precision"),
                "wall_time_s": s.get("wall_time_s"),
                "peak_memory_mb": s.get("peak_memory_mb"),
                "artifact": (st.get("artifact") or {}).get("path"),
                "summary_json": json.dumps(
                    {**s, "evaluator": bool(st.get("evaluator"))}, sort_keys=True, default=str
                ),
            }
        )
    return stage_rows


def _metric_rows(run: Any) -> list[dict[str, Any]]:
    metric_rows = []
    for rec in run.metrics():
        for name, value in rec.items():
            if name in ("stage", "step", "epoch", "time") or not isinstance(value, int | float):
                continue
            metric_rows.append(
                {
                    "run_id": run.run_id,
                    "stage": rec.get("stage"),
                    "step": rec.get("step"),
                    "epoch": rec.get("epoch"),
                    "name": name,
                    "value": float(value),
                    "time": rec.get("time"),
                }
            )
    return metric_rows


def _yaml(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe", pure=True).load(text) if text else {}
    except Exception:  # noqa: BLE001 - a damaged spec.yaml still indexes the rest
        return {}
    return data if isinstance(data, dict) else {}
