"""Training-step throughput on this CPU for the production model (180x240).

Prints: samples/s of the full strict-fairness step (3 archs, same batch) at batch 8 and 32, and the
step time of the lightest arch (all options 0, trained 3 times) against the heaviest (all 2), next to
the ratio of their forward FLOPs from `edgeflow.model.cost.arch_info`. Timing only: the inputs are
random tensors of the real shapes (data loading is the data engineer's benchmark).
"""

from __future__ import annotations

import os
import time

import numpy as np

WARMUP_STEPS = 1
TIMED_STEPS = {8: 3, 32: 2}


def _inputs(batch: int, height: int, width: int, seed: int = 0):
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


def main() -> None:
    from edgeflow.config import Config
    from edgeflow.model.cost import arch_info
    from edgeflow.model.supernet import Supernet
    from edgeflow.nas.sampler import FairSampler
    from edgeflow.train.step import TrainStep

    cfg = Config()  # production: 180x240, Adam, clip 200, float32
    h, w = cfg.data.input_height, cfg.data.input_width
    print(f"CPU cores visible: {os.cpu_count()}; input {h}x{w}; one step = 3 archs forward+backward + Adam")
    step = TrainStep(Supernet(seed=0), cfg)
    start = time.perf_counter()
    step(*_inputs(2, h, w), FairSampler(0).next_archs(), 1e-4)
    print(f"first call (trace + graph optimisation): {time.perf_counter() - start:.1f} s")
    sampler = FairSampler(1)
    for batch, n in TIMED_STEPS.items():
        x, flow = _inputs(batch, h, w)
        seconds = _time_steps(step, x, flow, sampler.next_archs, n)
        print(f"batch {batch:>2}: {seconds:.2f} s/step, {batch / seconds:.1f} samples/s "
              f"({n} timed steps after {WARMUP_STEPS} warm-up)")
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
