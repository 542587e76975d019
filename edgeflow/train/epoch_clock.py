"""What an epoch really costs, measured: its training steps and everything around them.

The epoch event's `epoch_seconds` counts the training steps only; an epoch of a run also evaluates the
pool (every `eval.every_epochs`), writes checkpoints and events and draws the flow pictures. The clock
takes the time between the ends of two epochs' training steps (`epoch_wall_seconds`) and, separately,
the seconds spent outside the steps after an epoch with an evaluation and after one without, so the
progress display's "run left" adds what the rest of the run will spend there. Nothing is guessed:
until a kind of epoch has been seen, its share is left out and marked as not measured.

Light module (standard library only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def evaluates(epoch: int, every_epochs: int, num_epochs: int) -> bool:
    """Whether the pool is evaluated after `epoch` (every `every_epochs`, and after the last one)."""
    return epoch % every_epochs == 0 or epoch == num_epochs


@dataclass
class EpochClock:
    every_epochs: int
    num_epochs: int
    clock: Callable[[], float] = time.monotonic
    # Seconds outside the training steps after an epoch: (with an evaluation, without one); None until seen.
    after_eval: float | None = None
    after_plain: float | None = None
    _steps_ended: float | None = None   # when the last epoch's steps ended
    _ended_epoch: int = 0
    _period_start: float | None = None

    def steps_start(self, epoch: int) -> None:
        """The epoch's training steps begin: what happened since the previous steps ended is measured."""
        now = self.clock()
        if self._steps_ended is not None:
            spent = now - self._steps_ended
            if evaluates(self._ended_epoch, self.every_epochs, self.num_epochs):
                self.after_eval = spent
            else:
                self.after_plain = spent
        if self._period_start is None:
            self._period_start = now

    def steps_end(self, epoch: int) -> float:
        """The epoch's training steps ended; returns its wall time (since the previous epoch's steps
        ended, or since this process's first epoch began)."""
        now = self.clock()
        start = self._steps_ended if self._steps_ended is not None else self._period_start
        self._steps_ended, self._ended_epoch = now, epoch
        return now - (start if start is not None else now)

    def later_seconds(self, epoch: int) -> tuple[float, bool]:
        """Measured seconds the run will spend outside training steps from the end of `epoch`'s steps
        to its end, and whether all of it was measured (False: some kind of epoch not seen yet)."""
        total, measured = 0.0, True
        for e in range(epoch, self.num_epochs + 1):
            spent = self.after_eval if evaluates(e, self.every_epochs, self.num_epochs) else self.after_plain
            if spent is None:
                measured = False
            else:
                total += spent
        return total, measured
