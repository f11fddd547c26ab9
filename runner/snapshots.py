"""Evaluation during training and `select:` — a stage's best checkpoint as its artifact.

A stage that an eval with `every: N` runs on saves its model (adapter or full weights, in
the artifact format) at steps N, 2N, … into `stages/<name>/steps/<step>/`; its artifact is
the last step. Each snapshot is evaluated as a model named `<stage>@<step>` by the ordinary
eval machinery, so every eval kind works on it, results are cached like any model's, and
per-item rows carry the step in their target (`ftlab report` draws metric vs step).

With `select: {metric: <eval>.<metric>}` the stage's select eval runs on its snapshots as
soon as the stage has trained, and the best snapshot becomes the stage's artifact before
any later stage starts (the record keeps which step, by which value, and every step's
value). Snapshot steps are part of the stage's hash; `select:` is hashed apart
(runner/stagehash.py): a change of the choice alone reuses the training and chooses
again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftlab.runner.data import Dataset
    from ftlab.runner.methods.base import Artifact
    from ftlab.runner.models import ModelRef
    from ftlab.runner.rundir import RunDir
    from ftlab.runner.spec.schema import EvalSpec, Spec, StageSpec


def every(spec: Spec, stage: StageSpec) -> tuple[int, ...]:
    """The `every:` intervals of the evals that run on this stage."""
    from ftlab.runner.evaluate import targets

    return tuple(
        sorted({ev.every for ev in spec.evals if ev.every and stage.name in targets(spec, ev)})
    )


def select_eval(spec: Spec, stage: StageSpec) -> EvalSpec | None:
    """The eval `select.metric` names (`<eval>.<metric>`; both may hold dots)."""
    metric = stage.select.metric if stage.select else ""
    return next((ev for ev in spec.evals if metric.startswith(f"{ev.key}.")), None)


def hash_inputs(spec: Spec, stage: StageSpec, datasets: dict[str, Dataset]) -> dict[str, Any]:
    """What snapshots and selection add to the stage's hash ({} for neither)."""
    out: dict[str, Any] = {}
    if steps := every(spec, stage):
        out["snapshots"] = list(steps)
    ev = select_eval(spec, stage)
    if stage.select is not None and ev is not None:
        data = datasets[ev.data].content_hash if ev.data in datasets else ""
        out["select"] = {**stage.select.model_dump(), "eval": ev.model_dump(), "data": data}
    return out


def attach_snapshots(trainer: Any, ctx: Any, save: Any) -> dict[str, str]:
    """{step: folder} of the stage's snapshots, filled as the trainer saves them (`save`
    writes an artifact folder); a resumed stage starts with those it saved before."""
    from ftlab.runner.methods.callbacks import Snapshots

    steps = ctx.work_dir / "steps"
    found = {p.parent.name: str(p.parent.resolve()) for p in steps.glob("*/ftlab_artifact.*")}

    def snapshot(step: int) -> None:
        found[str(step)] = str(save(steps / str(step)).path.resolve())

    if ctx.snapshot_every:
        trainer.add_callback(Snapshots(ctx.snapshot_every, snapshot))
    return found


def register(
    stage: StageSpec,
    record: dict[str, Any],
    artifacts: dict[str, Artifact],
    hashes: dict[str, str],
) -> None:
    """Add a trained stage's snapshots as models `<name>@<step>`: their artifacts, and an
    identity each. Without `select:` the last step's is the stage's own (the same weights:
    its evals are computed once); with it the stage's artifact may be another step."""
    from ftlab.runner.methods.base import Artifact

    summary = record.get("summary") or {}
    art = record["artifact"]
    snaps = summary.get("snapshots") or {}
    if len(snaps) == 1 and record.get("reused_from") == "":
        print(every_note(stage, summary))
    for step, path in snaps.items():
        name = f"{stage.name}@{step}"
        artifacts[name] = Artifact(path=Path(path), kind=art["kind"], base=art["base"])
        last = int(step) == summary.get("steps") and stage.select is None
        hashes[name] = hashes[stage.name] if last else f"{hashes[stage.name]}@{step}"


def every_note(stage: StageSpec, summary: dict[str, Any]) -> str:
    return (
        f"note: stage {stage.name} trained {summary.get('steps')} steps, no more than its "
        "evals' every:, so only its last step was evaluated; lower every: for a curve"
    )


def snapshot_targets(name: str, artifacts: dict[str, Any], every: int = 1) -> list[str]:
    """`<name>@<step>` models known for a stage at multiples of `every` and its last
    step, in step order."""
    steps = sorted(int(k.rsplit("@", 1)[1]) for k in artifacts if k.startswith(f"{name}@"))
    return [f"{name}@{s}" for s in steps if s % every == 0 or s == steps[-1]]


def select(
    run: RunDir,
    spec: Spec,
    stage: StageSpec,
    record: dict[str, Any],
    *,
    ref: ModelRef,
    datasets: dict[str, Dataset],
    hashes: dict[str, str],
    artifacts: dict[str, Artifact],
    spec_dir: Path,
) -> dict[str, Any]:
    """Evaluate the stage's snapshots with its select eval and make the best its artifact
    (the record, changed; the caller writes it)."""
    from ftlab.evals import EVALS
    from ftlab.runner import evaluate, progress

    summary = record.get("summary") or {}
    ev = select_eval(spec, stage)
    if stage.select is None or ev is None or "selected" in summary:
        return record  # nothing to select, or a reused stage that already did
    arts, ids = dict(artifacts), dict(hashes)
    register(stage, record, arts, ids)
    names = snapshot_targets(stage.name, arts, ev.every)
    results = evaluate.run_evals(
        run, spec, ref=ref, datasets=datasets, hashes=ids, artifacts=arts,
        spec_dir=spec_dir, only=[ev.key], only_targets=names,
    )  # fmt: skip
    metric = stage.select.metric[len(ev.key) + 1 :]
    values: dict[int, float] = {}
    for name in names:
        m = results[ev.key]["targets"][name]["metrics"].get(metric)
        if m is None:
            known = ", ".join(results[ev.key]["targets"][name]["metrics"])
            raise ValueError(
                f"stage {stage.name}: select.metric '{stage.select.metric}': eval {ev.key} has "
                f"no metric '{metric}' (it has: {known})"
            )
        values[int(name.rsplit("@", 1)[1])] = float(m["value"])
    direction = stage.select.direction
    natural = EVALS.get(ev.kind).higher_is_better
    higher = natural if direction == "auto" else direction == "maximize"
    if direction != "auto" and higher != natural and metric == EVALS.get(ev.kind).headline:
        print(
            f"warning: stage {stage.name}: select.direction {direction} on {stage.select.metric}, "
            f"which {ev.kind} counts as better when {'higher' if natural else 'lower'}; "
            "`direction: auto` follows the eval kind"
        )
    best = (max if higher else min)(values, key=lambda s: (values[s], -s))  # ties: earliest
    record["summary"]["selected"] = {
        "step": best,
        "metric": stage.select.metric,
        "direction": "maximize" if higher else "minimize",
        "value": values[best],
        "values": {str(s): v for s, v in sorted(values.items())},
    }
    record["artifact"]["path"] = str(Path(summary["snapshots"][str(best)]).resolve())
    how = "highest" if higher else "lowest"
    progress.note(
        f"stage {stage.name}: kept step {best} of {max(values)}, the {how} "
        f"{stage.select.metric} = {values[best]:.4f} "
        f"({', '.join(f'{s}: {v:.3f}' for s, v in sorted(values.items()))})"
    )
    return record
