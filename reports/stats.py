"""Interval estimates for eval metrics (the comparison statistics grow here).

Everything is seeded and pure: the same samples give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a rate (stays inside [0, 1], sane at 0 and n); ties
    counted as half a success are allowed."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_mean(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def _fit_logistic(y: Any, x: Any, l2: float = 1e-6) -> tuple[float, float]:
    """(b0, b1) of P(y) = σ(b0 + b1·x) by Newton's method; y may be soft (ties = 0.5)."""
    import numpy as np

    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ beta)))
        grad = X.T @ (p - y) + l2 * beta
        hess = (X.T * (p * (1 - p))) @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def length_controlled_win_rate(outcomes: Sequence[float], length_feature: Sequence[float]) -> float:
    """Win rate at zero length difference, as AlpacaEval 2 controls for length: fit
    P(win) = σ(b0 + b1·x) on a length feature x (e.g. tanh of the standardised length
    difference, run − other) and report σ(b0). Outcomes are 1 win, 0.5 tie, 0 loss."""
    import numpy as np

    y = np.asarray(outcomes, dtype=float)
    x = np.asarray(length_feature, dtype=float)
    if y.size == 0:
        return math.nan
    if np.allclose(x, x[0]):  # no length variation: nothing to control for
        return float(y.mean())
    b0, _ = _fit_logistic(y, x)
    return float(1 / (1 + math.exp(-b0)))


def length_feature(run_lengths: Sequence[int], other_lengths: Sequence[int]) -> list[float]:
    """tanh of the length difference divided by its standard deviation."""
    import numpy as np

    d = np.asarray(run_lengths, dtype=float) - np.asarray(other_lengths, dtype=float)
    sd = float(d.std()) or 1.0
    return [float(v) for v in np.tanh(d / sd)]
