"""`python -m jobs logs RUN_DIR_OR_JOB_ID [-f]`: the trainer's log across requeues, and following it.

The trainer writes to its job's standard output, which submitit keeps in `<run>/jobs/<job>_0_log.out`
(a requeue with a new job id starts a new file; a sweep element's files are links into the sweep
folder). `submit --wait` follows the same files while it waits.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edgeflow import rundir

from .records import submissions


def log_files(run_dir: Path, stream: str = "out") -> list[Path]:
    """The run's job logs (`out` or `err`), oldest first: those of submissions.json, then any other."""
    suffix = f"_log.{stream}"
    found: list[Path] = []
    for record in submissions(run_dir):
        path = record.get("stdout" if stream == "out" else "stderr")
        if path:
            found.append(Path(path))
    found += list((Path(run_dir) / rundir.JOBS_DIR).glob(f"*{suffix}"))
    unique: dict[str, Path] = {}
    for path in found:
        if path.exists():
            unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values(), key=lambda p: (p.stat().st_mtime, p.name))


class Follower:
    """New complete lines of a run's job logs since the last poll (files that appear are picked up)."""

    def __init__(self, run_dir: Path, stream: str = "out", from_start: bool = True) -> None:
        self.run_dir, self.stream = Path(run_dir), stream
        self.offsets: dict[str, int] = {}
        if not from_start:
            for path in log_files(self.run_dir, stream):
                self.offsets[os.path.realpath(path)] = path.stat().st_size

    def poll(self) -> list[tuple[Path, str]]:
        lines: list[tuple[Path, str]] = []
        for path in log_files(self.run_dir, self.stream):
            key = os.path.realpath(path)
            start = self.offsets.get(key, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    data = fh.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a partial last line waits for its end
            self.offsets[key] = start + end
            for raw in data[:end].decode("utf-8", errors="replace").splitlines():
                # A progress bar's carriage returns: keep only what the line shows last.
                lines.append((path, raw.rsplit("\r", 1)[-1]))
        return lines


def show(run_dir: Path, follow: bool = False, stream: str = "out", out: TextIO | None = None,
         poll_s: float = 2.0, ended: Callable[[], bool] | None = None) -> int:
    """Print the logs with a header per file; with `follow`, keep printing until the run ends."""
    out = out or sys.stdout
    follower = Follower(run_dir, stream)
    current: Path | None = None

    def emit(batch: list[tuple[Path, str]]) -> None:
        nonlocal current
        for path, text in batch:
            if path != current:
                print(f"==> {path} <==", file=out)
                current = path
            print(text, file=out)
        out.flush()

    emit(follower.poll())
    if current is None and not follow:
        print(f"{run_dir}: no job log yet (looked for {rundir.JOBS_DIR}/*_log.{stream})", file=out)
    if not follow:
        return rundir.EXIT_OK
    try:
        while True:
            done = ended() if ended is not None else False
            emit(follower.poll())
            if done:
                return rundir.EXIT_OK
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return rundir.EXIT_OK
