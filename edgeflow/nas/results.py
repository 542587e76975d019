"""The results file of a ranking or a search: one CSV line per evaluated arch, shared by writers.

Several processes (the elements of a job array, a search and a ranking) may append to the same file at
the same time, and any of them may be killed at any moment. So:

- the header is put in place once, by linking a complete temporary file to the name (never replaced);
- a result is one complete line written with a single `write` on an O_APPEND descriptor, then fsynced,
  under an exclusive lock (`flock`): the check for a fragment left by a killed writer must not see
  another writer's line half-copied (the kernel makes a page of it visible before the rest);
- each line ends with a CRC32 of its other fields: the reader skips a line that is torn, interleaved or
  half-written (and the arch is evaluated again), never misreads one;
- every line carries the key of what it measured (checkpoint digest and protocol id): a reader only
  takes the lines of the key it asks for, so results of two checkpoints are never mixed.

Light module (no TensorFlow).
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.rundir.atomic import new_temp_file, remove_dead_temps
from edgeflow.space.arch import format_arch

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"

# code; EPE statistics over the eval batches; the analytic costs; timings; the key; who wrote it.
COLUMNS = ("code", "epe_mean", "epe_median", "epe_p90", "eval_batches", "params", "flops", "latency_ms",
           "recal_seconds", "eval_seconds", "checkpoint", "checkpoint_digest", "protocol", "writer", "time",
           "crc")
FLOAT_COLUMNS = ("epe_mean", "epe_median", "epe_p90", "latency_ms", "recal_seconds", "eval_seconds", "time")
INT_COLUMNS = ("eval_batches", "params", "flops")


@dataclass(frozen=True)
class Key:
    """What a result was measured with: the checkpoint's files and the evaluation protocol."""

    checkpoint: str         # e.g. "best-000004"
    checkpoint_digest: str  # sha256 of the checkpoint's files (first 16 hex digits)
    protocol: str           # id of the evaluation protocol (first 12 hex digits of its sha256)

    def matches(self, row: dict[str, Any]) -> bool:
        return row.get("checkpoint_digest") == self.checkpoint_digest and row.get("protocol") == self.protocol


_SEP = "\x1f"


def _crc(fields: Iterable[str]) -> str:
    return f"{zlib.crc32(_SEP.join(fields).encode('utf-8')):08x}"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def format_line(row: dict[str, Any]) -> str:
    fields = [_format(row[c]) for c in COLUMNS[:-1]]
    fields.append(_crc(fields))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def parse_line(fields: list[str]) -> dict[str, Any] | None:
    """One row from its CSV fields, or None when the line is not a complete, intact row."""
    if len(fields) != len(COLUMNS) or _crc(fields[:-1]) != fields[-1]:
        return None
    row: dict[str, Any] = dict(zip(COLUMNS, fields, strict=True))
    try:
        row["code"] = format_arch(row["code"])
        for c in FLOAT_COLUMNS:
            row[c] = float(row[c])
        for c in INT_COLUMNS:
            row[c] = int(row[c])
    except ValueError:
        return None
    del row["crc"]
    return row


def _header_text() -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(COLUMNS)
    return buf.getvalue()


def ensure_file(path: Path) -> None:
    """Create the results file with its header unless it exists; safe against concurrent creators."""
    remove_dead_temps(path)  # what a creator killed between its link and its unlink left
    if path.exists():
        return
    # Like every file of a run, with the mode the umask allows (not tempfile's 0600), so a shared
    # project folder's group can read the ranking (design §2).
    fd, tmp = new_temp_file(path)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(_header_text())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic and never replaces: the first creator wins, the others see it
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def append(path: Path, row: dict[str, Any]) -> None:
    """Append one complete result line (single write, O_APPEND, fsync, under an exclusive lock)."""
    ensure_file(path)
    append_line(path, format_line(row).encode("utf-8"))


def append_line(path: Path, line: bytes) -> None:
    """Append one complete line to `path` (created when missing) as `append` does: one write under an
    exclusive lock, after ending a fragment a killed writer left, then fsync."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        # Every read below goes through this descriptor: closing another one would drop a POSIX lock.
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel when the writer is killed
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # a writer killed mid-line left a fragment: end it, so this line stays intact
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(path: Path, key: Key | None = None) -> list[dict[str, Any]]:
    """The intact rows of a results file (all keys, or only `key`'s), first result of a code kept."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for fields in csv.reader(io.StringIO(text)):
        row = parse_line(fields) if fields and fields[0] != "code" else None
        if row is None or (key is not None and not key.matches(row)):
            continue
        rows.setdefault(row["code"], row)
    return list(rows.values())


def read_many(paths: Iterable[Path], key: Key) -> dict[str, dict[str, Any]]:
    """Rows of `key` from several results files, by code (the first file naming a code wins)."""
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        for row in read_rows(path, key):
            found.setdefault(row["code"], row)
    return found


class Tail:
    """New intact rows of a results file since the last call (the other writers' results, cheaply)."""

    def __init__(self, path: Path, key: Key) -> None:
        self.path, self.key, self.offset = path, key, 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written is left for the next call
        self.offset += end
        rows = []
        for fields in csv.reader(io.StringIO(data[:end].decode("utf-8", errors="replace"))):
            row = parse_line(fields) if fields and fields[0] != "code" else None
            if row is not None and self.key.matches(row):
                rows.append(row)
        return rows
