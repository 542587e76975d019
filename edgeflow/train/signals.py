"""Preemption signals: SIGTERM (SLURM's kill, `scancel`) and SIGUSR2 (SLURM's --signal warning).

The handler only raises a flag; the training loop checks it after each step, so the step in flight
finishes, a checkpoint is written and the run exits with EXIT_PREEMPTED (75).
"""

from __future__ import annotations

import signal
from types import FrameType

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def install(self) -> StopFlag:
        for sig in PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        self._previous.clear()
