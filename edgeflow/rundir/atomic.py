"""Atomic file writes: temporary file in the same folder, flush, fsync, rename, fsync the folder.

Files get the mode the process umask allows (0666 & ~umask) like any file `open` creates: a
node_exporter textfile collector or a shared project folder must be able to read them. A temporary's
name carries its writer's host and PID (`.NAME.HOST-PID-TOKEN.tmp`): the next write of NAME removes
those a killed writer left.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import edgeflow.rundir.writers as writers
from edgeflow.rundir.jsonsafe import to_json

TEMP_SUFFIX = ".tmp"


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


def temp_path(path: Path) -> Path:
    """`.NAME.HOST-PID-TOKEN.tmp` beside `path`, for this process."""
    return path.with_name(f".{path.name}.{writers.tag()}{TEMP_SUFFIX}")


def remove_dead_temps(path: Path) -> list[Path]:
    """The temporaries of `path` that writers killed mid-write left (this host's dead processes)."""
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        entries = [e.name for e in os.scandir(path.parent)]
    except OSError:
        return removed
    for name in entries:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX) and \
                writers.dead_here(name[len(prefix):-len(TEMP_SUFFIX)]):
            (path.parent / name).unlink(missing_ok=True)
            removed.append(path.parent / name)
    return removed


def new_temp_file(path: Path) -> tuple[int, Path]:
    """A new temporary beside `path`, opened for writing, with the mode the umask allows (as any new
    file: not tempfile's 0600); what killed writers of `path` left is removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path)
    tmp = temp_path(path)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
