"""Preemption signals: SIGTERM (SLURM's kill, `scancel`) and SIGUSR2 (SLURM's --signal warning).

The handler only raises a flag; the training loop checks it after each step (a ranking or a search
after each arch), so the work in flight finishes, a checkpoint (or the result) is written and the
command exits with EXIT_PREEMPTED (75).
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

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def install(self) -> StopFlag:
        for sig in PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self, *, ignore_repeats: bool = False) -> None:
        """Restore the previous handlers; with `ignore_repeats`, ignore the signals once a stop was requested.

        The trainer exits right after: SLURM delivers the signal to every process of the step and the
        launcher forwards it too, and a late copy must not kill the process with the default action
        after its checkpoint (the launcher would read that as "killed while starting").
        """
        for sig, prev in self._previous.items():
            handler = signal.SIG_IGN if ignore_repeats and self.requested else prev
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
