"""On a GPU node: the step's samples/s per GPU in each precision, with XLA, over several GPUs, and fed.

`python -m bench gpu` (config: $EDGEFLOW_BENCH_CONFIG, default configs/supernet_fc2_180x240_gpu.yaml).
Steps are queued as the training loop queues them (nothing read back until the end of a timed run),
on random tensors of the config's shape, then fed by the config's real input pipeline through the
trainer's feed (uint8 batches placed on the GPU ahead of the step). It prints:
  - one GPU: samples/s in float32, bfloat16, and bfloat16 compiled by XLA (train.jit_compile), each
    with its first call (tracing, compiling);
  - all visible GPUs (mirrored, data_parallel; arch_parallel too when the count is a multiple of 3):
    samples/s per GPU and scaling efficiency = rate(n GPUs) / (n * rate(1 GPU)) in the config's setup;
  - fed by the pipeline: samples/s and the input-stall fraction = share of the wall time the loop
    waited for the next batch.
With TF_DETERMINISTIC_OPS=1 (and XLA_FLAGS=--xla_gpu_deterministic_ops=true) in the environment the
same figures show what deterministic kernels cost (docs/training.md, "On a GPU").
Without a GPU it says so and returns (this benchmark is for GPU nodes).
"""

from __future__ import annotations

import os
import time
from typing import Any

STEPS = 20


def _rate(step: Any, batches: Any, archs_fn: Any) -> tuple[float, float]:
    """(samples/s, stall fraction) over STEPS steps queued back to back, then one read of the step log."""
    waited = samples = 0.0
    start = time.perf_counter()
    for _ in range(STEPS):
        t = time.perf_counter()
        placed, size = next(batches)
        waited += time.perf_counter() - t
        step.launch(placed, archs_fn(), 1e-4)
        samples += size
    step.log.read()  # waits for the queued steps
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
    from edgeflow.train.feed import EpochFeed
    from edgeflow.train.layout import MODES
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.step import TrainStep

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        print("no GPU visible: run `python -m bench gpu` on a GPU node (e.g. inside `make submit`'s job)")
        return
    path = os.environ.get("EDGEFLOW_BENCH_CONFIG", "configs/supernet_fc2_180x240_gpu.yaml")
    cfg = config_mod.load(path)
    h, w, batch = cfg.data.input_height, cfg.data.input_width, cfg.train.batch_size
    rng = np.random.default_rng(0)
    fixed = (rng.integers(0, 256, (batch, h, w, 6), dtype=np.uint8),
             rng.normal(0, 5, (batch, h, w, 2)).astype(np.float32))
    print(f"{len(gpus)} GPU(s), {os.cpu_count()} CPU cores; {path}: {h}x{w}, global batch {batch}, "
          f"{STEPS} steps each")

    def one_gpu(precision: Any, jit: bool) -> tuple[TrainStep, float]:
        cfg.train.mixed_precision, cfg.train.jit_compile = precision, jit
        step = TrainStep(build_supernet(cfg), cfg)
        sampler = FairSampler(0)
        placed = step.place(*fixed)
        start = time.perf_counter()
        step.launch(placed, sampler.next_archs(), 1e-4)
        step.log.read()
        first = time.perf_counter() - start
        rate, _ = _rate(step, itertools.repeat((placed, batch)), sampler.next_archs)
        print(f"1 GPU, {precision or 'float32'}{' + XLA' if jit else ''}: {rate:.1f} samples/s "
              f"({batch / rate * 1000:.1f} ms per step); first call {first:.1f} s")
        return step, rate

    wanted = (cfg.train.mixed_precision, cfg.train.jit_compile)
    for precision, jit in ((False, False), ("bfloat16", False), ("bfloat16", True)):
        one_gpu(precision, jit)
    step, base = one_gpu(*wanted)

    try:
        samples = resolve_splits(cfg).train
    except Exception as exc:  # the step figures stand without data; say why the fed ones are missing
        print(f"input pipeline not measured: {exc}")
        samples = []
    if samples:
        feed = EpochFeed(lambda: train_dataset(samples, cfg, 1, normalise=False), STEPS + 1, place=step.place)
        batches = ((b.inputs, b.size) for b in feed)
        sampler = FairSampler(1)
        first_inputs, first_size = next(batches)
        step.launch(first_inputs, sampler.next_archs(), 1e-4)
        fed, stall = _rate(step, batches, sampler.next_archs)
        print(f"1 GPU fed by the pipeline ({cfg.data.format}): {fed:.1f} samples/s, input stall {stall:.0%}")

    if len(gpus) > 1:
        cfg.train.mixed_precision, cfg.train.jit_compile = wanted
        for mode in [m for m in MODES if m == "data_parallel" or len(gpus) % 3 == 0]:
            cfg.train.distribute, cfg.train.distribute_mode = "mirrored", mode
            strategy, _ = distribute.make_strategy(cfg, devices=[g.name for g in gpus])
            multi = distribute.DistributedTrainStep(distribute.build_model(cfg, strategy), cfg, strategy)
            sampler = FairSampler(0)
            placed = multi.place(*fixed)
            multi.launch(placed, sampler.next_archs(), 1e-4)
            rate, _ = _rate(multi, itertools.repeat((placed, batch)), sampler.next_archs)
            n = len(gpus)
            print(f"{n} GPUs {mode:>13}: {rate:.1f} samples/s, {rate / n:.1f} per GPU, "
                  f"scaling efficiency {rate / (n * base):.0%}")


if __name__ == "__main__":
    main()
