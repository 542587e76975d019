"""Ranking stability while a supernet trains: Kendall tau-b between two evaluations of the pool.

Light module (scipy loads on the first call). The trainer records, at every pool evaluation,
`pool_rank_tau` (against the previous evaluation) and `pool_rank_tau_best` (against the best
checkpoint's evaluation as it stood before this one); both are absent, not NaN, when there is nothing
to compare with (edgeflow/rundir/figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def kendall_tau_b(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Kendall tau-b (scipy.stats.kendalltau) between two arch -> EPE maps, over the archs both have with
    finite EPEs; None when fewer than two such archs, or when one side ranks them all equal (tau-b is
    undefined there)."""
    from scipy import stats

    common = sorted(code for code in set(a) & set(b) if _finite(a[code]) and _finite(b[code]))
    if len(common) < 2:
        return None
    tau = stats.kendalltau([float(a[c]) for c in common], [float(b[c]) for c in common], variant="b").statistic
    return float(tau) if math.isfinite(tau) else None


def stability_fields(arch_epe: Mapping[str, float], previous: Mapping[str, float] | None,
                     best: Mapping[str, float] | None) -> dict[str, Any]:
    """The eval event's pool_rank_tau / pool_rank_tau_best, each only when it is defined."""
    out: dict[str, Any] = {}
    for name, other in (("pool_rank_tau", previous), ("pool_rank_tau_best", best)):
        tau = kendall_tau_b(arch_epe, other) if other else None
        if tau is not None:
            out[name] = tau
    return out


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
