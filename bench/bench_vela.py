"""Device figures: Vela evaluations per minute at the established target, serial and in a process pool,
and the cache hit rate of a rerun.

One evaluation is what a device search pays for an arch it has not seen: the arch's int8 TFLite model
(TensorFlow's converter) and a full Vela compile for the device (configs/devices/himax-wiseeye2.yaml:
Ethos-U55-64 at 400 MHz, 157x203). Measured through edgeflow/nas/device.py on a throwaway run (a
freshly initialised supernet and a few rendered demo samples for the int8 calibration): the figures'
values do not matter here, their cost does. The estimate for an 800-evaluation search assumes the
pool scales with the cores of a node as it does here from 1 to 2 workers.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import yaml

DEVICE = "himax-wiseeye2"
SERIAL = ("000000000", "000021222", "111111111")
WARM = ("222222222", "012012012")  # starts the pool's workers (TensorFlow, the supernet restored)
POOLED = ("210210210", "120120120", "201201201", "102102102")
NODE_CORES = 32   # a typical CPU node, for the estimate
ARRAY = 8         # elements of an array, for the estimate


def _run_dir(tmp: Path) -> Path:
    import tensorflow as tf

    from edgeflow import config as config_mod
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.rundir import RunPaths, atomic_write_json
    from edgeflow.train.checkpoint import CheckpointStore
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.signature import signature

    render_demo_dataset(tmp / "data", 8, 4, seed=0)
    raw = {"runtime": {"experiment_name": "bench", "output_root": str(tmp / "out")},
           "data": {"train_dir": str(tmp / "data/train"), "val_dir": str(tmp / "data/val")},
           "train": {"batch_size": 4},
           "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1}}
    (tmp / "bench.yaml").write_text(yaml.safe_dump(raw))
    cfg = config_mod.load(tmp / "bench.yaml")
    paths = RunPaths(Path(cfg.runtime.output_root) / cfg.runtime.experiment_name)
    paths.root.mkdir(parents=True)
    paths.config.write_text(config_mod.dump(cfg))
    atomic_write_json(paths.run, {"experiment": "bench", "status": "completed", "signature": signature(cfg)})
    model = build_supernet(cfg)
    CheckpointStore(paths.checkpoints).save("best", tf.train.Checkpoint(model=model).write, {"epoch": 1})
    return paths.root


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeflow import jobenv
    from edgeflow.export import device as device_mod
    from edgeflow.export import vela as vela_mod
    from edgeflow.nas import device as dev
    from edgeflow.nas import rank as rank_mod

    if not vela_mod.available():
        print(f"Vela is not installed ({vela_mod.EXTRA_HINT}): skipped")
        return
    device = device_mod.load(DEVICE)
    quiet = lambda _msg: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        root = _run_dir(Path(tmp))
        run = rank_mod.open_checked(root, "best")
        key, _ = rank_mod.key_for(run)
        plan = dev.prepare_figures(run, device, key)
        h, w = device.input_size
        print(f"device {device.name}: {device.accelerator}, {h}x{w}, Vela {vela_mod.require()}; "
              f"{jobenv.usable_cpus()} usable cores, load average {os.getloadavg()[0]:.1f}")

        with dev.Figures(plan, workers=1, log=quiet) as figures:
            figures.ensure(SERIAL[:1])  # restores the supernet, decodes the calibration inputs
            start = time.perf_counter()
            figures.ensure(SERIAL[1:])
            serial = (time.perf_counter() - start) / (len(SERIAL) - 1)
        rows = [plan.cached[c] for c in SERIAL]
        convert = sum(r["convert_seconds"] for r in rows) / len(rows)
        compile_ = sum(r["vela_seconds"] for r in rows) / len(rows)
        print(f"  serial: {serial:.1f} s per arch ({60 / serial:.1f} evaluations/min): int8 conversion "
              f"{convert:.1f} s, Vela {compile_:.1f} s (mean of {', '.join(SERIAL)})")

        workers = 2
        with dev.Figures(plan, workers=workers, log=quiet) as figures:
            start = time.perf_counter()
            figures.ensure(WARM)
            warm = time.perf_counter() - start
            start = time.perf_counter()
            figures.ensure(POOLED)
            pooled = (time.perf_counter() - start) / len(POOLED)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child, MiB
        print(f"  {workers} workers: {pooled:.1f} s per arch ({60 / pooled:.1f} evaluations/min, {len(POOLED)} archs; "
              f"the first {len(WARM)}, with the workers' start-up, took {warm:.0f} s); largest worker "
              f"{peak:.0f} MiB resident")

        everything = [*SERIAL, *WARM, *POOLED]
        start = time.perf_counter()
        fresh = dev.prepare_figures(run, device, key)  # a later search or ranking: reads the cache
        with dev.Figures(fresh, workers=1, log=quiet) as figures:
            figures.ensure(everything)
        rerun = time.perf_counter() - start
        stats = figures.stats
        hit = stats.reused / max(stats.reused + stats.computed, 1)
        print(f"  rerun of the {len(everything)} archs: cache hit rate {hit:.0%} ({stats.computed} compiles), "
              f"{rerun:.2f} s (reading the cache, the data scan included)")

        per_core = serial
        print(f"  an 800-evaluation search (each arch new): {800 * per_core / 3600:.1f} h on one core; "
              f"{800 * per_core / NODE_CORES / 60:.0f} min on a {NODE_CORES}-core node (--workers "
              f"{NODE_CORES}); all 19683 archs as an array of {ARRAY} such nodes "
              f"(rank --device --all --shard K/{ARRAY}): {19683 * per_core / NODE_CORES / ARRAY / 3600:.1f} h, "
              f"after which every search of this device and checkpoint compiles nothing")
