"""The fidelity report's cost per subnet on this machine, and what k = 20 subnets x 30 epochs would cost.

Runs `python -m edgeflow fidelity --k 3` (the three forced archs: the cheapest, the most expensive and
the baseline) for 2 epochs on a rendered demo data set at the demo size (96x128, batch 8), against a
freshly initialised supernet checkpoint (its numbers do not matter here, only the time). Prints the
command's wall time, each stand-alone training's wall time (its run_start to its run_end, TensorFlow
start-up included) and its training epoch time, and the supernet side's time per ranked arch. The
GPU line is an estimate from the step figures of docs/training.md ("On a GPU"), not a measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

EPOCHS = 2
TRAIN, VAL = 64, 16

# Production (docs/training.md, "On a GPU", estimates): the supernet step (3 archs, batch 32) is
# 12-20 ms uncompiled; a stand-alone step trains one arch, about a third of that work and launches, but
# the input pipeline bounds both at about 3,000 samples/s.
FC2_TRAIN = 22_232
GPU_SAMPLES_PER_S = (2_500, 3_500)
GPU_STARTUP_S = (60, 120)   # image start, data staging and scan, tracing: per training


def _supernet(root: Path, data: Path) -> Path:
    import tensorflow as tf

    from edgeflow import config as config_mod
    from edgeflow.rundir import EventLog, RunPaths, atomic_write_json
    from edgeflow.rundir.events import EVENT_FIELDS
    from edgeflow.train.checkpoint import CheckpointStore
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.signature import signature

    raw = {"runtime": {"experiment_name": "supernet", "output_root": str(root), "seed": 0},
           "data": {"train_dir": str(data / "train"), "val_dir": str(data / "val"), "input_height": 96,
                    "input_width": 128},
           "train": {"num_epochs": EPOCHS, "batch_size": 8, "lr": 1e-3},
           "eval": {"batch_size": 8, "bn_recal_batches": 2, "eval_batches_per_arch": 2,
                    "pool": ["000000000", "222222222"]}}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "supernet.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = config_mod.load(path)
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True)
    paths.config.write_text(config_mod.dump(cfg))
    atomic_write_json(paths.run, {"experiment": "supernet", "status": "completed", "signature": signature(cfg)})
    CheckpointStore(paths.checkpoints).save("best", tf.train.Checkpoint(model=build_supernet(cfg)).write,
                                            {"epoch": 1})
    fields: dict[str, Any] = {name: None for name in EVENT_FIELDS["eval"]}
    fields.update(epoch=1, mean_epe=3.0, arch_epe={"000000000": 3.0, "222222222": 3.0}, best_epe=3.0, best_epoch=1)
    EventLog(paths.events, "supernet").emit("eval", **fields)
    return paths.root


def main() -> None:
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.rundir import read_events

    print(f"CPU cores visible: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        render_demo_dataset(base / "data", n_train=TRAIN, n_val=VAL, seed=0)
        run = _supernet(base / "out", base / "data")
        cmd = [sys.executable, "-m", "edgeflow", "fidelity", "--run", str(run), "--k", "3", "--candidates", "1",
               "--set", f"train.num_epochs={EPOCHS}"]
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        total = time.perf_counter() - start
        if out.returncode != 0:
            print(f"fidelity failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
            return
        folder = next((run / "fidelity").iterdir())
        rank_events = [e for e in read_events(run / "rank" / folder.name / "events.jsonl") if e["event"] == "search"]
        per_arch = [e.get("archs_per_minute") for e in rank_events if e.get("archs_per_minute")]
        print(f"demo size 96x128, batch 8, {TRAIN} train / {VAL} eval samples, {EPOCHS} epochs, k = 3")
        print(f"  the whole command: {total:.1f} s")
        if per_arch:
            print(f"  supernet side: {per_arch[-1]:.1f} archs/min ranked (4 archs, trace included)")
        walls, epochs = [], []
        for sa in sorted((folder / "runs").iterdir()):
            events = list(read_events(sa / "events.jsonl"))
            t0 = next(e["time"] for e in events if e["event"] == "run_start")
            t1 = next(e["time"] for e in reversed(events) if e["event"] == "run_end")
            ep = [e["epoch_seconds"] for e in events if e["event"] == "epoch"]
            walls.append(t1 - t0)
            epochs.append(float(np.mean(ep)))
            print(f"  {sa.name}: {t1 - t0:.1f} s from start to end, {np.mean(ep):.2f} s per epoch of steps")
        startup = float(np.mean(walls)) - EPOCHS * float(np.mean(epochs))
        ranking = rank_events[-1]["time"] - rank_events[0]["time"] if len(rank_events) > 1 else 0.0
        per_subnet = (total - ranking) / len(walls)
        print(f"  cost per subnet here: {per_subnet:.1f} s of the command (ranking of {ranking:.1f} s and report left "
              f"out), of which {np.mean(walls):.1f} s in the trainer ({startup:.1f} s start and evaluations, "
              f"{np.mean(epochs):.2f} s per epoch of {TRAIN // 8} steps) and the rest the process's start "
              f"(Python, TensorFlow, the data scan)")
    lo = 20 * (GPU_STARTUP_S[0] + 30 * FC2_TRAIN / GPU_SAMPLES_PER_S[1])
    hi = 20 * (GPU_STARTUP_S[1] + 30 * FC2_TRAIN / GPU_SAMPLES_PER_S[0])
    print(f"production (estimate, docs/training.md's GPU figures): one subnet x 30 epochs of FC2 at "
          f"{GPU_SAMPLES_PER_S[0]:,}-{GPU_SAMPLES_PER_S[1]:,} samples/s: {lo / 20 / 60:.0f}-{hi / 20 / 60:.0f} min "
          f"with start-up; k = 20: {lo / 3600:.1f}-{hi / 3600:.1f} GPU-hours, about a quarter of that in wall "
          f"time with --array-parallelism 4")


if __name__ == "__main__":
    main()
