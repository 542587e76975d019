"""Epoch statistics (docs/protocol.md) and the console line of an epoch.

Light module (NumPy only). Train loss and grad norm are epoch means over all steps (each step's value
is already the mean over its 3 archs); a skipped non-finite step is counted, not averaged. The loop
fills it from the device-side step log (edgeflow/train/steplog.py) at each read: the same float32
values, step by step, that it used to read after every step, so the figures (percentiles included) and
a mid-epoch resume, which saves them in the checkpoint's state, are exactly as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeflow.progress import significant


@dataclass
class EpochStats:
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    clip_count: int = 0
    nonfinite_steps: int = 0
    overflow_steps: int = 0  # mixed precision: skipped for a loss-scale overflow, not non-finite
    samples: int = 0
    seconds: float = 0.0  # training time of this epoch, summed across resumes

    def add_step(self, *, loss: float, grad_norm: float, clipped: bool, finite: bool, samples: int,
                 seconds: float, overflow: bool = False) -> None:
        self.samples += int(samples)
        self.seconds += float(seconds)
        if overflow:
            # No update happened and its grad norm is Inf: count it, keep it out of the means.
            self.overflow_steps += 1
            return
        if not finite:
            self.nonfinite_steps += 1
            return
        self.losses.append(float(loss))
        self.grad_norms.append(float(grad_norm))
        self.clip_count += int(bool(clipped))

    def add_seconds(self, seconds: float) -> None:
        """Training time of steps counted in bulk (the loop adds the time between two reads)."""
        self.seconds += float(seconds)

    def summary(self) -> dict[str, Any]:
        norms = np.asarray(self.grad_norms, dtype=np.float64)
        steps = len(self.losses)
        nan = float("nan")

        def pct(q: float) -> float:
            return float(np.percentile(norms, q)) if steps else nan

        return {
            "train_loss": float(np.mean(self.losses)) if steps else nan,
            "grad_norm": float(norms.mean()) if steps else nan,
            "grad_norm_p50": pct(50),
            "grad_norm_p90": pct(90),
            "grad_norm_p99": pct(99),
            "clip_count": self.clip_count,
            "clip_rate": self.clip_count / steps if steps else 0.0,
            "nonfinite_steps": self.nonfinite_steps,
            "overflow_steps": self.overflow_steps,
            "epoch_seconds": self.seconds,
            "samples_per_second": self.samples / self.seconds if self.seconds > 0 else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "grad_norms": self.grad_norms, "clip_count": self.clip_count,
                "nonfinite_steps": self.nonfinite_steps, "overflow_steps": self.overflow_steps,
                "samples": self.samples, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EpochStats:
        if not d:
            return cls()
        return cls(losses=[float(v) for v in d["losses"]], grad_norms=[float(v) for v in d["grad_norms"]],
                   clip_count=int(d["clip_count"]), nonfinite_steps=int(d["nonfinite_steps"]),
                   # States written before mixed precision existed have no overflow count.
                   overflow_steps=int(d.get("overflow_steps", 0)),
                   samples=int(d["samples"]), seconds=float(d["seconds"]))


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def epoch_line(epoch: int, num_epochs: int, epoch_fields: dict[str, Any],
               eval_fields: dict[str, Any] | None) -> str:
    """One console line per epoch: loss, grad norm, EPE, best, early-stop count, throughput."""
    parts = [f"epoch {epoch}/{num_epochs}",
             f"loss {_fmt(epoch_fields['train_loss'])}",
             f"grad_norm {_fmt(epoch_fields['grad_norm'], '.3f')} (p90 {_fmt(epoch_fields['grad_norm_p90'], '.3f')},"
             f" clip {_fmt(epoch_fields['clip_rate'], '.0%')})"]
    if eval_fields is not None:
        parts += [f"EPE {significant(eval_fields['mean_epe'])} +- {significant(eval_fields['std_epe'])}",
                  f"best {significant(eval_fields['best_epe'])} @{eval_fields['best_epoch']}",
                  f"early-stop {eval_fields['bad_epochs']}/{eval_fields['patience']}"]
    else:
        parts.append("EPE not evaluated")
    if epoch_fields.get("nonfinite_steps"):
        parts.append(f"non-finite steps {epoch_fields['nonfinite_steps']}")
    if epoch_fields.get("overflow_steps"):
        parts.append(f"fp16 overflow skips {epoch_fields['overflow_steps']}")
    parts.append(f"{_fmt(epoch_fields['samples_per_second'], '.1f')} samples/s")
    return " | ".join(parts)
