"""The training state saved with every checkpoint (and summarised in state.json).

Light module. Everything a resumed run needs besides the TensorFlow variables: position (epoch, step,
batch within the epoch), the sampler's RNG state and fairness counts, early-stopping state, the
partial statistics of an interrupted epoch, and running digests of the arch sequence and the data
order (so two runs can be compared for "same archs, same batches" cheaply).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeflow.train.early_stop import EarlyStopState
from edgeflow.train.epoch_stats import EpochStats

STATE_VERSION = 1


@dataclass
class TrainState:
    epoch: int = 0            # completed epochs
    step: int = 0             # completed global steps (skipped non-finite steps included)
    batch_in_epoch: int = 0   # batches of epoch `epoch + 1` already done (mid-epoch preemption)
    num_epochs: int = 0       # the schedule horizon this state was trained under
    status: str = "running"
    early_stop: EarlyStopState = field(default_factory=EarlyStopState)
    sampler: dict[str, Any] = field(default_factory=dict)
    epoch_stats: EpochStats = field(default_factory=EpochStats)
    consecutive_nonfinite: int = 0
    nonfinite_total: int = 0
    arch_digest: str = ""
    data_digest: str = ""
    # The pool's EPEs (arch -> EPE) of the last evaluation and of the best checkpoint's, for the ranking
    # stability of the next one (pool_rank_tau, pool_rank_tau_best): the same after a resume.
    last_arch_epe: dict[str, float] = field(default_factory=dict)
    best_arch_epe: dict[str, float] = field(default_factory=dict)

    def record_step(self, archs: np.ndarray, data_probe: np.ndarray) -> None:
        self.arch_digest = _chain(self.arch_digest, np.ascontiguousarray(archs, dtype=np.int32).tobytes())
        self.data_digest = _chain(self.data_digest, np.ascontiguousarray(data_probe, dtype=np.float32).tobytes())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "epoch": self.epoch, "step": self.step,
            "batch_in_epoch": self.batch_in_epoch, "num_epochs": self.num_epochs, "status": self.status,
            "early_stop": self.early_stop.to_dict(), "sampler": self.sampler,
            "epoch_stats": self.epoch_stats.to_dict(), "consecutive_nonfinite": self.consecutive_nonfinite,
            "nonfinite_total": self.nonfinite_total, "arch_digest": self.arch_digest,
            "data_digest": self.data_digest, "last_arch_epe": dict(self.last_arch_epe),
            "best_arch_epe": dict(self.best_arch_epe),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"training state version {d.get('version')!r} is not {STATE_VERSION}")
        return cls(
            epoch=int(d["epoch"]), step=int(d["step"]), batch_in_epoch=int(d["batch_in_epoch"]),
            num_epochs=int(d["num_epochs"]), status=str(d["status"]),
            early_stop=EarlyStopState.from_dict(d["early_stop"]), sampler=dict(d["sampler"]),
            epoch_stats=EpochStats.from_dict(d["epoch_stats"]),
            consecutive_nonfinite=int(d["consecutive_nonfinite"]), nonfinite_total=int(d["nonfinite_total"]),
            arch_digest=str(d["arch_digest"]), data_digest=str(d["data_digest"]),
            # absent from states written before the ranking stability was recorded
            last_arch_epe=_epes(d.get("last_arch_epe")), best_arch_epe=_epes(d.get("best_arch_epe")),
        )


def _epes(value: Any) -> dict[str, float]:
    # float() reads back the "nan"/"inf" strings the run directory's JSON writes for non-finite values
    return {str(code): float(epe) for code, epe in (value or {}).items()}


def _chain(previous: str, data: bytes) -> str:
    return hashlib.sha256(previous.encode("ascii") + data).hexdigest()
