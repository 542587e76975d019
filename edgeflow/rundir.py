"""The run directory: the contract between trainer, launcher and monitor (DESIGN §2).

Light module: no TensorFlow. The trainer writes these files, the launcher and the monitor read them.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Trainer exit codes; the launcher decides on requeue from these.
EXIT_OK = 0            # completed or early_stopped
EXIT_FAILED = 1        # an unexpected error; see run_end.reason
EXIT_BAD_INPUT = 2     # bad config or data: nothing to retry until a human fixes it
EXIT_DIVERGED = 3      # too many consecutive non-finite steps
EXIT_PREEMPTED = 75    # SIGTERM/SIGUSR2: checkpoint written, resume by running again (EX_TEMPFAIL)

RUN_STATUSES = ("running", "completed", "early_stopped", "diverged", "failed", "preempted", "timeout")
END_STATUSES = RUN_STATUSES[1:]

EVENT_TYPES = ("run_start", "heartbeat", "epoch", "eval", "checkpoint", "run_end")

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
JOBS_DIR = "jobs"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def run(self) -> Path:
        return self.root / RUN_FILE

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def jobs(self) -> Path:
        return self.root / JOBS_DIR


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, flush, fsync, rename (DESIGN §2)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """Read a JSON file written atomically; None when it does not exist yet."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def slurm_job_id() -> str | None:
    """The job id as SLURM shows it in squeue (array elements as JOB_TASK)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("EDGEFLOW_JOB_ID") or None


def hostname() -> str:
    return socket.gethostname()


def _json_safe(value: Any) -> Any:
    """Non-finite floats become strings: JSON has no NaN and readers must not choke on one."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


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
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}")
        record: dict[str, Any] = {"event": event, "time": time.time(), "experiment": self.experiment}
        if self.job_id:
            record["job_id"] = self.job_id
        record.update(_json_safe(fields))
        line = (json.dumps(record, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return record


def parse_event_lines(data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """Parse complete lines of `data`.

    Returns (events, bytes consumed, malformed line count). A trailing fragment without a newline is
    not consumed: it is completed by a later write.
    """
    events: list[dict[str, Any]] = []
    malformed = 0
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            malformed += 1
            continue
        if not isinstance(obj, dict) or "event" not in obj:
            malformed += 1
            continue
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
