"""Values of one run, derived from its files only (design §2).

Everything here is rebuilt by replaying events.jsonl from its first line, so a restarted sidecar computes
the same numbers as one that has been running all along: nothing is incremented across restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeflow.rundir import END_STATUSES, RUN_STATUSES, as_float

# Events that show the trainer is alive and moving (a stall is the absence of all of them).
PROGRESS_EVENTS = ("run_start", "heartbeat", "epoch", "eval", "checkpoint", "search")


@dataclass
class RunState:
    """The current values of one run. `None` means "not reported yet" and is not exported."""

    experiment: str | None = None
    job_id: str | None = None
    status: str | None = None
    end_reason: str | None = None
    # from run_start
    run_start_time: float | None = None
    run_starts: int = 0
    train_samples: float | None = None
    val_samples: float | None = None
    num_epochs: float | None = None
    patience: float | None = None
    # progress
    epoch: float | None = None
    step: float | None = None
    last_progress_time: float | None = None
    last_event_time: float | None = None
    last_checkpoint_time: float | None = None
    end_time: float | None = None
    samples_per_second: float | None = None
    replicas: float | None = None  # tf.distribute replicas of the trainer (heartbeat / run_start)
    # epoch summaries; an epoch trained again after a crash (its events written, its checkpoint not)
    # is counted once: the counters count distinct epochs, not epoch events
    epochs_completed: int = 0
    epochs_seen: set[float] = field(default_factory=set)
    train_loss: float | None = None
    grad_norm: float | None = None
    grad_norm_p90: float | None = None
    clip_rate: float | None = None
    learning_rate: float | None = None
    fairness_gap: float | None = None
    epoch_seconds: float | None = None
    # epoch -> non-finite steps of that epoch; an epoch replayed after a resume overwrites, never adds
    nonfinite_by_epoch: dict[float, float] = field(default_factory=dict)
    # evaluations
    evaluations: int = 0
    evaluated_epochs: set[float] = field(default_factory=set)
    mean_epe: float | None = None
    std_epe: float | None = None
    median_epe: float | None = None
    p90_epe: float | None = None
    best_epe: float | None = None
    best_epoch: float | None = None
    bad_epochs: float | None = None
    arch_epe: dict[str, float] = field(default_factory=dict)
    epe_rising: int = 0
    # a ranking or a search (RUN/rank|search/<name>/events.jsonl): archs evaluated of the target
    search_evaluations: float | None = None
    search_target: float | None = None
    search_best_epe: float | None = None
    search_front_size: float | None = None
    events: int = 0

    @property
    def nonfinite_steps(self) -> float | None:
        if not self.nonfinite_by_epoch:
            return None
        return float(sum(self.nonfinite_by_epoch.values()))

    @property
    def ended(self) -> bool:
        return self.status in END_STATUSES

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state. Unknown events and fields are ignored (design §2)."""
        kind = event.get("event")
        when = as_float(event.get("time"))
        if when is not None and not math.isfinite(when):
            when = None
        self.events += 1
        if isinstance(event.get("experiment"), str) and event["experiment"]:
            self.experiment = event["experiment"]
        if event.get("job_id") not in (None, ""):
            self.job_id = str(event["job_id"])
        if when is not None:
            self.last_event_time = when if self.last_event_time is None else max(self.last_event_time, when)
            if kind in PROGRESS_EVENTS:
                self.last_progress_time = (
                    when if self.last_progress_time is None else max(self.last_progress_time, when))
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(self, event, when)

    def apply_run_json(self, run: dict[str, Any]) -> None:
        """run.json fills what the events have not told (e.g. events.jsonl not written yet)."""
        if self.experiment is None and isinstance(run.get("experiment"), str):
            self.experiment = run["experiment"]
        job_ids = run.get("job_ids")
        if self.job_id is None:
            if isinstance(job_ids, list) and job_ids:
                self.job_id = str(job_ids[-1])
            elif run.get("job_id") not in (None, ""):
                self.job_id = str(run["job_id"])
        if self.status is None and run.get("status") in RUN_STATUSES:
            self.status = run["status"]
        for key in ("train_samples", "val_samples"):
            if getattr(self, key) is None:
                setattr(self, key, as_float(run.get(key)))

    def apply_state_json(self, state: dict[str, Any]) -> None:
        """state.json (written each epoch) fills values the events have not reported."""
        pairs = (("epoch", "epoch"), ("step", "step"), ("best_epoch", "best_epoch"),
                 ("bad_epochs", "bad_epochs"), ("bad_epochs", "bad_count"), ("patience", "patience"),
                 ("best_epe", "best_epe"), ("best_epe", "best_metric"), ("fairness_gap", "fairness_gap"))
        for attr, key in pairs:
            if getattr(self, attr) is None and key in state:
                setattr(self, attr, as_float(state.get(key)))


