"""Values of one run, derived from its files only (design §2).

Everything here is rebuilt by replaying events.jsonl from its first line, so a restarted sidecar computes
the same numbers as one that has been running all along: nothing is incremented across restarts.

The figures a run reports are the table of `edgeflow/rundir/figures.py`: the latest value of each
exported figure is kept under its metric name, from whichever event carries it. Only what the monitor
derives stays code here: the distinct-epoch counters, the non-finite steps summed over distinct epochs,
the rising-EPE streak, run starts, timestamps, the status and the per-arch EPE.

No content of a run file may stop the reader: a number no float holds is as large as a float gets, any
other type where a number belongs is "not reported", and a time ahead of the reader's clock is not
believed (see `Horizon`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeflow.rundir import RUN_FIELDS, RUN_STATUSES, STATE_FIELDS, as_float
from edgeflow.rundir.figures import BY_NAME, FIGURES, PROGRESS_EVENTS, carried_by

# How far ahead of the sidecar's clock an event's time may be before it is taken for a clock that runs
# ahead (a node without NTP): synchronised clocks differ by milliseconds, and the stall alert waits
# 15 minutes, so a minute hides no stall and refuses no honest event.
FUTURE_TOLERANCE_SECONDS = 60.0

# event kind -> (field, metric name) of the exported figures its events carry, from the one table
_CARRIED: dict[str, tuple[tuple[str, str], ...]] = {
    kind: tuple((f.name, f.metric) for f in carried_by(kind)) for kind in sorted({k for f in FIGURES for k in f.events})
}
# Figures that run.json and state.json also hold: they fill what the events have not reported yet.
_RUN_JSON_FILLS = tuple((f.name, f.metric) for f in FIGURES if f.metric and f.name in RUN_FIELDS)
_STATE_JSON_FILLS = tuple((f.name, f.metric) for f in FIGURES if f.metric and f.name in STATE_FIELDS)
_EPOCH = BY_NAME["epoch"].metric
_MEAN_EPE = BY_NAME["mean_epe"].metric


def label(value: Any) -> str | None:
    """An experiment name or a job id from a file: text, or a whole number (a job id written as one)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True)
class Horizon:
    """The latest time a reader believes: an event dated after `latest` (its clock plus the tolerance)
    comes from a clock that runs ahead, and its time is taken as `clamp` instead: when the file was last
    written (the file server's clock), never later than the reader's own clock. So one such event cannot
    pin the last-progress time in the future, where the stall alert would never see it age; later events
    move it again, and a restart replaying the file derives the same time again."""

    latest: float
    clamp: float

    @classmethod
    def at(cls, now: float, written: float | None = None) -> Horizon:
        return cls(now + FUTURE_TOLERANCE_SECONDS, now if written is None else min(now, written))


