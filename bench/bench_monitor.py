"""Sidecar performance: event-to-/metrics latency (inotify, polling), idle CPU, catch-up, memory.

Prints figures, asserts nothing. Targets: p99 latency < 0.5 s (inotify) and < poll interval + 0.2 s
(polling); idle CPU < 1% of a core; catch-up of 100,000 lines < 3 s. About two minutes in total.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edgeflow.rundir import EventLog

REPO = Path(__file__).resolve().parents[1]
EVENTS_LATENCY = 200
POLL_INTERVAL = 0.25
IDLE_SECONDS = 30
CATCHUP_LINES = 100_000
RUNS_MEMORY = 50


class Proc:
    def __init__(self, args: list[str], workdir: Path) -> None:
        self.log = workdir / f"sidecar-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", *args, "--http", "127.0.0.1:0"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.started = time.perf_counter()
        self.port = int(self._wait(lambda: re.search(r"serving http://127\.0\.0\.1:(\d+)/",
                                                     self.log.read_text())).group(1))

    @staticmethod
    def _wait(check, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
            except OSError:
                result = None
            if result:
                return result
            time.sleep(0.002)
        raise TimeoutError("sidecar did not answer")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def wait_line(self, line: str, timeout: float = 60.0) -> float:
        self._wait(lambda: line in self.metrics(), timeout)
        return time.perf_counter()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text())
        if match is None:
            raise RuntimeError(f"no VmRSS for pid {self.proc.pid}")
        return int(match.group(1)) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def step_line(experiment: str, step: int) -> str:
    return f'edgeflow_step{{experiment="{experiment}",job_id="1"}} {float(step)}\n'


def latency(workdir: Path, observer: list[str], label: str) -> None:
    run = workdir / f"lat-{label}"
    log = EventLog(run / "events.jsonl", "lat", "1")
    log.emit("run_start", train_samples=1, val_samples=1, resumed_from=None, start_epoch=1, num_epochs=1,
             patience=1)
    proc = Proc(["--run", str(run), *observer], workdir)
    try:
        proc.wait_line("edgeflow_run_starts_total")
        delays = []
        for step in range(1, EVENTS_LATENCY + 1):
            written = time.perf_counter()
            log.emit("heartbeat", epoch=1, step=step, samples_per_second=1.0)
            delays.append(proc.wait_line(step_line("lat", step)) - written)
        delays.sort()
        p99 = delays[int(0.99 * (len(delays) - 1))]
        print(f"latency {label:<22} median {statistics.median(delays) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms"
              f"   max {delays[-1] * 1000:7.1f} ms   ({len(delays)} events)")
    finally:
        proc.stop()


def idle_cpu(workdir: Path) -> None:
    procs = {}
    for label, observer in (("inotify", ["--observer", "inotify"]),
                            ("polling (2 s)", ["--observer", "polling", "--poll-interval", "2"])):
        run = workdir / f"idle-{label.split()[0]}"
        EventLog(run / "events.jsonl", "idle", "1").emit("heartbeat", epoch=1, step=1, samples_per_second=1.0)
        procs[label] = Proc(["--run", str(run), *observer], workdir)
    try:
        for proc in procs.values():
            proc.wait_line(step_line("idle", 1))
        time.sleep(1.0)  # let start-up work finish
        before = {k: p.cpu_seconds() for k, p in procs.items()}
        time.sleep(IDLE_SECONDS)
        for label, proc in procs.items():
            used = proc.cpu_seconds() - before[label]
            print(f"idle CPU {label:<21} {100 * used / IDLE_SECONDS:6.2f} % of a core over {IDLE_SECONDS} s")
    finally:
        for proc in procs.values():
            proc.stop()


def write_big_run(run: Path, lines: int) -> None:
    run.mkdir(parents=True)
    base = {"time": time.time(), "experiment": "big", "job_id": "1"}
    with open(run / "events.jsonl", "w") as fh:
        fh.write(json.dumps({**base, "event": "run_start", "train_samples": 22232, "val_samples": 640,
                             "num_epochs": 100, "patience": 15}) + "\n")
        for i in range(1, lines):
            if i % 100 == 0:
                record = {**base, "event": "epoch", "epoch": i // 100, "step": i, "lr": 1e-4, "train_loss": 2.0,
                          "grad_norm": 10.0, "grad_norm_p90": 12.0, "clip_rate": 0.0, "fairness_gap": 0,
                          "nonfinite_steps": 0, "epoch_seconds": 60.0, "samples_per_second": 300.0}
            else:
                record = {**base, "event": "heartbeat", "epoch": i // 100 + 1, "step": i, "samples_per_second": 300.0}
            fh.write(json.dumps(record) + "\n")


def catch_up(workdir: Path) -> None:
    from monitor.sidecar import Sidecar

    run = workdir / "big"
    write_big_run(run, CATCHUP_LINES)
    size = (run / "events.jsonl").stat().st_size / 2**20
    sidecar = Sidecar(runs=[run])
    start = time.perf_counter()
    sidecar.scan()
    scan = time.perf_counter() - start
    print(f"catch-up {CATCHUP_LINES} lines ({size:.1f} MiB): in-process scan {scan:.2f} s")
    proc = Proc(["--run", str(run)], workdir)
    try:
        done = proc.wait_line(step_line("big", CATCHUP_LINES - 1))
        print(f"catch-up {CATCHUP_LINES} lines: process start to value on /metrics {done - proc.started:.2f} s "
              f"(includes interpreter start-up)")
    finally:
        proc.stop()


def memory(workdir: Path) -> None:
    empty = workdir / "empty-root"
    empty.mkdir()
    base = Proc(["--root", str(empty)], workdir)
    base.wait_line("edgeflow_monitor_runs_followed 0.0")
    base_rss = base.rss_mib()
    base.stop()
    root = workdir / "many"
    for i in range(RUNS_MEMORY):
        log = EventLog(root / f"exp{i:02d}" / "events.jsonl", f"exp{i:02d}", "1")
        log.emit("run_start", train_samples=22232, val_samples=640, resumed_from=None, start_epoch=1,
                 num_epochs=100, patience=15)
        for epoch in range(1, 21):
            log.emit("epoch", epoch=epoch, step=epoch * 700, lr=1e-4, train_loss=2.0, grad_norm=10.0,
                     grad_norm_p90=12.0, clip_rate=0.0, fairness_gap=0, nonfinite_steps=0, epoch_seconds=600.0,
                     samples_per_second=37.0)
            log.emit("eval", epoch=epoch, mean_epe=5.0, std_epe=0.3, median_epe=5.0, p90_epe=5.3,
                     arch_epe={f"{a:09d}": 5.0 for a in range(12)}, best_epe=5.0, best_epoch=epoch, bad_epochs=0,
                     patience=15, improved=True)
    proc = Proc(["--root", str(root)], workdir)
    try:
        proc.wait_line(f"edgeflow_monitor_runs_followed {float(RUNS_MEMORY)}")
        print(f"memory: RSS {proc.rss_mib():.1f} MiB following {RUNS_MEMORY} runs "
              f"(sidecar with no run: {base_rss:.1f} MiB)")
    finally:
        proc.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        workdir = Path(tmp)
        latency(workdir, ["--observer", "inotify"], "inotify")
        latency(workdir, ["--observer", "polling", "--poll-interval", str(POLL_INTERVAL)],
                f"polling ({POLL_INTERVAL} s)")
        idle_cpu(workdir)
        catch_up(workdir)
        memory(workdir)


if __name__ == "__main__":
    main()
