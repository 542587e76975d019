"""Early stopping of protocol §6 on the pool's mean EPE (lower is better).

Light module. Improvement means metric < best - min_delta; `bad_epochs` counts evaluations without
improvement; the run stops when it reaches `patience`, never before `min_epochs` epochs are done.
A non-finite metric is never an improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopState:
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EarlyStopState:
        best = d.get("best")
        return cls(best=None if best is None else float(best), best_epoch=d.get("best_epoch"),
                   bad_epochs=int(d.get("bad_epochs", 0)))


@dataclass(frozen=True)
class Decision:
    improved: bool
    stop: bool


def update(state: EarlyStopState, epoch: int, metric: float, *, min_delta: float, patience: int,
           min_epochs: int) -> Decision:
    """Record the evaluation of `epoch` (1-based) in `state` (mutated) and say whether to stop."""
    finite = math.isfinite(metric)
    improved = finite and (state.best is None or metric < state.best - min_delta)
    if improved:
        state.best, state.best_epoch, state.bad_epochs = float(metric), int(epoch), 0
    else:
        state.bad_epochs += 1
    stop = state.bad_epochs >= patience and epoch >= min_epochs
    return Decision(improved=improved, stop=stop)
