"""The run directory: the one contract between trainer, launcher and monitor (docs/design.md).

Light package (no TensorFlow). Everything that names, writes or reads a file of a run directory, an
event, an exit code or a status is defined here once; the trainer, the launcher and the monitor all
go through it. `from edgeflow import rundir` gives the whole contract.
"""

from edgeflow.rundir.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    fsync_file,
    read_json,
)
from edgeflow.rundir.codes import (
    END_STATUSES,
    EXIT_BAD_INPUT,
    EXIT_CODE_MEANING,
    EXIT_DATA_ERROR,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_SUBMIT_FAILED,
    REQUEUE_EXIT_CODES,
    RUN_STATUSES,
    STATUS_EXIT_CODE,
)
from edgeflow.rundir.events import (
    EVENT_FIELDS,
    EVENT_TYPES,
    EventLog,
    EventSchemaError,
    NullEventLog,
    last_event,
    parse_event_line,
    parse_event_lines,
    read_events,
)
from edgeflow.rundir.jsonsafe import as_float, clean_text, json_safe, to_json
from edgeflow.rundir.lock import RunLock, RunLocked
from edgeflow.rundir.metrics_file import METRICS_COLUMNS, metrics_csv, metrics_rows
from edgeflow.rundir.paths import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    FLOW_SAMPLES_FILE,
    JOBS_DIR,
    METRICS_FILE,
    RUN_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    RunPaths,
    foreign_folder,
    hostname,
)
from edgeflow.rundir.runfiles import (
    RUN_FIELDS,
    STATE_FIELDS,
    read_run,
    read_state,
    record_end,
    update_run,
    write_run_start,
    write_state,
)

__all__ = [
    "CHECKPOINT_DIR", "CONFIG_FILE", "END_STATUSES", "EVENTS_FILE", "EVENT_FIELDS", "EVENT_TYPES",
    "EXIT_BAD_INPUT", "EXIT_CODE_MEANING", "EXIT_DATA_ERROR", "EXIT_DIVERGED", "EXIT_FAILED", "EXIT_OK",
    "EXIT_PREEMPTED", "EXIT_SUBMIT_FAILED", "FLOW_SAMPLES_FILE", "JOBS_DIR", "METRICS_COLUMNS", "METRICS_FILE",
    "REQUEUE_EXIT_CODES",
    "RUN_FIELDS", "RUN_FILE", "RUN_STATUSES", "STATE_FIELDS", "STATE_FILE", "STATUS_EXIT_CODE",
    "TENSORBOARD_DIR", "EventLog", "RunLock", "RunLocked", "EventSchemaError",
    "NullEventLog", "RunPaths", "as_float", "atomic_write_bytes",
    "atomic_write_json", "atomic_write_text", "clean_text", "fsync_dir", "fsync_file", "hostname",
    "json_safe", "last_event", "metrics_csv", "metrics_rows", "parse_event_line", "parse_event_lines",
    "read_events", "read_json", "read_run", "read_state", "record_end", "foreign_folder", "to_json",
    "update_run", "write_run_start", "write_state",
]
