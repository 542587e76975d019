"""A stand-alone net's training step (`train.arch`) next to the supernet's, for the same arch and batch.

The supernet's step is the strict-fairness one: 3 archs on the same batch, the arch given among them
(the other two complete each block's permutation). The stand-alone step trains that arch alone, on a
net of only its layers (edgeflow/model/fixed.py). Printed: both step times, their ratio, and the
supernet's cost of the arch itself: a third of its step with all 3 rows that arch (same work as the
stand-alone step three times, through the supernet's switches). Timing only, on random tensors of the real shapes; the
two steps alternate over two rounds and the faster of each is kept (the box's load changes).

`EDGEFLOW_BENCH_QUICK=1` skips 180x240 (the production crop, batch 32: minutes on a small CPU).
"""

from __future__ import annotations

import os
import time

import numpy as np

ARCH = "000021222"  # the EdgeFlowNet baseline


def _step_seconds(step, x, flow, archs, steps: int) -> float:
    step(x, flow, archs, 1e-4)  # traces
    start = time.perf_counter()
    for _ in range(steps):
        step(x, flow, archs, 1e-4)
    return (time.perf_counter() - start) / steps


def _measure(height: int, width: int, batch: int, steps: int) -> tuple[float, float, float]:
    from edgeflow.config import Config
    from edgeflow.model.fixed import FixedArchNet
    from edgeflow.model.supernet import Supernet
    from edgeflow.space.arch import parse_arch
    from edgeflow.train.step import TrainStep

    arch = np.asarray(parse_arch(ARCH), dtype=np.int32)
    fair = np.stack([arch, (arch + 1) % 3, (arch + 2) % 3])  # a strict-fairness step holding the arch
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, height, width, 6)).astype(np.float32)
    flow = rng.normal(0, 5, (batch, height, width, 2)).astype(np.float32)
    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = height, width
    supernet = TrainStep(Supernet(seed=0), cfg)
    alone_cfg = Config()
    alone_cfg.data.input_height, alone_cfg.data.input_width = height, width
    alone_cfg.train.arch = ARCH
    alone = TrainStep(FixedArchNet(parse_arch(ARCH), seed=0), alone_cfg)
    same = np.stack([arch] * 3)
    best = [float("inf")] * 3
    for _ in range(2):
        best[0] = min(best[0], _step_seconds(supernet, x, flow, fair, steps))
        best[1] = min(best[1], _step_seconds(alone, x, flow, arch[None, :], steps))
        best[2] = min(best[2], _step_seconds(supernet, x, flow, same, steps) / 3)
    return best[0], best[1], best[2]


def main() -> None:
    sizes = [(32, 48, 2, 20)]
    if os.environ.get("EDGEFLOW_BENCH_QUICK") != "1":
        sizes.append((180, 240, 32, 2))
    else:
        print("180x240 skipped (EDGEFLOW_BENCH_QUICK=1)")
    for height, width, batch, steps in sizes:
        sup, alone, own = _measure(height, width, batch, steps)
        print(f"arch {ARCH} at {height}x{width}, batch {batch}, float32: supernet step (3 archs) "
              f"{sup * 1000:.1f} ms, stand-alone step {alone * 1000:.1f} ms (x{sup / alone:.2f}); "
              f"the arch in the supernet's step {own * 1000:.1f} ms (a third of a step of 3 x the arch)")


if __name__ == "__main__":
    main()
