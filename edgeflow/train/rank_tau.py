"""Ranking stability while a supernet trains: Kendall tau-b between two evaluations of the pool.

Light module (scipy loads on the first call). The trainer records, at every pool evaluation,
`pool_rank_tau` (against the previous evaluation) and `pool_rank_tau_best` (against the best
checkpoint's evaluation as it stood before this one); both are absent, not NaN, when there is nothing
to compare with (edgeflow/rundir/figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def tau_b(x: Sequence[float] | Any, y: Sequence[float] | Any) -> float:
    """Kendall tau-b of two paired sequences (scipy.stats.kendalltau; ties counted as scipy does), NaN where
    it is undefined: the one Kendall tau of the project (pool stability here, the fidelity report's)."""
    from scipy import stats

    return float(stats.kendalltau(x, y, variant="b").statistic)


def kendall_tau_b(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """Kendall tau-b (scipy.stats.kendalltau) between two arch -> EPE maps, over the archs both have with
    finite EPEs; None when fewer than two such archs, or when one side ranks them all equal (tau-b is
    undefined there)."""
    common = sorted(code for code in set(a) & set(b) if _finite(a[code]) and _finite(b[code]))
    if len(common) < 2:
        return None
    tau = tau_b([float(a[c]) for c in common], [float(b[c]) for c in common])
    return tau if math.isfinite(tau) else None


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
