"""Helpers for tests that train the tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftlab.runner import data as data_mod
from ftlab.runner import models
from ftlab.runner.methods.base import StageContext
from ftlab.runner.spec.schema import Spec

from .conftest import DATA

# Learning rates that move each method visibly in a few steps on the tiny model.
LR = {
    "full": 1e-3,
    "lora": 5e-3,
    "qlora": 5e-3,
    "dora": 5e-3,
    "ia3": 5e-2,
    "prompt_tuning": 5e-2,
    "prefix_tuning": 2e-2,
}


def tiny_spec(method: str, *, steps: int = 12, rows: int = 64, **train: Any) -> Spec:
    return Spec.model_validate(
        {
            "name": "t",
            "data": {
                "sft": {
                    "path": str(DATA / "support_sft.jsonl"),
                    "max_rows": rows,
                    "val_fraction": 0.125,
                }
            },
            "stages": [
                {
                    "name": "sft",
                    "method": method,
                    "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
                    "train": {
                        "learning_rate": LR[method],
                        "max_steps": steps,
                        "batch_size": 4,
                        "max_length": 128,
                        "logging_steps": 2,
                        "precision": "fp32",
                        **train,
                    },
                }
            ],
        }
    )


def stage_ctx(
    spec: Spec,
    stage: Any,
    data: str,
    work: Path,
    *,
    upstream: Any = None,
    log: Any = None,
    seed: int = 0,
    **kw: Any,
) -> StageContext:
    """A StageContext on the tiny model, fp32, with dataset `data` loaded and split. The
    spec's default output folder (`runs`, relative to the working directory: the
    checkout) moves under `work`, so no test writes caches into the repository."""
    if spec.output.dir == "runs":
        spec.output.dir = str(work / "runs")
    return StageContext(
        spec=spec,
        stage=stage,
        model=models.resolve("tiny"),
        upstream=upstream,
        data=data_mod.load(spec.data[data], base_dir=Path("."), seed=seed),
        work_dir=work,
        precision="fp32",
        log=log if log is not None else (lambda record: None),
        **kw,
    )


def context(spec: Spec, work: Path, **kw: Any) -> StageContext:
    log: list[dict[str, Any]] = []
    ctx = stage_ctx(spec, spec.stages[0], "sft", work, log=log.append, seed=spec.seed, **kw)
    ctx.records = log  # type: ignore[attr-defined]
    return ctx


class Snapshot(TrainerCallback):
    """Parameters at the start and end of training, and logits on a probe at the end."""

    quantized_names: set[str] = set()  # 4-bit weights, compared by what they compute

    def __init__(self, probe: Any) -> None:
        self.probe = probe
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}
        self.trainable: set[str] = set()
        self.logits: Any = None

    @staticmethod
    def _params(model: Any) -> dict[str, Any]:
        import torch

        modules = dict(model.named_modules())
        out = {}
        for n, p in model.named_parameters():
            if getattr(p, "quant_state", None) is not None:
                # bitsandbytes repacks 4-bit weights for its CPU kernels on first use, so
                # compare what the frozen layer computes, not its storage layout.
                Snapshot.quantized_names.add(n)
                layer = modules[n.rsplit(".", 1)[0]]
                x = torch.randn(2, layer.in_features, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    x = x.to(device=p.device, dtype=layer.compute_dtype or torch.float32)
                    out[n] = layer(x).float()
            else:
                out[n] = p.detach().clone()
        return out

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self.before = self._params(model)
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        import torch

        self.after = self._params(model)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=self.probe).logits.float().clone()
        model.train(was_training)


def run_spec(spec_file: Path, overrides: list[str] | None = None) -> tuple[Any, Any]:
    """(run directory, result) of the one run a spec file describes, run in-process."""
    from ftlab.runner import execute
    from ftlab.runner.spec.load import expand_runs

    ((variant, spec),) = expand_runs(spec_file, overrides or [])
    rd = execute.create_run(spec, variant=variant, spec_file=spec_file, overrides=overrides or [])
    return rd, execute.execute(rd, spec)
