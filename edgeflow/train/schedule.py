"""Learning-rate schedule of protocol §4: cosine from the base LR to train.lr_min (0), no warm-up (or constant).

Light module: the LR is computed in Python and fed to the step as a scalar tensor, so the schedule
never causes a retrace and a resumed run gets exactly the LR of its global step.
"""

from __future__ import annotations

import math


def total_steps(num_epochs: int, steps_per_epoch: int) -> int:
    """The schedule horizon: every step of every epoch."""
    return max(1, int(num_epochs) * int(steps_per_epoch))


def learning_rate(step: int, base_lr: float, horizon: int, kind: str = "cosine", min_lr: float = 0.0) -> float:
    """LR used by the update of global step `step` (0-based).

    Cosine decays from `base_lr` at step 0 to `min_lr` (train.lr_min, default 0) at step `horizon`;
    steps past the horizon (a run whose num_epochs was lowered on resume) stay at `min_lr` rather than
    climbing back up the cosine.
    """
    if kind == "constant":
        return float(base_lr)
    if kind != "cosine":
        raise ValueError(f"train.lr_schedule: unknown schedule {kind!r}")
    progress = min(max(step, 0) / max(horizon, 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    if not min_lr:
        return float(base_lr) * cosine  # the same float arithmetic as before train.lr_min existed
    return float(min_lr) + (float(base_lr) - float(min_lr)) * cosine
