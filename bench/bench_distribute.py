"""Step throughput of train.distribute on this machine: 1 replica against 3 CPU replicas.

The 3 replicas are logical CPU devices of one process (set before TensorFlow starts, hence a child
process). On a 2-core machine no speed-up is expected: the figure shows what the all-reduce and the
replica threads cost. Small input (96x128, batch 6) so the benchmark stays short.
"""

from __future__ import annotations

import subprocess
import sys
import time

H, W, BATCH, TIMED = 96, 128, 6, 2


def _child(replicas: int, mode: str) -> None:
    import tensorflow as tf

    if replicas > 1:
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * replicas)
    import numpy as np

    from edgeflow.config import Config
    from edgeflow.model.supernet import Supernet
    from edgeflow.space.sampler import FairSampler
    from edgeflow.train import distribute
    from edgeflow.train.step import TrainStep

    cfg = Config()
    cfg.data.input_height, cfg.data.input_width, cfg.train.batch_size = H, W, BATCH
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (BATCH, H, W, 6)).astype(np.float32)
    flow = rng.normal(0, 5, (BATCH, H, W, 2)).astype(np.float32)
    if replicas == 1:
        step = TrainStep(Supernet(seed=0), cfg)
    else:
        cfg.train.distribute, cfg.train.distribute_mode = "mirrored", mode
        strategy, _ = distribute.make_strategy(cfg)
        step = distribute.DistributedTrainStep(distribute.build_model(cfg, strategy), cfg, strategy)
    sampler = FairSampler(0)
    step(x, flow, sampler.next_archs(), 1e-4)
    start = time.perf_counter()
    for _ in range(TIMED):
        step(x, flow, sampler.next_archs(), 1e-4)
    print(f"RESULT {BATCH * TIMED / (time.perf_counter() - start):.3f}")


def main() -> None:
    print(f"input {H}x{W}, global batch {BATCH}, {TIMED} timed steps after 1 warm-up")
    rates = {}
    for replicas, mode in ((1, "-"), (3, "arch_parallel"), (3, "data_parallel")):
        proc = subprocess.run([sys.executable, "-m", "bench.bench_distribute", str(replicas), mode],
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{replicas} replica(s) {mode}: failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        rates[replicas, mode] = float(line[0].split()[1])
        print(f"{replicas} replica(s) {mode:>13}: {rates[replicas, mode]:.2f} samples/s")
    one = rates.get((1, "-"))
    for key, rate in rates.items():
        if one and key[0] > 1:
            print(f"{key[1]} on {key[0]} CPU replicas / 1 replica: x{rate / one:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        _child(int(sys.argv[1]), sys.argv[2])
    else:
        main()
