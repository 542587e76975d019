"""Crash-and-resume probe: SIGKILL a tiny training run at random moments, resume it each time, and
compare the end bit for bit with a run that was never interrupted.

    python -m bench.probe_kill_resume [--kills 20] [--seed 0] [--workdir DIR]   (make probe)

Each round starts `python -m edgeflow train` on the same run directory and kills it (SIGKILL: no
handler runs) at a random moment: during start-up, or a random 0-0.4 s after the n-th new event
(heartbeat, epoch, eval, checkpoint: mid-epoch, mid-evaluation, right after a pointer swap). After
the last kill the run is resumed to its end. Then every model weight and Adam slot of the latest
checkpoint must equal the uninterrupted run's exactly, and so must the step count and the digests of
the arch sequence and of the data order. Not a benchmark: it prints what it did and exits 1 on any
difference. tests/test_reliability_probe.py runs a short version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
KILL_EVENTS = ("run_start", "heartbeat", "epoch", "eval", "checkpoint")


@dataclass
class ProbeResult:
    kills: list[str] = field(default_factory=list)   # where each kill landed
    starts: int = 0
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences


def tiny_config(workdir: Path, data: Path, name: str, epochs: int) -> Path:
    raw = {
        "runtime": {"experiment_name": name, "output_root": str(workdir / "out"), "seed": 5,
                    "heartbeat_seconds": 0.2, "progress_seconds": 60.0},
        "data": {"train_dir": str(data / "train"), "val_dir": str(data / "val"), "input_height": 32,
                 "input_width": 48},
        "train": {"num_epochs": epochs, "batch_size": 4, "lr": 1e-3},
        "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1, "pool": ["012012012"],
                 "early_stop_patience": 50, "min_epochs_before_early_stop": 50},
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


_CHILDREN: list[subprocess.Popen[bytes]] = []


def start_edgeflow(argv: list[str], log: Path, *, header: bool = False) -> subprocess.Popen[bytes]:
    """`python -m edgeflow ARGV` in the background, its output appended to `log` (after a `$ edgeflow ...`
    line with `header`); kill_children() ends it if the probe ends first."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with log.open("ab") as out:
        if header:
            out.write(f"\n$ edgeflow {' '.join(argv)}\n".encode())
            out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "edgeflow", *argv], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    _CHILDREN.append(proc)
    return proc


def _start(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_edgeflow(["train", "--config", str(cfg)], log)


def kill_children() -> None:
    """No command started by a probe outlives it (an interrupted or timed-out probe included)."""
    while _CHILDREN:
        proc = _CHILDREN.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _events(run: Path) -> list[dict[str, Any]]:
    from edgeflow.rundir import read_events

    path = run / "events.jsonl"
    return list(read_events(path)) if path.exists() else []


def _finished(run: Path) -> bool:
    ends = [e for e in _events(run) if e.get("event") == "run_end"]
    return bool(ends) and ends[-1].get("status") == "completed"


def _kill_round(cfg: Path, run: Path, log: Path, rng: random.Random, timeout: float) -> str | None:
    """One start, killed at a random moment; None when the run completed before the kill landed."""
    seen = len(_events(run))
    proc = _start(cfg, log)
    deadline = time.time() + timeout
    if rng.random() < 0.2:
        target, where = None, "during start-up"
        delay = rng.uniform(0.2, 4.0)
    else:
        kind = rng.choice(KILL_EVENTS)
        target, delay = (kind, rng.randint(1, 3)), rng.uniform(0.0, 0.4)
        where = f"{delay:.2f} s after new {kind} #{target[1]}"
    if target is not None:
        while time.time() < deadline and proc.poll() is None:
            new = [e for e in _events(run)[seen:] if e.get("event") == target[0]]
            if len(new) >= target[1]:
                break
            time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return None if _finished(run) else f"{where} (exited {proc.returncode} first)"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return where


def _run_to_end(cfg: Path, log: Path, timeout: float) -> int:
    proc = _start(cfg, log)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -1


def _checkpoint_tensors(run: Path) -> dict[str, Any]:
    import tensorflow as tf

    prefix = json.loads((run / "checkpoints" / "latest.json").read_text())["prefix"]
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / prefix))
    names = [k for k in reader.get_variable_to_shape_map() if k.startswith(("model/", "optimizer/"))]
    return {k: reader.get_tensor(k) for k in names}


