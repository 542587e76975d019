"""Helpers shared by the monitor tests: write real run directories, run the real sidecar, scrape it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edgeflow.rundir import RunPaths, atomic_write_json
from tests.helpers import REPO
from tests.helpers import SparseEventLog as EventLog

ARCHS = ["000000000", "111111111", "222222222", "000021222"]


def write_full_run(directory: Path, experiment: str = "exp", job_id: str | None = "1001", epochs: int = 3,
                   end: str | None = "completed") -> EventLog:
    """A run as the trainer writes it: run.json, events for `epochs` epochs with evals, state.json."""
    paths = RunPaths(directory)
    log = EventLog(paths.events, experiment, job_id)
    atomic_write_json(paths.run, {"experiment": experiment, "status": "running", "job_ids": [job_id] if job_id else [],
                                  "train_samples": 96, "val_samples": 16})
    log.emit("run_start", train_samples=96, val_samples=16, resumed_from=None, start_epoch=0, num_epochs=epochs,
             patience=5, zero_flow_epe=8.0)
    for epoch in range(1, epochs + 1):
        log.emit("heartbeat", epoch=epoch, step=epoch * 12 - 6, samples_per_second=40.0)
        log.emit("epoch", epoch=epoch, step=epoch * 12, lr=1e-3 / epoch, train_loss=4.0 - epoch * 0.5,
                 grad_norm=20.0 - epoch, grad_norm_p90=30.0 - epoch, clip_rate=0.0, fairness_gap=0,
                 nonfinite_steps=0, epoch_seconds=10.0 + epoch, samples_per_second=42.0,
                 epoch_wall_seconds=14.0 + epoch)
        # the ranking's stability against the previous evaluation (and the best one's): from the second on
        stability = {"pool_rank_tau": 1.0, "pool_rank_tau_best": 1.0} if epoch > 1 else {}
        log.emit("eval", epoch=epoch, mean_epe=6.0 - epoch * 0.3, std_epe=0.4, median_epe=5.9 - epoch * 0.3,
                 p90_epe=6.5 - epoch * 0.3, arch_epe={a: 6.0 - epoch * 0.3 + i * 0.1 for i, a in enumerate(ARCHS)},
                 best_epe=6.0 - epoch * 0.3, best_epoch=epoch, bad_epochs=0, patience=5, improved=True, **stability)
        log.emit("checkpoint", epoch=epoch, kind="latest", path="checkpoints/latest")
        atomic_write_json(paths.state, {"epoch": epoch, "step": epoch * 12, "best_epe": 6.0 - epoch * 0.3,
                                        "best_epoch": epoch, "bad_epochs": 0, "patience": 5})
    if end:
        log.emit("run_end", status=end, reason="done")
    return log


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the text exposition into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    for (n, lab), v in samples(text).items():
        if n == name and all(item in lab for item in want):
            return v
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value; bounded, never a timing assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the peer may not be up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Sidecar:
    """`python -m monitor ... --http 127.0.0.1:0` as a subprocess; `.text()` scrapes its /metrics."""

    def __init__(self, args: list[str], log_dir: Path) -> None:
        self.log = log_dir / f"sidecar-{time.monotonic_ns()}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", *args, "--http", "127.0.0.1:0"],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), env=env)
        match = wait_for(lambda: re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", self.stderr()),
                         timeout=30, what=f"sidecar to listen ({self.log})")
        self.port = int(match.group(1))

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def value(self, name: str, **labels: str) -> float | None:
        return value(self.text(), name, **labels)

    def wait_value(self, name: str, expected: float, timeout: float = 30.0, **labels: str) -> None:
        wait_for(lambda: self.value(name, **labels) == expected, timeout=timeout,
                 what=f"{name}{labels} == {expected}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
