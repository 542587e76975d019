"""Folders written whole (an export, an imported run): built under a hidden name beside their target,
published in one atomic step, and whatever a killed writer left behind removed by the next writer.

- The hidden folder is `.NAME.KIND-HOST-PID-TOKEN` beside the target `NAME`. Host and PID say whose it
  is: a later writer removes only those of dead processes on its own host (a writer on another node of
  a shared file system may be alive; its leftovers wait for a writer there). Names of older versions,
  `.NAME.KIND-PID`, count as this host's.
- Publishing is one `rename` onto an absent target (or an empty folder) or one swap of a symbolic link
  that points at a hidden version beside it; nothing else ever replaces or deletes the target.
- SIGTERM inside `staged` raises `Interrupted`, as Ctrl-C raises KeyboardInterrupt, so the folder is
  removed before the process ends; after SIGKILL the next writer removes it.

Light module (no TensorFlow).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import edgeflow.rundir.writers as writers
from edgeflow.rundir.atomic import fsync_dir, fsync_file, new_file_mode


class Interrupted(BaseException):  # noqa: N818 -- like KeyboardInterrupt, not caught by `except Exception`
    """SIGTERM arrived while a staged folder was being written; it has been removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-"


def hidden_name(target: Path, kind: str) -> str:
    """A fresh `.NAME.KIND-HOST-PID-TOKEN` for this process."""
    return f"{_prefix(target, kind)}{writers.tag()}"


def linked_version(target: Path, kind: str) -> str | None:
    """The hidden version `target` points at when it is a link this module made, else None."""
    if not target.is_symlink():
        return None
    name = os.readlink(target)
    return name if os.sep not in name and name.startswith(_prefix(target, kind)) else None


def leftovers(target: Path, kinds: tuple[str, ...]) -> list[Path]:
    """Hidden folders (or links) beside `target` of dead writers on this host; never the linked version."""
    parent = target.parent
    if not parent.is_dir():
        return []
    keep = {linked_version(target, kind) for kind in kinds} - {None}
    found = []
    for entry in os.scandir(parent):
        for kind in kinds:
            prefix = _prefix(target, kind)
            if entry.name.startswith(prefix) and entry.name not in keep and writers.dead_here(entry.name[len(prefix):]):
                found.append(parent / entry.name)
    return sorted(found)


def remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(target: Path, kinds: tuple[str, ...]) -> list[Path]:
    found = leftovers(target, kinds)
    for path in found:
        remove(path)
    return found


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def staged(target: Path, kind: str, *, cleanup: tuple[str, ...] = ()) -> Iterator[Path]:
    """A new hidden folder beside `target` (dead writers' leftovers of `kind` and `cleanup` kinds removed
    first). Unless the body published it, it is removed when the body ends, by an exception, Ctrl-C or
    SIGTERM (raised as `Interrupted`) included."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target, (kind, *cleanup))
    folder = target.parent / hidden_name(target, kind)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        folder.mkdir()
        yield folder
    finally:
        try:
            # Published by a rename, it is gone from here; by a link swap, the link names it.
            if os.path.lexists(folder) and linked_version(target, kind) != folder.name:
                remove(folder)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def settle(folder: Path) -> None:
    """Make a finished folder durable and give what other writers (TensorFlow) made in it the modes the
    umask allows: TensorFlow creates its folders 0755 whatever the umask."""
    dir_mode, file_mode = new_file_mode(0o777), new_file_mode(0o666)
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                if stat.S_IMODE(st.st_mode) != file_mode:
                    os.chmod(path, file_mode)
                fsync_file(path)
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path) and stat.S_IMODE(os.lstat(path).st_mode) != dir_mode:
                os.chmod(path, dir_mode)
        fsync_dir(root)


def publish_rename(folder: Path, target: Path) -> None:
    """`folder` becomes `target` (absent, or an empty folder) with one rename."""
    os.rename(folder, target)
    fsync_dir(target.parent)


def publish_link(folder: Path, target: Path, kind: str) -> None:
    """Point `target` at `folder` (a hidden sibling) with one atomic link swap; the version it pointed at
    before is removed after. `target` must be absent or a link of ours (FileExistsError otherwise)."""
    old = linked_version(target, kind)
    if old is None and os.path.lexists(target):
        raise FileExistsError(f"{target} appeared while it was being written and is not ours; left alone")
    link = target.parent / hidden_name(target, kind)
    os.symlink(folder.name, link)
    try:
        os.replace(link, target)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    if old is not None and old != folder.name:
        remove(target.parent / old)