def compare(reference: Path, probed: Path) -> list[str]:
    """Every difference between two finished runs (empty: bit-identical)."""
    import numpy as np

    diffs = []
    a, b = (json.loads((r / "state.json").read_text()) for r in (reference, probed))
    for key in ("epoch", "step", "arch_digest", "data_digest", "fairness_counts", "best_epe"):
        if a.get(key) != b.get(key):
            diffs.append(f"state.json {key}: {a.get(key)!r} != {b.get(key)!r}")
    ta, tb = _checkpoint_tensors(reference), _checkpoint_tensors(probed)
    if set(ta) != set(tb):
        diffs.append(f"checkpoint variables differ: {sorted(set(ta) ^ set(tb))[:5]}")
    if not any(k.startswith("optimizer/") for k in ta):
        diffs.append("no optimizer slots in the checkpoint: nothing to compare")
    for key in sorted(set(ta) & set(tb)):
        if ta[key].shape != tb[key].shape or not np.array_equal(ta[key], tb[key]):
            worst = float(np.max(np.abs(ta[key].astype(np.float64) - tb[key].astype(np.float64)))) \
                if ta[key].shape == tb[key].shape else float("nan")
            diffs.append(f"{key}: differs (max |diff| {worst:g})")
    return diffs


def probe(kills: int, seed: int, workdir: Path, epochs: int = 3, timeout: float = 600.0,
          data: Path | None = None) -> ProbeResult:
    """The whole probe; `data` is a FlyingChairs2-layout demo folder (rendered when None)."""
    try:
        return _probe(kills, seed, workdir, epochs, timeout, data)
    finally:
        kill_children()


def _probe(kills: int, seed: int, workdir: Path, epochs: int, timeout: float, data: Path | None) -> ProbeResult:
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    if data is None:
        from edgeflow.data.demo import render_demo_dataset

        data = workdir / "data"
        if not (data / "train").is_dir():
            render_demo_dataset(data, n_train=24, n_val=8, seed=0)
    rng = random.Random(seed)
    result = ProbeResult()
    ref_cfg, probe_cfg = (tiny_config(workdir, data, name, epochs) for name in ("reference", "probed"))
    ref_run, probe_run = workdir / "out" / "reference", workdir / "out" / "probed"
    # The reference runs alongside the kill rounds (it never shares a run directory with them).
    reference = _start(ref_cfg, workdir / "reference.log")
    log = workdir / "probed.log"
    for _ in range(kills):
        where = _kill_round(probe_cfg, probe_run, log, rng, timeout)
        result.starts += 1
        if where is None:
            break
        result.kills.append(where)
        print(f"kill {len(result.kills)}: {where}", flush=True)
    if not _finished(probe_run):
        result.starts += 1
        code = _run_to_end(probe_cfg, log, timeout)
        if code != 0:
            result.differences.append(f"the final resume exited {code}; see {log}")
    try:
        ref_code = reference.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        ref_code = -1
    if ref_code != 0:
        result.differences.append(f"the reference run failed; see {workdir / 'reference.log'}")
    if result.ok:
        result.differences = compare(ref_run, probe_run)
    result.seconds = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_kill_resume", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs before the run may finish (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the tiny run (default 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.epochs < 1:
        parser.error("--kills must be >= 0 and --epochs >= 1")
    with tempfile.TemporaryDirectory(prefix="probe-kill-resume-") as tmp:
        workdir = args.workdir or Path(tmp)
        result = probe(args.kills, args.seed, workdir, epochs=args.epochs)
        print(f"{len(result.kills)} kills, {result.starts} starts, {result.seconds:.0f} s")
        if result.ok:
            print("bit-identical to the uninterrupted run: every weight, every Adam slot, step and digests")
            return 0
        print("DIFFERENT from the uninterrupted run:")
        for line in result.differences:
            print(f"  {line}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
