"""The statistics behind every number ftlab shows: intervals for one run's metrics and
tests for the difference between two runs on the same items.

- intervals: Wilson for rates, bootstrap (percentile or BCa) for everything else;
- paired differences: paired bootstrap of the mean difference, McNemar's exact test for
  accuracies (0/1 per item), the sign test for judge outcomes (1 / 0.5 / 0 per item);
  unpaired bootstrap only when the items differ (the caller says so);
- Holm's step-down correction when one run is compared with many;
- seeds: mean ± sd across runs that differ only by seed, and a two-level bootstrap
  (seeds, then items) when either side of a comparison has several.

Everything is seeded and pure: the same samples give the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
    return bootstrap_ci(values, resamples=resamples, seed=seed, level=level)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _norm_ppf(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(min(max(p, 1e-12), 1 - 1e-12))


def bootstrap_ci(
    values: Sequence[float],
    *,
    method: str = "percentile",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap interval of the mean: `percentile`, or `bca` (bias-corrected and
    accelerated, Efron 1987: the percentiles shifted by the bootstrap's median bias z0 and
    the jackknife acceleration a) — better coverage for skewed per-item scores."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.allclose(x, x[0]):
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    if method == "percentile":
        lo, hi = np.quantile(means, [alpha, 1 - alpha])
        return (float(lo), float(hi))
    if method != "bca":
        raise ValueError(f"bootstrap method {method!r}: expected percentile or bca")
    theta = float(x.mean())
    below = (np.sum(means < theta) + 0.5 * np.sum(means == theta)) / resamples
    z0 = _norm_ppf(float(below))
    jack = (x.sum() - x) / (x.size - 1)  # leave-one-out means
    d = jack.mean() - jack
    denom = 6 * float(np.sum(d**2)) ** 1.5
    a = float(np.sum(d**3)) / denom if denom else 0.0
    qs = []
    for z_alpha in (_norm_ppf(alpha), _norm_ppf(1 - alpha)):
        qs.append(_norm_cdf(z0 + (z0 + z_alpha) / (1 - a * (z0 + z_alpha))))
    lo, hi = np.quantile(means, qs)
    return (float(lo), float(hi))


@dataclass(frozen=True)
class Difference:
    """run − baseline on a metric: the difference, its 95% interval, a two-sided p-value,
    the test that gave it, and how many items it rests on."""

    delta: float
    low: float
    high: float
    p: float
    test: str  # "mcnemar", "sign", "paired bootstrap", "unpaired bootstrap"
    n: int
    paired: bool = True


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n at p = 1/2 (the doubled smaller
    tail, as scipy.stats.binomtest computes it for the symmetric case)."""
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """McNemar's exact test for paired 0/1 outcomes: (items only `a` got right, items
    only `b` got right, two-sided p)."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x >= 0.5 > y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y >= 0.5 > x)
    return only_a, only_b, binom_two_sided(only_a, only_a + only_b)


def sign_test(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """Sign test on paired scores (judge outcomes): (items where a is higher, items where
    b is higher, two-sided p); equal items are dropped."""
    up = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    down = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    return up, down, binom_two_sided(up, up + down)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Mean of a − b over paired items, its percentile interval, and the two-sided
    bootstrap p-value (twice the share of resampled means on the far side of 0)."""
    import numpy as np

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    if np.allclose(d, 0):
        return (0.0, 0.0, 0.0, 1.0)
    p = 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return (float(d.mean()), float(lo), float(hi), min(1.0, max(p, 1 / resamples)))


