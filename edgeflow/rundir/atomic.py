"""Atomic file writes: temporary file in the same folder, flush, fsync, rename, fsync the folder.

Files get the mode the process umask allows (0666 & ~umask) like any file `open` creates: a
node_exporter textfile collector or a shared project folder must be able to read them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgeflow.rundir.jsonsafe import to_json


def _umask() -> int:
    # Linux shows it in /proc; os.umask can only read it by setting it, and for that instant a file
    # another thread (TensorFlow's) creates would get mode 0666.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode(requested: int = 0o666) -> int:
    """The mode `open` or `mkdir` would give a new file (0o666) or folder (0o777) under the umask."""
    return requested & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), new_file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in `path` durable; a filesystem that cannot is not an error."""
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


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file written atomically; None when it does not exist yet. Invalid JSON raises ValueError."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a file of this kit") from None
