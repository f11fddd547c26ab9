"""ftlab.reports.stats against scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ftlab.reports import stats


def test_wilson_matches_scipy() -> None:
    for k, n in ((0, 10), (3, 10), (10, 10), (47, 120)):
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_bootstrap_percentile_and_bca_match_scipy() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(0.0, 1.0, size=60)  # skewed: BCa and percentile differ
    for method, scipy_method in (("percentile", "percentile"), ("bca", "BCa")):
        ours = stats.bootstrap_ci(x, method=method, resamples=40_000, seed=1)
        ref = sps.bootstrap(
            (x,), np.mean, method=scipy_method, n_resamples=40_000, random_state=2
        ).confidence_interval
        assert ours == pytest.approx((ref.low, ref.high), rel=0.02), method
    pct = stats.bootstrap_ci(x, method="percentile", resamples=40_000, seed=1)
    bca = stats.bootstrap_ci(x, method="bca", resamples=40_000, seed=1)
    assert bca[1] > pct[1]  # right skew moves the BCa interval up
    assert stats.bootstrap_ci(x, seed=5) == stats.bootstrap_ci(x, seed=5)  # seeded
    with pytest.raises(ValueError, match="percentile or bca"):
        stats.bootstrap_ci(x, method="studentized")


def test_mcnemar_and_sign_test_match_scipy_binomtest() -> None:
    a = [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    b = [0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0]
    only_a, only_b, p = stats.mcnemar(a, b)
    assert (only_a, only_b) == (6, 1)
    assert p == pytest.approx(sps.binomtest(6, 7, 0.5).pvalue)
    up, down, p = stats.sign_test([1, 1, 0.5, 1, 0, 1, 1, 0.5], [0.5, 0, 0.5, 0.5, 0.5, 0, 0, 1])
    assert (up, down) == (5, 2)
    assert p == pytest.approx(sps.binomtest(5, 7, 0.5).pvalue)
    assert stats.binom_two_sided(0, 0) == 1.0


def test_holm_hand_computed() -> None:
    # sorted 0.01, 0.02, 0.04, 0.30 → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.08, 0.30 (monotone)
    assert stats.holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert stats.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # step-down keeps order
    out = stats.holm([math.nan, 0.01])
    assert math.isnan(out[0]) and out[1] == pytest.approx(0.01)


def test_compare_paired_picks_the_test_by_score_kind() -> None:
    base = {f"i{k}": float(k % 2) for k in range(40)}
    better = {f"i{k}": 1.0 for k in range(40)}
    d = stats.compare_paired(better, base)
    assert d is not None and d.test == "mcnemar" and d.paired and d.n == 40
    assert d.delta == pytest.approx(0.5) and d.p == pytest.approx(sps.binomtest(20, 20).pvalue)
    assert d.low <= d.delta <= d.high

    judge = stats.compare_paired({"a": 1.0, "b": 0.5, "c": 1.0}, {"a": 0.0, "b": 0.5, "c": 0.5})
    assert judge is not None and judge.test == "sign"

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, 200)
    shifted = {f"i{k}": float(v + 0.5) for k, v in enumerate(x)}
    same = {f"i{k}": float(v) for k, v in enumerate(x)}
    d = stats.compare_paired(shifted, same)
    assert d is not None and d.test == "paired bootstrap"
    assert d.delta == pytest.approx(0.5) and d.p < 0.01 and d.low == pytest.approx(0.5)
    noise = {k: v + float(rng.normal(0, 1)) for k, v in same.items()}
    assert stats.compare_paired(noise, same).p > 0.01  # type: ignore[union-attr]

    other_items = {f"j{k}": float(v) for k, v in enumerate(x)}
    d = stats.compare_paired(shifted, other_items)
    assert d is not None and not d.paired and d.test == "unpaired bootstrap"
    # the unpaired interval is wider than the paired one on the same values
    paired = stats.compare_paired(shifted, same)
    assert (d.high - d.low) > 5 * (paired.high - paired.low)  # type: ignore[union-attr]
    assert stats.compare_paired({}, same) is None


def test_seed_summary_and_noise_flag() -> None:
    mean, sd, n = stats.seed_summary([0.70, 0.74, 0.72])
    assert (mean, n) == (pytest.approx(0.72), 3)
    assert sd == pytest.approx(np.std([0.70, 0.74, 0.72], ddof=1))
    assert stats.within_seed_noise(0.01, sd, 0.0)
    assert not stats.within_seed_noise(0.05, sd)
    assert not stats.within_seed_noise(0.01)  # one seed: no spread known


def test_batched_paired_comparison_agrees_with_one_at_a_time() -> None:
    rng = np.random.default_rng(7)
    items = [f"i{k}" for k in range(80)]
    base = rng.integers(0, 2, 80).astype(float)
    runs = [np.where(rng.random(80) < q, 1.0, base) for q in (0.05, 0.3, 0.6)]
    many = stats.compare_paired_many(runs, base, resamples=4000)
    for run, batched in zip(runs, many, strict=True):
        pair = dict(zip(items, run, strict=True)), dict(zip(items, base, strict=True))
        one = stats.compare_paired(*pair, resamples=4000)
        assert one is not None and batched.test == one.test == "mcnemar"
        assert batched.p == pytest.approx(one.p) and batched.delta == pytest.approx(one.delta)
        assert batched.low == pytest.approx(one.low, abs=0.03)
        assert batched.high == pytest.approx(one.high, abs=0.03)
    cont = [base + rng.normal(0.4, 1.0, 80), base + rng.normal(0.0, 1.0, 80)]
    shifted, noise = stats.compare_paired_many(cont, base + 0.0)
    assert shifted.test == "paired bootstrap" and shifted.p < 0.05 < noise.p


def test_two_level_bootstrap_sees_an_outlying_seed_the_item_test_cannot() -> None:
    """Run A: three training seeds, one of them an outlier far above the baseline; the
    other two score like the baseline. Averaged over seeds per item, A looks better on
    nearly every item (the item-only paired test: significant); resampling the seeds too,
    the difference rests on one seed of three (the two-level test: not significant). With
    three seeds that all agree, the two-level test is significant as well."""
    rng = np.random.default_rng(0)
    items = 200
    truth = rng.normal(0.0, 1.0, items)
    noise = lambda: rng.normal(0.0, 0.05, items)  # noqa: E731
    baseline = np.vstack([truth + noise() for _ in range(3)])
    outlier = np.vstack([truth + noise(), truth + noise(), truth + 1.0 + noise()])
    item_only = stats.compare_paired_many([outlier.mean(axis=0)], baseline.mean(axis=0))[0]
    assert item_only.p < 0.01 and item_only.delta > 0.3
    two = stats.two_level_bootstrap(outlier, baseline)
    assert two.test == "two-level bootstrap" and two.n == items
    assert two.p > 0.05 and two.low <= 0 <= two.high, two
    assert abs(two.delta - item_only.delta) < 1e-9
    agree = np.vstack([truth + 0.3 + noise() for _ in range(3)])
    assert stats.two_level_bootstrap(agree, baseline).p < 0.01
