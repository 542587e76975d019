"""Export cost and CPU inference speed of the baseline subnet at 180x240.

Prints: the seconds to write the SavedModel and the float32 TFLite model of arch 000021222, and the
milliseconds per frame on this CPU of the supernet (that arch selected), the exported SavedModel and
the float32 TFLite model (TensorFlow's interpreter, XNNPACK), batch 1. Timing only: freshly
initialised weights and a random input of the real shape (the export's parity is tested, not timed).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

ARCH = "000021222"
H, W = 180, 240
RUNS = 3


def _ms_per_call(fn, runs: int = RUNS) -> float:
    fn()  # warm-up (tracing, allocation)
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs * 1000


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from edgeflow.export import formats, parity
    from edgeflow.export.subnet import Subnet
    from edgeflow.export.weights import copy_from_supernet
    from edgeflow.model.supernet import Supernet

    arch = [int(c) for c in ARCH]
    supernet = Supernet(seed=0)
    subnet = Subnet(arch)
    copy_from_supernet(supernet, subnet)
    module = formats.ServingModule(subnet, H, W)
    x = np.random.default_rng(0).uniform(-1, 1, (1, H, W, 6)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        formats.write_saved_model(module, Path(tmp) / "sm")
        saved_s = time.perf_counter() - start
        start = time.perf_counter()
        model = formats.tflite_float(module)
        tflite_s = time.perf_counter() - start
        loaded = tf.saved_model.load(str(Path(tmp) / "sm"))
        serve = loaded.signatures[formats.NORMALIZED]
        arch_t = tf.constant(arch, tf.int32)
        forward = tf.function(lambda v: supernet(v, arch_t, training=False))
        predict = parity.tflite_predict(model)
        xt = tf.constant(x)
        super_ms = _ms_per_call(lambda: forward(xt)[-1].numpy())
        saved_ms = _ms_per_call(lambda: serve(x=xt)["flow"].numpy())
        tflite_ms = _ms_per_call(lambda: predict(x))
    print(f"arch {ARCH} at {H}x{W}: SavedModel written in {saved_s:.1f} s, float32 TFLite in "
          f"{tflite_s:.1f} s ({len(model) / 2**20:.1f} MiB)")
    print(f"ms per frame (batch 1, {RUNS} runs): supernet {super_ms:.1f}, SavedModel {saved_ms:.1f}, "
          f"float32 TFLite {tflite_ms:.1f}")
