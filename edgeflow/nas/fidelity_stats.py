"""The figures of a ranking-fidelity report: how well a predictor orders subnets by their stand-alone EPE.

A predictor is one number per subnet where lower means "predicted better": the supernet's EPE, or a
cost baseline turned into one (more FLOPs, more parameters or a longer latency predicted better, so
its negative). Against the stand-alone EPEs of the same subnets:

- Kendall tau-b and Spearman rho (scipy.stats), 1 for the same order, 0 for none;
- top overlap: the share of the `top` best subnets by the predictor that are among the `top` best
  stand-alone;
- regret: the stand-alone EPE of the predictor's top-1 minus the best stand-alone EPE (0 is perfect);

each with a 95 % percentile bootstrap interval over subnets: the subnets are resampled with
replacement (one seeded numpy Generator; the same resamples for every predictor, so differences are
paired). A resample on which a figure is undefined (every subnet the same, so no order) is left out
and counted. Light module (NumPy and SciPy, no TensorFlow).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from edgeflow.train.rank_tau import tau_b

LEVEL = 0.95
RESAMPLES = 2000
FIGURES = ("kendall_tau", "spearman", "top_overlap", "regret")
METHOD = ("percentile bootstrap over subnets: subnets resampled with replacement, the same resamples for "
          "every predictor (paired); resamples where a figure is undefined are left out and counted")


@dataclass(frozen=True)
class Interval:
    value: float      # on all subnets
    low: float        # the bootstrap interval (NaN when no resample defined the figure)
    high: float
    undefined: int = 0  # resamples left out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kendall_tau(pred: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Kendall tau-b (ties in either ranking counted as scipy does)."""
    return tau_b(pred, actual)


def spearman(pred: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    return float(stats.spearmanr(pred, actual).statistic)


def _best(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` lowest values; ties by position (stable), so the result is deterministic."""
    return np.argsort(values, kind="stable")[:n]


def top_overlap(pred: npt.ArrayLike, actual: npt.ArrayLike, top: int) -> float:
    p, a = np.asarray(pred, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    top = min(top, len(p))
    return len(set(_best(p, top).tolist()) & set(_best(a, top).tolist())) / top


def regret(pred: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Stand-alone EPE of the predictor's top-1 minus the best stand-alone EPE."""
    p, a = np.asarray(pred, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    return float(a[_best(p, 1)[0]] - a.min())


def figure_fn(name: str, top: int) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "kendall_tau":
        return kendall_tau
    if name == "spearman":
        return spearman
    if name == "top_overlap":
        return lambda p, a: top_overlap(p, a, top)
    if name == "regret":
        return regret
    raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")


def resamples(n: int, count: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """`count` resamples of `n` subnets (rows of indices), drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(count, n))


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, int]:
    """The percentile interval of the finite values; (low, high, how many were not finite)."""
    finite = values[np.isfinite(values)]
    undefined = int(len(values) - len(finite))
    if not len(finite):
        return float("nan"), float("nan"), undefined
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high), undefined


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, count: int = RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> tuple[float, float, int]:
    """A percentile interval of `statistic(indices)` over resampled subnets."""
    values = np.array([_quiet(statistic, idx) for idx in resamples(n, count, seed)])
    return interval(values, level)


def _quiet(fn: Callable[..., float], *args: Any) -> float:
    # scipy warns on a constant resample, whose figure is NaN (left out and counted)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args))


def compare(predictors: Mapping[str, Sequence[float]], actual: Sequence[float], *, top: int,
            reference: str = "supernet", baseline: str = "flops", count: int = RESAMPLES, seed: int = 0,
            level: float = LEVEL) -> dict[str, Any]:
    """Every figure of every predictor with its interval, and the paired difference of Kendall tau
    between `reference` and `baseline` on the same resamples."""
    a = np.asarray(actual, dtype=np.float64)
    n = len(a)
    if n < 3:
        raise ValueError(f"at least 3 subnets are needed for rank figures, got {n}")
    preds = {name: np.asarray(v, dtype=np.float64) for name, v in predictors.items()}
    for name, p in preds.items():
        if p.shape != a.shape:
            raise ValueError(f"predictor {name}: {len(p)} values for {n} subnets")
    draws = resamples(n, count, seed)
    out: dict[str, Any] = {}
    per_draw: dict[tuple[str, str], np.ndarray] = {}
    for name, p in preds.items():
        out[name] = {}
        for fig in FIGURES:
            fn = figure_fn(fig, top)
            values = np.array([_quiet(fn, p[idx], a[idx]) for idx in draws])
            per_draw[name, fig] = values
            low, high, undefined = interval(values, level)
            out[name][fig] = Interval(_quiet(fn, p, a), low, high, undefined).as_dict()
    diff = None
    if reference in preds and baseline in preds:
        d = per_draw[reference, "kendall_tau"] - per_draw[baseline, "kendall_tau"]
        low, high, undefined = interval(d, level)
        diff = Interval(out[reference]["kendall_tau"]["value"] - out[baseline]["kendall_tau"]["value"],
                        low, high, undefined).as_dict()
    return {"predictors": out, "tau_difference": diff, "reference": reference, "baseline": baseline,
            "subnets": n, "top": top, "bootstrap": {"resamples": count, "seed": seed, "level": level,
                                                     "method": METHOD}}


BETTER, WORSE, UNCLEAR = "better", "worse", "not distinguishable"
RULE = ("the supernet ranks better than FLOPs alone when the 95 % bootstrap interval of the paired difference "
        "Kendall tau(supernet) - Kendall tau(FLOPs) lies above 0, worse when it lies below 0, otherwise the two "
        "are not distinguishable on these subnets")


def verdict(figures: Mapping[str, Any]) -> tuple[str, str]:
    """(better | worse | not distinguishable, the line a user reads) from compare()'s result."""
    diff = figures.get("tau_difference")
    ref = figures["predictors"][figures["reference"]]["kendall_tau"]
    base = figures["predictors"][figures["baseline"]]["kendall_tau"]
    n = figures["subnets"]
    shown = (f"Kendall tau {ref['value']:+.2f} [{ref['low']:+.2f}, {ref['high']:+.2f}] against "
             f"{base['value']:+.2f} for FLOPs alone, {n} subnets")
    if diff is None or not np.isfinite(diff["low"]):
        return UNCLEAR, f"cannot tell whether to trust the ranking: no defined rank figure ({shown})"
    gap = f"difference {diff['value']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
    if diff["low"] > 0:
        return BETTER, f"trust the ranking: the supernet ranks better than FLOPs alone ({shown}; {gap})"
    if diff["high"] < 0:
        return WORSE, (f"do not trust the ranking: FLOPs alone ranks better than the supernet ({shown}; {gap})")
    return UNCLEAR, (f"do not trust the ranking yet: the supernet does not rank clearly better than FLOPs alone "
                     f"({shown}; {gap} includes 0); more subnets (--k) narrow the interval")


def seed_noise(epes_by_arch: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Label noise: the spread of one arch's stand-alone EPE over training seeds (archs with >= 2 seeds)."""
    rows = {code: [float(v) for v in values] for code, values in epes_by_arch.items() if len(values) >= 2}
    if not rows:
        return {"archs": 0}
    stds = {code: float(np.std(v, ddof=1)) for code, v in rows.items()}
    return {"archs": len(rows), "epes": rows, "std": stds,
            "pooled_std": float(np.sqrt(np.mean([s * s for s in stds.values()])))}
