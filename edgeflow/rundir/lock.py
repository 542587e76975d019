"""One trainer per run directory: a lock held for the trainer's whole life.

`flock` on `<run>/.lock`, taken before the start files are written and released when the process
ends (a killed trainer releases it too: the kernel drops the lock with the process). A second trainer
started on the same experiment is refused, naming the holder from the lock file's content. flock works
across nodes on NFSv4, Lustre (mounted with `flock`) and GPFS; where a file system ignores it, the
launcher's busy check still refuses a second queued job.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from edgeflow.rundir.paths import LOCK_FILE, hostname


class RunLocked(RuntimeError):
    """Another process holds the run directory; the message names it."""


class RunLock:
    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by {holder}; two trainers must not share a run "
                            f"directory: wait for it, stop it, or choose another runtime.experiment_name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {hostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