def unpaired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Mean(a) − mean(b) for different items: each side resampled on its own."""
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    diffs = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1) - y[
        rng.integers(0, y.size, size=(resamples, y.size))
    ].mean(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    p = 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    return (float(x.mean() - y.mean()), float(lo), float(hi), min(1.0, max(p, 1 / resamples)))


def _kind_of(values: Sequence[float]) -> str:
    vals = set(values)
    if vals <= {0.0, 1.0}:
        return "binary"
    if vals <= {0.0, 0.5, 1.0}:
        return "outcome"
    return "continuous"


def compare_paired(
    run: dict[str, float], baseline: dict[str, float], *, seed: int = 0, resamples: int = 2000
) -> Difference | None:
    """run − baseline on a metric's per-item scores ({item id: score}). Items both have →
    a paired test chosen by the scores' kind (0/1: McNemar; 1/0.5/0 judge outcomes: sign
    test; otherwise paired bootstrap), with a paired-bootstrap interval. No shared items →
    the unpaired bootstrap, marked `paired=False`. None when either side has no items."""
    if not run or not baseline:
        return None
    shared = sorted(set(run) & set(baseline))
    if not shared:
        delta, lo, hi, p = unpaired_bootstrap(
            list(run.values()), list(baseline.values()), seed=seed
        )
        return Difference(
            delta, lo, hi, p, "unpaired bootstrap", min(len(run), len(baseline)), False
        )
    a = [run[i] for i in shared]
    b = [baseline[i] for i in shared]
    delta, lo, hi, p = paired_bootstrap(a, b, seed=seed, resamples=resamples)
    kind = _kind_of(a + b)
    if kind == "binary":
        p, test = mcnemar(a, b)[2], "mcnemar"
    elif kind == "outcome":
        p, test = sign_test(a, b)[2], "sign"
    else:
        test = "paired bootstrap"
    return Difference(delta, lo, hi, p, test, len(shared))


def compare_paired_many(
    runs: Sequence[Sequence[float]],
    baseline: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Difference]:
    """`compare_paired` for many runs scored on the same items as the baseline (same
    order), in one pass: the bootstrap draws multinomial item counts once and takes every
    run's resampled mean difference with one matrix product, so 1,000 runs cost about
    what one does. Same tests and intervals as `compare_paired`."""
    import numpy as np

    b = np.asarray(baseline, dtype=float)
    if not len(runs) or b.size == 0:
        return []
    a = np.asarray(runs, dtype=float)  # runs × items
    d = a - b
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(b.size, np.full(b.size, 1 / b.size), size=resamples) / b.size
    means = weights @ d.T  # resamples × runs
    lows, highs = np.quantile(means, [0.025, 0.975], axis=0)
    boot_p = 2 * np.minimum((means <= 0).mean(axis=0), (means >= 0).mean(axis=0))
    both = np.concatenate([a.ravel(), b])
    if np.all((both == 0) | (both == 1)):
        kinds = "binary"
    elif np.all((both == 0) | (both == 0.5) | (both == 1)):
        kinds = "outcome"
    else:
        kinds = "continuous"
    if kinds == "binary":
        ups = np.sum((a >= 0.5) & (b < 0.5), axis=1)
        downs = np.sum((b >= 0.5) & (a < 0.5), axis=1)
    else:
        ups, downs = np.sum(a > b, axis=1), np.sum(a < b, axis=1)
    exact = _binom_two_sided_many(ups, downs)
    zero = ~np.any(d != 0, axis=1)
    out = []
    for k in range(a.shape[0]):
        if zero[k]:
            out.append(Difference(0.0, 0.0, 0.0, 1.0, _test_name(kinds), b.size))
            continue
        if kinds in ("binary", "outcome"):
            p = float(exact[k])
        else:
            p = min(1.0, max(float(boot_p[k]), 1 / resamples))
        out.append(
            Difference(
                float(d[k].mean()), float(lows[k]), float(highs[k]), p, _test_name(kinds), b.size
            )
        )
    return out


def _binom_two_sided_many(ups: Any, downs: Any) -> Any:
    """`binom_two_sided` for arrays of counts at once (scipy's binomial CDF)."""
    import numpy as np
    from scipy.stats import binom

    n = ups + downs
    p = 2 * binom.cdf(np.minimum(ups, downs), n, 0.5)
    return np.where(n == 0, 1.0, np.minimum(1.0, p))


def _test_name(kind: str) -> str:
    return {"binary": "mcnemar", "outcome": "sign"}.get(kind, "paired bootstrap")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control when one run is
    compared with many), in the input order; NaN stays NaN."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def seed_summary(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of one metric across seeds."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, 0)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return (mean, sd, n)


def two_level_bootstrap(
    runs: Any, baseline: Any, *, resamples: int = 2000, seed: int = 0
) -> Difference:
    """run − baseline when either side has several training seeds (seeds × items arrays,
    the same items in the same order): each resample draws seeds with replacement on each
    side and items with replacement (the same items for both sides, so the pairing by item
    stays), and takes the difference of the means. The interval and two-sided p come from
    those resamples, so a difference carried by one outlying seed is not significant
    however many items agree — the item-only paired test cannot see that variance."""
    import numpy as np

    a = np.atleast_2d(np.asarray(runs, dtype=float))
    b = np.atleast_2d(np.asarray(baseline, dtype=float))
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    a, b = a[:, keep], b[:, keep]
    n = a.shape[1]
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, "", 0)
    rng = np.random.default_rng(seed)
    pick_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    pick_b = rng.integers(0, b.shape[0], size=(resamples, b.shape[0]))
    weights = rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n  # resamples × items
    per_item = a[pick_a].mean(axis=1) - b[pick_b].mean(axis=1)  # resamples × items
    means = (per_item * weights).sum(axis=1)
    delta = float(a.mean() - b.mean())
    low, high = np.quantile(means, [0.025, 0.975])
    p = 2 * min(float((means <= 0).mean()), float((means >= 0).mean()))
    p = min(1.0, max(p, 1 / resamples))
    return Difference(delta, float(low), float(high), p, "two-level bootstrap", n)


def within_seed_noise(delta: float, *sds: float) -> bool:
    """A difference no larger than the seed spread (the larger of the two sides' sd) is
    not evidence of anything, whatever a per-item test says."""
    spread = max((sd for sd in sds if sd and not math.isnan(sd)), default=0.0)
    return spread > 0 and abs(delta) <= spread


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


def bootstrap_lc(
    outcomes: list[float], x: list[float], seed: int, resamples: int = 200
) -> tuple[float, float]:
    """Percentile bootstrap interval of the length-controlled win rate."""
    import numpy as np

    if len(outcomes) < 2:
        return (float("nan"), float("nan"))
    y, xs = np.asarray(outcomes), np.asarray(x)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        values.append(length_controlled_win_rate(y[idx].tolist(), xs[idx].tolist()))
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)
