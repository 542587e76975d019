"""Progress of long loops (an epoch, rendering or decoding data, evaluating the pool) for people.

On a terminal: a rich progress bar (rate, samples/s, time left, the current loss). Off a terminal
(SLURM logs, `make demo`'s job log, a pipe): one plain line every `every_seconds`, with the same
figures, so a log is never silent for a whole epoch. Light module: no TensorFlow, rich only on a TTY.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

# Reporters still showing a bar; `close_open` ends them when a loop left through an exception.
_OPEN: set[Reporter] = set()


def human_duration(seconds: float | None) -> str:
    """45s, 4m10s, 1h02m, 2d03h: rounded for people ("?" when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def significant(value: Any, digits: int = 4) -> str:
    """A figure for people to `digits` significant digits, trailing zeros kept (2.900, 5.148, 0.01230):
    how every EPE is shown. "-" when missing or not a number; nan/inf as such."""
    if isinstance(value, bool):
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    if not math.isfinite(number):
        return str(number)
    if number != 0 and abs(number) >= 10 ** digits:
        return f"{number:.0f}"
    return f"{number:#.{digits}g}".rstrip(".")


def against_zero_flow(best: Any, zero_flow: Any) -> str:
    """A result against the bar any learning must clear: "best 2.900 vs zero flow 5.148 (-44 %)"."""
    text = f"best {significant(best)} vs zero flow {significant(zero_flow)}"
    try:
        change = 100.0 * (float(best) - float(zero_flow)) / float(zero_flow)
    except (TypeError, ValueError, ZeroDivisionError):
        return text
    return text + (f" ({change:+.0f} %)" if math.isfinite(change) else "")


class Reporter:
    """Counts units of work (steps, samples, archs) of one loop and shows how it goes.

    `later_units`: units still to come after this loop (the rest of the run), for the run's time left;
    `later_seconds`: measured seconds the rest of the run spends outside such units (evaluations,
    checkpoints), added to it; `later_measured=False` says some of that is not measured yet, and the
    run's time left is shown as a lower bound (">1h02m").
    `samples` passed to `update` give samples/s; any other keyword (loss=...) is shown as a figure.
    """

    def __init__(self, label: str, total: int, *, unit: str = "step", done: int = 0, later_units: int = 0,
                 later_seconds: float = 0.0, later_measured: bool = True, every_seconds: float = 60.0,
                 stream: TextIO | None = None, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.done = self.start_done = int(done)
        self.later_units = max(int(later_units), 0)
        self.later_seconds = max(float(later_seconds), 0.0)
        self.later_measured = later_measured
        self.every_seconds = every_seconds
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        self.first_update: float | None = None  # rates run from the first unit's end (tracing excluded)
        self.samples_since_first = 0
        self.figures: dict[str, float] = {}
        self._bar: Any = None
        self._task: Any = None
        if self.tty:
            self._start_bar()
        _OPEN.add(self)

    # ---------------------------------------------------------------- figures
    def rate(self) -> float | None:
        """Units per second since the first unit ended; None before two units."""
        if self.first_update is None:
            return None
        elapsed = self.clock() - self.first_update
        units = self.done - self.start_done - 1
        return units / elapsed if units > 0 and elapsed > 0 else None

    def samples_per_second(self) -> float | None:
        if self.first_update is None:
            return None
        elapsed = self.clock() - self.first_update
        return self.samples_since_first / elapsed if self.samples_since_first and elapsed > 0 else None

    def seconds_left(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def run_seconds_left(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done + self.later_units) / rate + self.later_seconds if rate else None

    def run_left_text(self) -> str:
        left = human_duration(self.run_seconds_left())
        return left if self.later_measured or left == "?" else f">{left}"

    def line(self) -> str:
        """The plain progress line (also what the tests read)."""
        pct = f" {100 * self.done / self.total:.0f}%" if self.total else ""
        parts = [f"{self.label}: {self.unit} {self.done}/{self.total}{pct}"]
        rate, sps = self.rate(), self.samples_per_second()
        speed = [f"{rate:.2f} {self.unit}/s" if rate is not None else f"? {self.unit}/s"]
        if sps is not None:
            speed.append(f"{sps:.1f} samples/s")
        parts.append(", ".join(speed))
        left = f"left {human_duration(self.seconds_left())}"
        if self.later_units or self.later_seconds or not self.later_measured:
            left += f" (run {self.run_left_text()})"
        parts.append(left)
        parts += [f"{k} {significant(v)}" for k, v in self.figures.items()]
        return " | ".join(parts)

    # ---------------------------------------------------------------- updates
    def update(self, n: int = 1, *, samples: int = 0, **figures: float) -> None:
        now = self.clock()
        if self.first_update is None:
            self.first_update = now
        else:
            self.samples_since_first += samples
        self.done += n
        self.figures.update({k: float(v) for k, v in figures.items()})
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self._bar_info())
            return
        if now - self.last_line >= self.every_seconds:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        _OPEN.discard(self)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- terminal
    def _bar_info(self) -> str:
        rate, sps = self.rate(), self.samples_per_second()
        info = [f"{rate:.2f} {self.unit}/s" if rate is not None else "",
                f"{sps:.1f} samples/s" if sps is not None else ""]
        if self.later_units or self.later_seconds or not self.later_measured:
            info.append(f"run left {self.run_left_text()}")
        info += [f"{k} {significant(v)}" for k, v in self.figures.items()]
        return "  ".join(i for i in info if i)

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(file=self.stream), transient=True)
        self._task = self._bar.add_task(self.label, total=self.total or None, completed=self.done, info="")
        self._bar.start()


def close_open() -> None:
    """End every bar still shown (a loop left through an exception), so the terminal is usable."""
    for reporter in list(_OPEN):
        reporter.close()


class ThreadedProgress:
    """Progress reported as `progress(n, total)` from worker threads (n=0 first, with the total), shown
    as one Reporter: what a deep scan or a pack reports while its threads decode."""

    def __init__(self, label: str, *, unit: str = "sample", every_seconds: float = 10.0,
                 stream: TextIO | None = None) -> None:
        self.label, self.unit, self.every_seconds, self.stream = label, unit, every_seconds, stream
        self.reporter: Reporter | None = None
        self._lock = threading.Lock()

    def __call__(self, n: int, total: int) -> None:
        with self._lock:
            if self.reporter is None or n == 0:
                self.close()
                self.reporter = Reporter(self.label, total, unit=self.unit, every_seconds=self.every_seconds,
                                         stream=self.stream)
            if n:
                self.reporter.update(n)

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()
            self.reporter = None
