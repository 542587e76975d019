"""Follow an append-only events.jsonl robustly.

The trainer appends whole lines, but a reader can still see a line half-written (NFS, a writer killed
mid-line), a file truncated or recreated by hand, or garbage. None of that is fatal: a partial last line
waits for its end, a truncated or replaced file is read again from its start (the caller rebuilds its
state), malformed lines are counted and skipped.

Only regular files are ever opened: a FIFO named events.jsonl would block the open until a writer comes
(and with it every run the sidecar follows), a device may act on being opened. Such a file is an OSError
naming what it is, which the caller reports and retries like any unreadable file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.rundir import parse_event_lines

# Bytes of the file's head remembered to notice a rewrite that keeps the inode and grows past our offset.
HEAD_BYTES = 128
CHUNK_BYTES = 4 << 20
# A "line" longer than this without a newline is garbage (e.g. a binary file), not a line being written.
MAX_LINE_BYTES = 16 << 20


class NotRegularFile(OSError):
    """A run file that is a FIFO, a device, a socket or a folder: never opened for reading."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise NotRegularFile(f"not a regular file ({kind})")


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of `path` if it is a regular file (symlinks followed), else NotRegularFile.

    Looked at before the open, and opened non-blocking and checked again: a FIFO put in its place
    between the two is never waited for.
    """
    _check_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check_regular(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, limit: int = MAX_LINE_BYTES) -> bytes:
    """The whole content of a regular file of at most `limit` bytes (run.json, state.json)."""
    fd = open_regular(path)
    try:
        chunks, size = [], 0
        while chunk := os.read(fd, min(CHUNK_BYTES, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass
class TailResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    malformed: int = 0
    # True when the file was truncated, replaced or deleted: earlier events no longer count.
    reset: bool = False
    mtime: float | None = None  # the file's modification time when read (the file server's clock)


class EventTail:
    """Incremental reader of one events.jsonl; `read()` returns what was appended since the last call."""

    def __init__(self, path: str | Path, max_line: int = MAX_LINE_BYTES) -> None:
        self.path = Path(path)
        self.max_line = max_line
        self.offset = 0          # bytes consumed, including the pending fragment
        self.pending = b""       # a last line without its newline yet
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file being read
        self.head = b""
        self.malformed_total = 0
        self.lines_total = 0

    @property
    def exists(self) -> bool:
        return self.identity is not None

    def _restart(self) -> None:
        self.offset = 0
        self.pending = b""
        self.identity = None
        self.head = b""
        self.malformed_total = 0

    def read(self) -> TailResult:
        result = TailResult()
        try:
            fd = open_regular(self.path)
        except (FileNotFoundError, NotADirectoryError):
            if self.identity is not None:
                # The file went away: what we derived from it no longer describes the run directory.
                self._restart()
                result.reset = True
            return result
        try:
            st = os.fstat(fd)
            result.mtime = st.st_mtime
            identity = (st.st_dev, st.st_ino)
            if self.identity is not None and (
                identity != self.identity or st.st_size < self.offset or not self._same_head(fd, st.st_size)
            ):
                self._restart()
                result.reset = True
            self.identity = identity
            if st.st_size > self.offset:
                self._consume(fd, result)
            if len(self.head) < HEAD_BYTES and st.st_size > len(self.head):
                self.head = os.pread(fd, HEAD_BYTES, 0)
        finally:
            os.close(fd)
        return result

    def _same_head(self, fd: int, size: int) -> bool:
        if not self.head:
            return True
        return os.pread(fd, len(self.head), 0) == self.head

    def _consume(self, fd: int, result: TailResult) -> None:
        while True:
            chunk = os.pread(fd, CHUNK_BYTES, self.offset)
            if not chunk:
                return
            self.offset += len(chunk)
            data = self.pending + chunk
            events, used, malformed = parse_event_lines(data)
            self.pending = data[used:]
            if len(self.pending) > self.max_line:
                # Drop it instead of buffering without bound; its tail ends up as one more malformed line.
                self.pending = b""
                result.malformed += 1
                self.malformed_total += 1
            lines = data[:used].count(b"\n")
            result.events.extend(events)
            result.lines += lines
            result.malformed += malformed
            self.lines_total += lines
            self.malformed_total += malformed
