"""Watchdog observers: wake the sidecar when a run directory changes.

inotify sees only writes made through this kernel; on shared filesystems (NFS, Lustre, GPFS, ...) the
trainer writes from another node, so there the sidecar polls (design §3). `auto` decides from the
filesystem type of the watched path in /proc/mounts.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from edgeflow.console import console_logger

log = console_logger("monitor", "monitor: %(message)s")  # stderr: stdout is for --print

OBSERVER_KINDS = ("auto", "inotify", "polling")

# Filesystem types whose writes from other hosts never reach local inotify.
NETWORK_FS_TYPES = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "ceph", "fuse.ceph", "fuse.cephfs",
    "glusterfs", "fuse.glusterfs", "beegfs", "panfs", "afs", "9p", "wekafs", "fuse.sshfs", "orangefs",
    "pvfs2", "ocfs2", "gfs2", "fuse.gcsfuse", "fuse.s3fs", "davfs", "fuse.juicefs", "fuse.weka",
})

# Only changes wake the sidecar: reacting to "opened"/"closed_no_write" would loop on our own reads.
WAKE_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent,
]


def _unescape_mount_field(text: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def existing_ancestor(path: str | Path) -> Path:
    """The path itself or its nearest existing parent (the run directory may not exist yet)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def filesystem_type(path: str | Path, mounts: str | Path = "/proc/mounts") -> str | None:
    """Type of the filesystem holding `path` (longest matching mount point), None if unknown."""
    # realpath resolves symlinks of the existing prefix and keeps the not-yet-created rest.
    target = os.path.realpath(os.path.abspath(path))
    best, best_type = "", None
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point, fs_type = _unescape_mount_field(parts[1]), parts[2]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fs_type
    return best_type


def is_network_fs(fs_type: str | None) -> bool:
    if fs_type is None:
        return False
    return fs_type in NETWORK_FS_TYPES or fs_type.split(".")[0] in NETWORK_FS_TYPES


def choose_observer(kind: str, paths: Iterable[str | Path], mounts: str | Path = "/proc/mounts") -> str:
    """Resolve `auto`: polling when any watched path is on a network filesystem, else inotify."""
    if kind not in OBSERVER_KINDS:
        raise ValueError(f"observer must be one of {', '.join(OBSERVER_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    if not sys.platform.startswith("linux"):
        return "polling"
    return "polling" if any(is_network_fs(filesystem_type(p, mounts)) for p in paths) else "inotify"


def make_observer(kind: str, poll_interval: float) -> BaseObserver:
    if kind == "polling":
        return PollingObserver(timeout=poll_interval)
    if kind == "inotify":
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver()
    raise ValueError(f"cannot build observer {kind!r}")


class WakeHandler(FileSystemEventHandler):
    """Sets an Event on any change, except under `ignore` (our own textfile output)."""

    def __init__(self, wake: threading.Event, ignore: Iterable[Path] = ()) -> None:
        self.wake = wake
        self.ignore = tuple(str(Path(p).resolve()) for p in ignore)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "attrib"):
            return
        src = os.fsdecode(event.src_path)
        if self.ignore and any(src == p or src.startswith(p + os.sep) for p in self.ignore):
            return
        self.wake.set()


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class Watches:
    """Keeps a watch on each target, or on its nearest existing ancestor until the target appears."""

    def __init__(self, observer: BaseObserver, handler: WakeHandler) -> None:
        self.observer = observer
        self.handler = handler
        self._watches: dict[tuple[Path, bool], ObservedWatch] = {}
        self._inodes: dict[tuple[Path, bool], int | None] = {}
        self._reported: set[tuple[Path, bool]] = set()

    def update(self, targets: dict[Path, bool]) -> None:
        """targets: path -> recursive. Re-points watches whose target (dis)appeared; drops stale ones."""
        desired = set()
        for target, recursive in targets.items():
            where = target if target.is_dir() else existing_ancestor(target)
            desired.add((where, recursive and where == target))
        for key in list(self._watches):
            # A folder deleted and recreated between two updates has a dead watch: schedule it again.
            if key not in desired or self._inodes.get(key) != _inode(key[0]):
                try:
                    self.observer.unschedule(self._watches.pop(key))
                except KeyError:
                    pass
        for key in desired - set(self._watches):
            try:
                self._inodes[key] = _inode(key[0])
                self._watches[key] = self.observer.schedule(
                    self.handler, str(key[0]), recursive=key[1], event_filter=WAKE_EVENTS)
            except OSError as exc:
                # Vanished meanwhile, or out of inotify watches: the periodic rescan still reads the files.
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("cannot watch %s: %s; relying on --rescan-interval", key[0], exc)
                continue

    @property
    def watched(self) -> list[Path]:
        return [where for where, _ in self._watches]