@dataclass
class RunState:
    """The current values of one run. `None` or an absent value means "not reported yet" (not exported)."""

    experiment: str | None = None
    job_id: str | None = None
    status: str | None = None
    end_reason: str | None = None
    # the latest value of each exported figure (rundir/figures.py), by metric name
    values: dict[str, float] = field(default_factory=dict)
    run_start_time: float | None = None
    run_starts: int = 0
    last_progress_time: float | None = None
    last_event_time: float | None = None
    last_checkpoint_time: float | None = None
    end_time: float | None = None
    # An epoch trained again after a crash (its events written, its checkpoint not) is counted once: the
    # counters count distinct epochs, not epoch events.
    epochs_completed: int = 0
    epochs_seen: set[float] = field(default_factory=set)
    # epoch -> non-finite steps of that epoch; an epoch replayed after a resume overwrites, never adds
    nonfinite_by_epoch: dict[float, float] = field(default_factory=dict)
    evaluations: int = 0
    evaluated_epochs: set[float] = field(default_factory=set)
    arch_epe: dict[str, float] = field(default_factory=dict)
    epe_rising: int = 0
    future_events: int = 0  # events dated beyond the reader's horizon (their time was clamped)
    events: int = 0

    def value(self, metric: str) -> float | None:
        return self.values.get(metric)

    @property
    def nonfinite_steps(self) -> float | None:
        if not self.nonfinite_by_epoch:
            return None
        return float(sum(self.nonfinite_by_epoch.values()))

    def apply(self, event: dict[str, Any], horizon: Horizon | None = None) -> None:
        """Fold one event into the state. Unknown events and fields are ignored (design §2)."""
        kind = event.get("event")
        when = as_float(event.get("time"))
        if when is not None and not math.isfinite(when):
            when = None
        if when is not None and horizon is not None and when > horizon.latest:
            self.future_events += 1
            when = horizon.clamp
        self.events += 1
        experiment = event.get("experiment")
        if isinstance(experiment, str) and experiment:
            self.experiment = experiment
        job_id = label(event.get("job_id"))
        if job_id is not None:
            self.job_id = job_id
        if when is not None:
            self.last_event_time = when if self.last_event_time is None else max(self.last_event_time, when)
            if kind in PROGRESS_EVENTS:
                self.last_progress_time = (
                    when if self.last_progress_time is None else max(self.last_progress_time, when))
        if not isinstance(kind, str):
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, event, when)  # before the figures: a handler may compare with the previous values
        values = self.values
        for name, metric in _CARRIED.get(kind, ()):
            if name in event:
                value = as_float(event[name])
                if value is not None:
                    values[metric] = value

    def apply_run_json(self, run: dict[str, Any]) -> None:
        """run.json fills what the events have not told (e.g. events.jsonl not written yet)."""
        if self.experiment is None:
            self.experiment = label(run.get("experiment"))
        if self.job_id is None:
            job_ids = run.get("job_ids")
            # `job_id` is the launcher's, written with the end it recorded (rundir.record_end)
            self.job_id = label(job_ids[-1] if isinstance(job_ids, list) and job_ids else run.get("job_id"))
        status = run.get("status")
        if self.status is None and isinstance(status, str) and status in RUN_STATUSES:
            self.status = status
        self._fill(run, _RUN_JSON_FILLS)

    def apply_state_json(self, state: dict[str, Any]) -> None:
        """state.json (written each epoch) fills values the events have not reported."""
        self._fill(state, _STATE_JSON_FILLS)

    def _fill(self, data: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> None:
        for name, metric in pairs:
            if metric not in self.values:
                value = as_float(data.get(name))
                if value is not None:
                    self.values[metric] = value


def _run_start(s: RunState, e: dict[str, Any], when: float | None) -> None:
    s.run_starts += 1
    s.status = "running"
    s.end_reason = None
    s.end_time = None
    s.run_start_time = when
    start_epoch = as_float(e.get("start_epoch"))
    if start_epoch is not None and _EPOCH not in s.values:
        s.values[_EPOCH] = start_epoch


def _first_time(seen: set[float], e: dict[str, Any]) -> bool:
    epoch = as_float(e.get("epoch"))
    if epoch is None:
        return True
    if epoch in seen:
        return False
    seen.add(epoch)
    return True


def _epoch(s: RunState, e: dict[str, Any], when: float | None) -> None:
    if _first_time(s.epochs_seen, e):
        s.epochs_completed += 1
    nonfinite = as_float(e.get("nonfinite_steps"))
    if nonfinite is not None:
        epoch = as_float(e.get("epoch"))
        s.nonfinite_by_epoch[epoch if epoch is not None else -s.epochs_completed] = nonfinite


def _eval(s: RunState, e: dict[str, Any], when: float | None) -> None:
    if _first_time(s.evaluated_epochs, e):
        s.evaluations += 1
    arch = e.get("arch_epe")
    if isinstance(arch, dict):
        s.arch_epe = {k: v for k, v in ((k, as_float(v)) for k, v in arch.items()) if v is not None}
    # Consecutive evaluations whose mean EPE rose: a trend the alert rule cannot see from gauges alone.
    previous = s.values.get(_MEAN_EPE)
    reported = as_float(e.get("mean_epe"))
    current = previous if reported is None else reported
    if previous is not None and current is not None and current > previous:
        s.epe_rising += 1
    elif current is not None:
        s.epe_rising = 0


def _search(s: RunState, e: dict[str, Any], when: float | None) -> None:
    # A ranking's array elements each report; the last report is the latest total. A report after a
    # run_end is an element (re)starting: the folder is running again.
    s.status = "running"
    s.end_reason = None
    s.end_time = None


def _checkpoint(s: RunState, e: dict[str, Any], when: float | None) -> None:
    if when is not None:
        s.last_checkpoint_time = when


def _run_end(s: RunState, e: dict[str, Any], when: float | None) -> None:
    status = e.get("status")
    s.status = status if isinstance(status, str) and status in RUN_STATUSES else "failed"
    s.end_reason = e.get("reason") if isinstance(e.get("reason"), str) else None
    s.end_time = when


_HANDLERS = {"run_start": _run_start, "epoch": _epoch, "eval": _eval, "checkpoint": _checkpoint,
             "run_end": _run_end, "search": _search}
