"""events.jsonl: the event schemas, the append-only writer that checks them, and tolerant readers.

Every event has `event`, `time` (Unix seconds), `experiment` and, where known, `job_id`, then the
fields of its row in EVENT_FIELDS (in that order), then documented extras. Readers ignore unknown
fields, skip (and count) malformed lines once each, and leave a partial last line for a later read.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeflow.rundir.jsonsafe import as_float, to_json

# The fields each event must carry beyond the common ones. Extras written today:
#   run_start: zero_flow_epe, warm_start_from, init_from, early_stop_reset, previous_num_epochs,
#              data (sample-set record), data_change, replicas, hosts, excluded_on_purpose
#   heartbeat: replicas
#   epoch:     grad_norm_p50, grad_norm_p99, clip_count, overflow_steps, loss_scale, epoch_wall_seconds
#   eval:      bn_mode, split (the split selected on), splits (the other splits' figures by name)
#   checkpoint: batch_in_epoch
#   search:    element (the writer's job id), shard, archs_per_minute, generation, new_evaluations
#   run_end:   source ("launcher" when the launcher wrote it), exit_code
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "run_start": ("train_samples", "val_samples", "resumed_from", "start_epoch", "num_epochs", "patience"),
    "heartbeat": ("epoch", "step", "samples_per_second"),
    "epoch": ("epoch", "step", "lr", "train_loss", "grad_norm", "grad_norm_p90", "clip_rate", "fairness_gap",
              "nonfinite_steps", "epoch_seconds", "samples_per_second"),
    "eval": ("epoch", "mean_epe", "std_epe", "median_epe", "p90_epe", "arch_epe", "best_epe", "best_epoch",
             "bad_epochs", "patience", "improved"),
    "checkpoint": ("epoch", "kind", "path"),
    "run_end": ("status", "reason"),
    # progress of a ranking or a search (`kind` rank|search), in RUN/rank|search/<name>/events.jsonl
    "search": ("kind", "name", "evaluations", "target", "best_epe", "front_size"),
}
EVENT_TYPES = tuple(EVENT_FIELDS)
COMMON_FIELDS = ("event", "time", "experiment", "job_id")


class EventSchemaError(ValueError):
    """An event the writer refuses: unknown type or a required field missing."""


def build_event(event: str, experiment: str, job_id: str | None, fields: dict[str, Any],
                now: float | None = None) -> dict[str, Any]:
    """The record as written: common fields, the schema's fields in table order, then extras."""
    names = EVENT_FIELDS.get(event)
    if names is None:
        raise EventSchemaError(f"unknown event type {event!r}; known: {', '.join(EVENT_TYPES)}")
    missing = [n for n in names if n not in fields]
    if missing:
        raise EventSchemaError(f"{event} event is missing fields {missing}")
    record: dict[str, Any] = {"event": event, "time": time.time() if now is None else now,
                              "experiment": experiment}
    if job_id:
        record["job_id"] = job_id
    record.update({n: fields[n] for n in names})
    record.update({k: v for k, v in fields.items() if k not in names and k not in COMMON_FIELDS})
    return record


class EventLog:
    """Append-only writer of events.jsonl; one complete line per write, fsynced."""

    def __init__(self, path: str | Path, experiment: str, job_id: str | None = None) -> None:
        self.path = Path(path)
        self.experiment = experiment
        self.job_id = job_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_partial_tail()

    def _repair_partial_tail(self) -> None:
        # A writer killed mid-line leaves a fragment; terminate it so our first line stays parseable.
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                last = fh.read(1)
        except FileNotFoundError:
            return
        if last != b"\n":
            with open(self.path, "ab") as fh:
                fh.write(b"\n")

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = build_event(event, self.experiment, self.job_id, fields)
        line = (to_json(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return json.loads(line)


class NullEventLog(EventLog):
    """The events of a trainer that is not the chief of a multi-worker job: checked, never written."""

    def __init__(self, experiment: str, job_id: str | None = None) -> None:
        self.experiment = experiment
        self.job_id = job_id

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        return json.loads(to_json(build_event(event, self.experiment, self.job_id, fields)))


def parse_event_line(raw: bytes) -> dict[str, Any] | None:
    """One line as an event, or None when it is not one (any garbage, any depth, any bytes)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        return None
    return obj


def parse_event_lines(data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """Parse the complete lines of `data`: (events, bytes consumed, malformed line count).

    Lines end at b"\\n" only (a stray \\r or form feed inside a line does not split it, so a bad line
    counts once). A trailing fragment without a newline is not consumed: a later write completes it.
    """
    events: list[dict[str, Any]] = []
    malformed = 0
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n"):
        if not raw.strip():
            continue
        obj = parse_event_line(raw)
        if obj is None:
            malformed += 1
        else:
            events.append(obj)
    return events, end, malformed


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete, well-formed event of a run; malformed lines and a partial tail are skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return iter(())
    events, _, _ = parse_event_lines(data)
    return iter(events)


def last_event(path: str | Path, kind: str, since: float = 0.0) -> dict[str, Any] | None:
    """The last event of `kind` written at or after `since` (Unix seconds), if any."""
    if kind not in EVENT_FIELDS:
        raise EventSchemaError(f"unknown event type {kind!r}")
    found = None
    for ev in read_events(path):
        if ev.get("event") == kind and _time(ev) >= since:
            found = ev
    return found


def _time(ev: dict[str, Any]) -> float:
    value = as_float(ev.get("time"))
    return value if value is not None and math.isfinite(value) else 0.0
