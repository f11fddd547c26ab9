"""The search space on Optuna's side: distributions and sampling. Parsing and checking
the `search:` block is the spec's business (`ftlab.runner.spec.space`)."""

from __future__ import annotations

from typing import Any

from ftlab.runner.spec.schema import Spec
from ftlab.runner.spec.space import Param, active, parse, trial_raw

__all__ = ["Param", "distributions", "parse", "suggest", "trial_raw"]


def distributions(params: list[Param]) -> dict[str, Any]:
    """Optuna distributions (for the grid sampler's search space and for docs)."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "categorical":
            out[p.path] = d.CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            out[p.path] = d.IntDistribution(p.low, p.high, log=p.log, step=p.step or 1)
        elif p.kind == "float":
            out[p.path] = d.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def suggest(trial: Any, params: list[Param], spec: Spec) -> dict[str, Any]:
    """Sample one trial's values (conditional parameters only when they apply)."""
    values: dict[str, Any] = {}
    for p in params:
        if not active(p, values, spec):
            continue
        if p.kind == "categorical":
            values[p.path] = trial.suggest_categorical(p.path, list(p.choices))
        elif p.kind == "int":
            values[p.path] = trial.suggest_int(p.path, p.low, p.high, log=p.log, step=p.step or 1)
        elif p.kind == "float":
            values[p.path] = trial.suggest_float(p.path, p.low, p.high, log=p.log, step=p.step)
        else:
            values[p.path] = p.value
    return values
