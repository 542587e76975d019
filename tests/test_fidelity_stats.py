"""The fidelity figures against scipy on fixed inputs, and each one able to tell a broken ranking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from edgeflow.nas import fidelity_stats as fs

# Stand-alone EPEs of 8 subnets and three predictors: one in the same order, one reversed, one with a
# tie and two swaps.
ACTUAL = np.array([2.1, 2.4, 2.5, 2.9, 3.0, 3.3, 3.8, 4.4])
SAME = ACTUAL * 0.5 + 1.0
REVERSED = -ACTUAL
MIXED = np.array([1.0, 1.2, 1.1, 1.5, 1.5, 1.4, 2.0, 1.9])


def test_tau_and_spearman_are_scipys_tau_b_and_rho() -> None:
    assert fs.kendall_tau(MIXED, ACTUAL) == pytest.approx(stats.kendalltau(MIXED, ACTUAL).statistic, abs=1e-12)
    assert fs.spearman(MIXED, ACTUAL) == pytest.approx(stats.spearmanr(MIXED, ACTUAL).statistic, abs=1e-12)
    # tau-b by hand: 28 pairs, 4 discordant, 1 tied in the predictor, 23 concordant
    assert fs.kendall_tau(MIXED, ACTUAL) == pytest.approx((23 - 4) / np.sqrt(28 * 27), abs=1e-12)
    assert fs.kendall_tau(SAME, ACTUAL) == pytest.approx(1.0)
    assert fs.kendall_tau(REVERSED, ACTUAL) == pytest.approx(-1.0)
    assert fs.spearman(SAME, ACTUAL) == pytest.approx(1.0) and fs.spearman(REVERSED, ACTUAL) == pytest.approx(-1.0)


def test_top_overlap_and_regret_tell_a_bad_pick() -> None:
    assert fs.top_overlap(SAME, ACTUAL, 3) == 1.0 and fs.top_overlap(REVERSED, ACTUAL, 3) == 0.0
    assert fs.top_overlap(MIXED, ACTUAL, 3) == pytest.approx(1.0)  # {0, 2, 1} against {0, 1, 2}
    assert fs.top_overlap(MIXED, ACTUAL, 2) == pytest.approx(0.5)  # {0, 2} against {0, 1}
    assert fs.regret(SAME, ACTUAL) == 0.0
    assert fs.regret(REVERSED, ACTUAL) == pytest.approx(4.4 - 2.1)
    assert fs.regret(np.array([5, 1, 9, 9, 9, 9, 9, 9]), ACTUAL) == pytest.approx(0.3)


def test_bootstrap_interval_agrees_with_scipys_percentile_bootstrap() -> None:
    rng = np.random.default_rng(7)
    actual = rng.normal(3.0, 0.5, size=30)
    pred = actual + rng.normal(0.0, 0.4, size=30)
    low, high, undefined = fs.bootstrap(lambda idx: fs.kendall_tau(pred[idx], actual[idx]), 30, count=3000, seed=1)
    ref = stats.bootstrap((pred, actual), lambda p, a: stats.kendalltau(p, a).statistic, paired=True,
                          vectorized=False, n_resamples=3000, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(2)).confidence_interval
    assert undefined == 0
    assert low == pytest.approx(ref.low, abs=0.04) and high == pytest.approx(ref.high, abs=0.04)
    assert low < fs.kendall_tau(pred, actual) < high
    # the same seed, the same interval; another seed, another one
    assert fs.bootstrap(lambda idx: fs.kendall_tau(pred[idx], actual[idx]), 30, count=3000, seed=1)[:2] == (low, high)
    assert fs.bootstrap(lambda idx: fs.kendall_tau(pred[idx], actual[idx]), 30, count=3000, seed=3)[:2] != (low, high)


def test_constant_resamples_are_left_out_and_counted() -> None:
    values = np.array([0.5, np.nan, 0.7, np.nan, 0.6])
    low, high, undefined = fs.interval(values)
    assert undefined == 2 and 0.5 <= low < high <= 0.7
    # 3 subnets: 3 of the 27 resamples take one subnet three times, and tau is undefined there
    out = fs.compare({"supernet": [1.0, 2.0, 3.0], "flops": [3.0, 2.0, 1.0]}, [1.0, 2.0, 3.0], top=1,
                     count=2000, seed=0)
    assert 0 < out["predictors"]["supernet"]["kendall_tau"]["undefined"] < 2000


def test_compare_and_verdict_follow_the_rule() -> None:
    rng = np.random.default_rng(0)
    actual = np.sort(rng.normal(3.0, 0.5, size=20))
    flops = rng.normal(size=20)  # a cost that says nothing
    good = fs.compare({"supernet": actual + rng.normal(0, 0.05, 20), "flops": flops}, actual, top=5, count=500)
    assert good["predictors"]["supernet"]["kendall_tau"]["low"] > 0.6
    assert good["tau_difference"]["low"] > 0
    word, line = fs.verdict(good)
    assert word == fs.BETTER and line.startswith("trust the ranking: the supernet ranks better than FLOPs alone")
    bad = fs.compare({"supernet": flops, "flops": actual}, actual, top=5, count=500)
    assert fs.verdict(bad)[0] == fs.WORSE and fs.verdict(bad)[1].startswith("do not trust the ranking")
    same = fs.compare({"supernet": flops, "flops": flops + 1e-3 * rng.normal(size=20)}, actual, top=5, count=500)
    assert fs.verdict(same)[0] == fs.UNCLEAR
    with pytest.raises(ValueError, match="at least 3"):
        fs.compare({"supernet": [1.0, 2.0]}, [1.0, 2.0], top=1)


def test_seed_noise_is_the_spread_over_seeds() -> None:
    noise = fs.seed_noise({"000021222": [2.0, 2.2, 2.4], "000000000": [3.0]})
    assert noise["archs"] == 1 and noise["std"]["000021222"] == pytest.approx(0.2)
    assert noise["pooled_std"] == pytest.approx(0.2)
    assert fs.seed_noise({"000000000": [3.0]}) == {"archs": 0}
