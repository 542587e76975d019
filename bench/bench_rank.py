"""Ranking throughput: archs evaluated per minute with the evaluation protocol, demo and production size.

One arch = BN recalibration (bn_recal_batches training-mode forwards) + evaluation (eval_batches_per_arch
inference forwards and the EPE), as `edgeflow rank` does it with the batches decoded once and cached.
Inputs are random tensors of the real shapes (decoding is bench_data.py's). At the production size the
protocol's 8 + 20 batches of 32 would take minutes per arch on a CPU, so one batch of each is timed and
the per-batch times are scaled to the protocol's batch counts (both parts are a fixed number of
identical forwards, so the scaling is linear). The one-GPU line is an estimate from the arch's FLOPs at
an assumed sustained convolution throughput, not a measurement.
"""

from __future__ import annotations

import os
import time

import numpy as np

ARCHS = ("000000000", "222222222", "111111111", "000021222")
GPU_TFLOPS = 5.0  # assumed sustained fp32 convolution throughput of one data-centre GPU (V100/A100 class)


def _batches(n: int, batch: int, h: int, w: int, seed: int) -> list:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return [(tf.constant(rng.uniform(-1, 1, (batch, h, w, 6)).astype(np.float32)),
             tf.constant(rng.normal(0, 5, (batch, h, w, 2)).astype(np.float32))) for _ in range(n)]


def _measure(label: str, h: int, w: int, batch: int, recal_batches: int, eval_batches: int,
             timed_recal: int, timed_eval: int, archs: tuple[str, ...] = ARCHS) -> None:
    from edgeflow.config import Config
    from edgeflow.model.supernet import Supernet
    from edgeflow.space.arch import parse_arch
    from edgeflow.space.cost import arch_info
    from edgeflow.train.evaluate import Evaluator

    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = h, w
    evaluator = Evaluator(Supernet(seed=0), cfg)
    recal = _batches(timed_recal, batch, h, w, 0)
    evals = _batches(timed_eval, batch, h, w, 1)
    start = time.perf_counter()
    evaluator.batch_epes(parse_arch(ARCHS[0]), recal[:1], evals[:1])
    first = time.perf_counter() - start
    recal_s, eval_s = [], []
    for code in archs:
        evaluator.batch_epes(parse_arch(code), recal, evals)
        r, e = evaluator.last_seconds
        recal_s.append(r / timed_recal * recal_batches)
        eval_s.append(e / timed_eval * eval_batches)
    per_arch = float(np.mean(recal_s) + np.mean(eval_s))
    flops = np.mean([arch_info(c, h, w)["flops"] for c in archs]) * batch * (recal_batches + eval_batches)
    print(f"{label}: {h}x{w}, {recal_batches} recal + {eval_batches} eval batches of {batch} per arch"
          + ("" if (timed_recal, timed_eval) == (recal_batches, eval_batches)
             else f" (timed {timed_recal} + {timed_eval}, scaled)"))
    print(f"  first arch (trace + cache): {first:.1f} s")
    print(f"  BN recalibration {np.mean(recal_s):.2f} s/arch, evaluation {np.mean(eval_s):.2f} s/arch "
          f"(mean of {', '.join(archs)})")
    print(f"  this machine: {60 / per_arch:.1f} archs/min ({flops / per_arch / 1e9:.1f} GFLOP/s effective)")
    gpu = flops / (GPU_TFLOPS * 1e12)
    print(f"  one GPU at {GPU_TFLOPS:g} TFLOP/s sustained (estimate): {gpu:.2f} s/arch, {60 / gpu:.0f} archs/min; "
          f"800 evaluations {800 * gpu / 60:.1f} min, all 19683 archs {19683 * gpu / 3600:.1f} h"
          + (" (small inputs do not fill a GPU: a lower bound)" if h * w * batch < 180 * 240 * 32 else ""))


def main() -> None:
    print(f"CPU cores visible: {os.cpu_count()}")
    _measure("demo size (configs/demo.yaml)", 96, 128, batch=8, recal_batches=4, eval_batches=2,
             timed_recal=4, timed_eval=2)
    _measure("production size (configs/supernet_fc2_180x240.yaml)", 180, 240, batch=32, recal_batches=8,
             eval_batches=20, timed_recal=1, timed_eval=1, archs=ARCHS[:2])


if __name__ == "__main__":
    main()