def _run_start(s: RunState, e: dict[str, Any], when: float | None) -> None:
    s.run_starts += 1
    s.status = "running"
    s.end_reason = None
    s.end_time = None
    s.run_start_time = when
    for key in ("train_samples", "val_samples", "num_epochs", "patience", "replicas"):
        value = as_float(e.get(key))
        if value is not None:
            setattr(s, key, value)
    start_epoch = as_float(e.get("start_epoch"))
    if start_epoch is not None and s.epoch is None:
        s.epoch = start_epoch


def _heartbeat(s: RunState, e: dict[str, Any], when: float | None) -> None:
    _set(s, e, ("epoch", "epoch"), ("step", "step"), ("samples_per_second", "samples_per_second"),
         ("replicas", "replicas"))


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
    _set(s, e, ("epoch", "epoch"), ("step", "step"), ("learning_rate", "lr"), ("train_loss", "train_loss"),
         ("grad_norm", "grad_norm"), ("grad_norm_p90", "grad_norm_p90"), ("clip_rate", "clip_rate"),
         ("fairness_gap", "fairness_gap"), ("epoch_seconds", "epoch_seconds"),
         ("samples_per_second", "samples_per_second"))
    nonfinite = as_float(e.get("nonfinite_steps"))
    if nonfinite is not None:
        epoch = as_float(e.get("epoch"))
        s.nonfinite_by_epoch[epoch if epoch is not None else -s.epochs_completed] = nonfinite


def _eval(s: RunState, e: dict[str, Any], when: float | None) -> None:
    previous = s.mean_epe
    if _first_time(s.evaluated_epochs, e):
        s.evaluations += 1
    _set(s, e, ("epoch", "epoch"), ("mean_epe", "mean_epe"), ("std_epe", "std_epe"),
         ("median_epe", "median_epe"), ("p90_epe", "p90_epe"), ("best_epe", "best_epe"),
         ("best_epoch", "best_epoch"), ("bad_epochs", "bad_epochs"), ("patience", "patience"))
    arch = e.get("arch_epe")
    if isinstance(arch, dict):
        s.arch_epe = {str(k): v for k, v in ((k, as_float(v)) for k, v in arch.items()) if v is not None}
    # Consecutive evaluations whose mean EPE rose: a trend the alert rule cannot see from gauges alone.
    current = s.mean_epe
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
    _set(s, e, ("search_evaluations", "evaluations"), ("search_target", "target"),
         ("search_best_epe", "best_epe"), ("search_front_size", "front_size"))


def _checkpoint(s: RunState, e: dict[str, Any], when: float | None) -> None:
    if when is not None:
        s.last_checkpoint_time = when


def _run_end(s: RunState, e: dict[str, Any], when: float | None) -> None:
    status = e.get("status")
    s.status = status if status in RUN_STATUSES else "failed"
    s.end_reason = e.get("reason") if isinstance(e.get("reason"), str) else None
    s.end_time = when


def _set(s: RunState, e: dict[str, Any], *pairs: tuple[str, str]) -> None:
    for attr, key in pairs:
        if key in e:
            value = as_float(e[key])
            if value is not None:
                setattr(s, attr, value)


_HANDLERS = {"run_start": _run_start, "heartbeat": _heartbeat, "epoch": _epoch, "eval": _eval,
             "checkpoint": _checkpoint, "run_end": _run_end, "search": _search}
