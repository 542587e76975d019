"""On a GPU node: samples/s per GPU, scaling efficiency and input-stall fraction of train.distribute.

`python -m bench gpu` (config: $EDGEFLOW_BENCH_CONFIG, default configs/supernet_fc2_180x240.yaml).
For 1 GPU and for all
visible GPUs (mirrored, data_parallel; arch_parallel too when the count is a multiple of 3) it trains
a few steps on random tensors of the config's shape (the step alone), then a few steps fed by the
config's real input pipeline, and prints:
  samples/s per GPU, scaling efficiency = rate(n GPUs) / (n * rate(1 GPU)), and the input-stall
  fraction = share of the fed steps' wall time spent waiting for the next batch.
Without a GPU it says so and returns (this benchmark is for GPU nodes).
"""

from __future__ import annotations

import os
import time

STEPS = 10


def _rate(step, batches, archs_fn) -> tuple[float, float]:
    """(samples/s, stall fraction) over the batches an iterator gives."""
    waited = samples = 0.0
    start = time.perf_counter()
    for _ in range(STEPS):
        t = time.perf_counter()
        x, flow = next(batches)
        waited += time.perf_counter() - t
        step(x, flow, archs_fn(), 1e-4)
        samples += int(x.shape[0])
    total = time.perf_counter() - start
    return samples / total, waited / total


def main() -> None:
    import itertools

    import numpy as np
    import tensorflow as tf

    from edgeflow import config as config_mod
    from edgeflow.data.pipeline import train_dataset
    from edgeflow.data.splits import resolve_splits
    from edgeflow.space.sampler import FairSampler
    from edgeflow.train import distribute
    from edgeflow.train.layout import MODES
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.step import TrainStep

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        print("no GPU visible: run `python -m bench gpu` on a GPU node (e.g. inside `make submit`'s job)")
        return
    path = os.environ.get("EDGEFLOW_BENCH_CONFIG", "configs/supernet_fc2_180x240.yaml")
    cfg = config_mod.load(path)
    h, w, batch = cfg.data.input_height, cfg.data.input_width, cfg.train.batch_size
    rng = np.random.default_rng(0)
    fixed = (rng.uniform(-1, 1, (batch, h, w, 6)).astype(np.float32),
             rng.normal(0, 5, (batch, h, w, 2)).astype(np.float32))
    try:
        samples = resolve_splits(cfg).train
    except Exception as exc:  # the step figures stand without data; say why the fed ones are missing
        print(f"input pipeline not measured: {exc}")
        samples = []
    setups = [(1, "none")] + [(len(gpus), m) for m in MODES
                              if len(gpus) > 1 and (m == "data_parallel" or len(gpus) % 3 == 0)]
    base = None
    print(f"{len(gpus)} GPU(s), {os.cpu_count()} CPU cores; {h}x{w}, global batch {batch}, {STEPS} steps each")
    for n, mode in setups:
        if mode == "none":
            step = TrainStep(build_supernet(cfg), cfg)
        else:
            cfg.train.distribute, cfg.train.distribute_mode = "mirrored", mode
            strategy, _ = distribute.make_strategy(cfg, devices=[g.name for g in gpus])
            step = distribute.DistributedTrainStep(distribute.build_model(cfg, strategy), cfg, strategy)
        sampler = FairSampler(0)
        step(*fixed, sampler.next_archs(), 1e-4)
        rate, _ = _rate(step, itertools.repeat(fixed), sampler.next_archs)
        base = rate if base is None else base
        line = (f"{n} GPU(s) {mode:>13}: {rate:.1f} samples/s, {rate / n:.1f} per GPU, "
                f"scaling efficiency {rate / (n * base):.0%}")
        if samples:
            fed, stall = _rate(step, iter(train_dataset(samples, cfg, 1).repeat()), sampler.next_archs)
            line += f"; fed by the pipeline {fed:.1f} samples/s, input stall {stall:.0%}"
        print(line)


if __name__ == "__main__":
    main()
