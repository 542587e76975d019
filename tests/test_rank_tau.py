"""Kendall tau-b of the pool's ranking between evaluations, against scipy on fixed inputs."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from edgeflow.train.rank_tau import kendall_tau_b, stability_fields

A = {"000000000": 3.1, "111111111": 2.7, "222222222": 2.2, "012012012": 2.9, "210210210": 2.5}
B = {"000000000": 3.0, "111111111": 2.4, "222222222": 2.3, "012012012": 3.2, "210210210": 2.4}  # a tie


def test_tau_b_is_scipys_over_the_archs_in_code_order() -> None:
    codes = sorted(A)
    want = stats.kendalltau([A[c] for c in codes], [B[c] for c in codes], variant="b").statistic
    assert kendall_tau_b(A, B) == pytest.approx(want, abs=1e-12)
    assert kendall_tau_b(B, A) == pytest.approx(want, abs=1e-12)
    assert kendall_tau_b(A, A) == pytest.approx(1.0)
    assert kendall_tau_b(A, {c: -v for c, v in A.items()}) == pytest.approx(-1.0)
    # hand check on three archs: pairs (x, y) concordant, (x, z) discordant, (y, z) concordant -> 1/3
    assert kendall_tau_b({"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 3, "z": 2}) == pytest.approx(1 / 3)


def test_only_archs_both_have_with_finite_epes_count() -> None:
    b = dict(B, **{"111111111": math.nan, "999": 1.0})
    codes = ["000000000", "012012012", "210210210", "222222222"]
    want = stats.kendalltau([A[c] for c in codes], [b[c] for c in codes], variant="b").statistic
    assert kendall_tau_b(A, b) == pytest.approx(want, abs=1e-12)


def test_undefined_is_none_never_nan() -> None:
    assert kendall_tau_b(A, {}) is None
    assert kendall_tau_b({"000000000": 1.0}, {"000000000": 2.0}) is None
    assert kendall_tau_b(A, {c: 1.0 for c in A}) is None  # one side all tied: tau-b undefined


def test_the_eval_fields_are_absent_when_undefined() -> None:
    assert stability_fields(A, None, None) == {}
    fields = stability_fields(A, B, A)
    assert fields["pool_rank_tau"] == pytest.approx(kendall_tau_b(A, B))
    assert fields["pool_rank_tau_best"] == pytest.approx(1.0)
    assert stability_fields(A, {c: 1.0 for c in A}, None) == {}
