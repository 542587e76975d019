"""Training-step throughput on this CPU for the production model (180x240).

Prints: samples/s of the full strict-fairness step (3 archs, same batch) at batch 8 in float32 and
bfloat16 (batch 32, before and after the step's rework: bench_step.py), what the loop pays around an
epoch's steps (input start-up and end, per-step digest), and the step time of the lightest arch (all
options 0, trained 3 times) against the heaviest (all 2), next to the ratio of their forward FLOPs
from `edgeflow.space.cost.arch_info`. Timing only: the inputs are random tensors of the real shapes
(data loading is measured by bench_data.py).
"""

from __future__ import annotations

import os
import time

import numpy as np

WARMUP_STEPS = 1
# Batch 32, before and after the step's rework side by side: bench_step.py.
TIMED_STEPS = {8: 3}


def _inputs(batch: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch, height, width, 6)).astype(np.float32)
    flow = rng.normal(0, 5, (batch, height, width, 2)).astype(np.float32)
    return x, flow


def _time_steps(step, x, flow, archs_fn, n: int) -> float:
    for _ in range(WARMUP_STEPS):
        step(x, flow, archs_fn(), 1e-4)
    start = time.perf_counter()
    for _ in range(n):
        step(x, flow, archs_fn(), 1e-4)
    return (time.perf_counter() - start) / n


def _bf16_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none (bfloat16 is emulated: expect no speed-up)"


def _loop_overhead(cfg) -> None:
    """What the loop pays around an epoch's steps: the input's start-up and end, and per-step host work."""
    import tempfile
    from pathlib import Path

    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.data.pipeline import train_dataset
    from edgeflow.data.splits import resolve_splits
    from edgeflow.train.feed import EpochFeed
    from edgeflow.train.state import TrainState

    batch, n = 8, 32
    with tempfile.TemporaryDirectory() as tmp:
        render_demo_dataset(Path(tmp), n, 8, seed=0)
        cfg.data.train_dir, cfg.data.val_dir = f"{tmp}/train", f"{tmp}/val"
        cfg.train.batch_size = cfg.eval.batch_size = batch
        samples = resolve_splits(cfg).train
        train_dataset(samples, cfg, 0)  # TensorFlow's own first-use costs, not the loop's
        start = time.perf_counter()
        iterator = iter(train_dataset(samples, cfg, 1))
        next(iterator)
        fresh = time.perf_counter() - start
        for _ in range(n // batch - 1):
            next(iterator)
        start = time.perf_counter()
        for _ in iterator:
            pass
        del iterator
        ending = time.perf_counter() - start
        feed = EpochFeed(lambda: train_dataset(samples, cfg, 2, normalise=False), n // batch)
        time.sleep(max(2 * fresh, 1.0))  # the previous epoch's evaluation and checkpoints
        start = time.perf_counter()
        batches = iter(feed)
        first = next(batches)
        ahead = time.perf_counter() - start
        for _ in batches:
            pass
        print(f"epoch input start-up (180x240, batch {batch}): {fresh:.2f} s in the loop before; "
              f"{ahead:.3f} s when started ahead (edgeflow.train.feed)")
        print(f"epoch input end: {ending:.3f} s (end of sequence + teardown) before; 0 now (exact batch count, "
              f"teardown in the background)")
        state = TrainState()
        archs = np.zeros((3, 9), np.int32)
        start = time.perf_counter()
        for _ in range(100):
            state.record_step(archs, first.probe)
        print(f"per-step digest of archs and data (the probe is taken in the feed's thread): "
              f"{(time.perf_counter() - start) * 10:.2f} ms")


def main() -> None:
    from edgeflow.config import Config
    from edgeflow.model.supernet import Supernet, compute_dtype_for
    from edgeflow.space.cost import arch_info
    from edgeflow.space.sampler import FairSampler
    from edgeflow.train.step import TrainStep

    cfg = Config()  # production: 180x240, Adam, clip 200, float32
    h, w = cfg.data.input_height, cfg.data.input_width
    print(f"CPU cores visible: {os.cpu_count()}; input {h}x{w}; one step = 3 archs forward+backward + Adam")
    print(f"CPU bfloat16 units: {_bf16_flags()}")
    rates: dict[tuple[str, int], float] = {}
    steps = {}
    for precision in ("float32", "bfloat16"):
        cfg.train.mixed_precision = False if precision == "float32" else precision
        step = steps[precision] = TrainStep(
            Supernet(seed=0, compute_dtype=compute_dtype_for(cfg.train.mixed_precision)), cfg)
        start = time.perf_counter()
        step(*_inputs(2, h, w), FairSampler(0).next_archs(), 1e-4)
        print(f"{precision}: first call (trace + graph optimisation): {time.perf_counter() - start:.1f} s")
        sampler = FairSampler(1)
        for batch, n in TIMED_STEPS.items():
            x, flow = _inputs(batch, h, w)
            seconds = _time_steps(step, x, flow, sampler.next_archs, n)
            rates[precision, batch] = batch / seconds
            print(f"{precision} batch {batch:>2}: {seconds:.2f} s/step, {batch / seconds:.1f} samples/s "
                  f"({n} timed steps after {WARMUP_STEPS} warm-up)")
    for batch in TIMED_STEPS:
        print(f"bfloat16 / float32 at batch {batch}: x{rates['bfloat16', batch] / rates['float32', batch]:.2f}")
    cfg.train.mixed_precision = False
    step = steps["float32"]
    _loop_overhead(cfg)
    x, flow = _inputs(8, h, w)
    times = {}
    for option in (0, 2):
        archs = np.full((3, 9), option, dtype=np.int32)
        times[option] = _time_steps(step, x, flow, lambda a=archs: a, 3)
    flops = {o: arch_info([o] * 9, h, w)["flops"] for o in (0, 2)}
    print(f"lightest arch 000000000: {times[0]:.2f} s/step (x3 archs, batch 8), "
          f"forward {flops[0] / 1e9:.2f} GFLOPs/sample")
    print(f"heaviest arch 222222222: {times[2]:.2f} s/step (x3 archs, batch 8), "
          f"forward {flops[2] / 1e9:.2f} GFLOPs/sample")
    print(f"heaviest/lightest: step time x{times[2] / times[0]:.2f}, forward FLOPs x{flops[2] / flops[0]:.2f}")
    print(f"traces of the step function: {step.tracing_count()} (1 = no retracing across archs and batch sizes)")


if __name__ == "__main__":
    main()
