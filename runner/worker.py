"""One process of a distributed stage (started by torchrun, see runner/launch.py).

    python -m ftlab.runner.worker RUN_DIR STAGE [--resume-from CHECKPOINT]

Rebuilds the stage from the run directory (spec, datasets, finished upstream stages) and
trains it; rank 0 alone logs step metrics, saves the artifact and writes
`stages/<stage>/launch/result.json`. Any rank that fails writes its traceback to
`launch/rank<N>.err` before exiting. Callbacks the launching process could send
(`launch/callbacks.json`: factory + arguments, e.g. a sweep's pruner) are rebuilt on
every rank; a stage stopped on purpose (`RunStopped`) leaves `launch/stopped.json`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import traceback
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("stage")
    ap.add_argument("--resume-from", type=Path)
    args = ap.parse_args(argv)
    os.environ["FTLAB_STAGE_WORKER"] = "1"
    rank = int(os.environ.get("RANK", "0"))
    launch_dir = args.run_dir / "stages" / args.stage / "launch"
    from ftlab.runner.execute import RunStopped
    from ftlab.runner.rundir import write_json

    try:
        _train(args.run_dir, args.stage, args.resume_from, rank, launch_dir)
    except RunStopped as stop:  # on purpose (every rank stops at the same step): exit 0
        if rank == 0:
            write_json(launch_dir / "stopped.json", {"state": stop.state, "message": str(stop)})
    except BaseException:
        launch_dir.mkdir(parents=True, exist_ok=True)
        (launch_dir / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def _train(run_dir: Path, name: str, resume_from: Path | None, rank: int, launch_dir: Path) -> None:
    from ftlab.runner import execute, lengths, models, snapshots
    from ftlab.runner.methods import METHODS
    from ftlab.runner.methods.base import StageContext
    from ftlab.runner.rundir import RunDir, read_json, write_json
    from ftlab.runner.spec.load import read_yaml, validate

    run = RunDir(run_dir)
    spec = validate(read_yaml(run.path / "spec.yaml"))
    spec.output.dir = str(run.path.parent)
    ref, datasets = execute.preflight(spec, spec_dir=Path(run.info().get("spec_dir", ".")))
    stage = next(s for s in spec.stages if s.name == name)
    artifacts = {
        s.name: execute._artifact_from(run.stage(s.name))
        for s in spec.stages
        if run.stage(s.name).get("state") == "completed" and run.stage(s.name).get("artifact")
    }

    def log(record: dict[str, object]) -> None:
        if rank == 0:
            run.log_metrics({"stage": name, **record})

    def rebuild(entry: dict[str, Any]) -> Any:
        module, _, attr = entry["factory"].partition(":")
        factory = getattr(importlib.import_module(module), attr)
        return factory(spec=spec, datasets=datasets, rank=rank, **entry["args"])

    portable = read_json(launch_dir / "callbacks.json") or []
    upstream = artifacts.get(stage.from_) if stage.from_ else None
    source = upstream.path if upstream else ref  # the rows as rank 0 of `ftlab run` saw them
    ctx = StageContext(
        spec=spec,
        stage=stage,
        model=ref,
        upstream=upstream,
        data=lengths.for_stage(spec, stage, datasets[stage.data], tokenizer_from=source),
        work_dir=run.stage_dir(name),
        precision=models.resolve_precision(stage.train.precision),
        artifacts=artifacts,
        resume_from=resume_from,
        log=log,
        extra_callbacks=[rebuild(entry) for entry in portable],
        snapshot_every=snapshots.every(spec, stage),
    )
    result = METHODS.get(stage.method).train(ctx)
    if rank == 0:
        write_json(
            launch_dir / "result.json",
            {
                "summary": {
                    **result.summary,
                    "world_size": spec.resources.world_size,
                    "strategy": spec.resources.strategy,
                },
                "artifact": {
                    "path": str(result.artifact.path.resolve()),
                    "kind": result.artifact.kind,
                    "base": result.artifact.base,
                },
            },
        )


if __name__ == "__main__":
    main()
