"""Run by tests/test_distribute.py in a fresh process: 3 logical CPU devices must exist before TF starts.

Prints one JSON line comparing the arch-parallel step on 3 replicas with the single-device step, and
the data-parallel step's results.
"""

from __future__ import annotations

import json
import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 3)
# Eager: the same replica code without compiling three copies of the supernet's graph, which takes
# minutes on a small machine; the traced path is exercised by `python -m bench distribute`.
tf.config.run_functions_eagerly(True)

import numpy as np  # noqa: E402

from edgeflow.config import Config  # noqa: E402
from edgeflow.space.sampler import FairSampler  # noqa: E402
from edgeflow.train import distribute  # noqa: E402
from edgeflow.train.restore import build_supernet  # noqa: E402
from edgeflow.train.step import TrainStep  # noqa: E402

H, W, B, STEPS = 32, 48, 6, 2


def make_cfg(mode: str) -> Config:
    """`data_parallel_sync`: data_parallel with train.sync_batch_norm."""
    cfg = Config()
    cfg.train.sync_batch_norm = mode.endswith("_sync")
    mode = mode.removesuffix("_sync")
    cfg.data.input_height, cfg.data.input_width = H, W
    cfg.train.batch_size, cfg.train.lr = B, 1e-3
    cfg.train.distribute, cfg.train.distribute_mode = "mirrored", mode
    cfg.train.grad_clip_global_norm = 5.0  # low enough that clipping takes part
    return cfg


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.uniform(-1, 1, (B, H, W, 6)).astype(np.float32), rng.normal(0, 3, (B, H, W, 2)).astype(np.float32))
            for _ in range(STEPS)]


def main() -> None:
    mode = sys.argv[1]
    cfg = make_cfg(mode)
    data = batches()
    sampler = FairSampler(5)
    archs = [sampler.next_archs() for _ in range(STEPS)]
    strategy, _ = distribute.make_strategy(cfg)
    model = distribute.build_model(cfg, strategy)
    step = distribute.DistributedTrainStep(model, cfg, strategy)
    results, bn_after_first, ref_out = [], [], []
    # arch_parallel: the single-device step from the same state before every step (weights, slots, BN
    # statistics), so each step is compared on its own; the network at init amplifies rounding-level
    # differences of earlier steps far beyond rounding (a 1e-7 change of a first-layer weight moves
    # half of the next gradient's entries by more than 1e-3), which says nothing about the step.
    ref = TrainStep(build_supernet(cfg), make_cfg(mode)) if mode == "arch_parallel" else None
    for (x, y), a in zip(data, archs, strict=True):
        if ref is not None:
            for mine, theirs in zip(ref.variables + ref.bn_variables + ref.optimizer.slot_variables(),
                                    step.variables + step.bn_variables + step.optimizer.slot_variables(), strict=True):
                mine.assign(theirs.values[0])
            ref_out.append(ref._step(tf.constant(x), tf.constant(y), tf.constant(a), tf.constant(1e-3)))
        results.append(step(x, y, a, 1e-3))
        if not bn_after_first:
            bn_after_first = [v.values[0].numpy() for v in step.bn_variables]
    out: dict = {"replicas": strategy.num_replicas_in_sync, "loss": [r.loss for r in results],
                 "grad_norm": [r.grad_norm for r in results], "clipped": [r.clipped for r in results],
                 "finite": [r.finite for r in results]}
    # Every replica's BN copy must be the same after the step.
    out["bn_copies_equal"] = all(
        all(np.array_equal(c.numpy(), v.values[0].numpy()) for c in v.values) for v in step.bn_variables)
    if mode == "arch_parallel":
        # The single-device reference (run eagerly: no second graph to compile), state synced above.
        assert ref is not None
        out["ref_loss"] = [float(r["loss"]) for r in ref_out]
        out["ref_grad_norm"] = [float(r["grad_norm"]) for r in ref_out]
        out["weight_max_diff"] = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                                     for a, b in zip(step.variables, ref.variables, strict=True))
        fresh = build_supernet(cfg)  # same seed: the same initial weights
        diffs = np.concatenate([np.abs(a.numpy() - b.numpy()).ravel()
                                for a, b in zip(step.variables, ref.variables, strict=True)])
        # Adam moves a weight by about lr whatever its gradient's size, so a gradient entry at rounding
        # level (summed in another order by the all-reduce) can move by up to lr: count those.
        out["weight_frac_off"] = float(np.mean(diffs > 1e-6))
        out["weight_max_change"] = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                                       for a, b in zip(ref.variables, fresh.trainable_variables, strict=True))
        out["bn_max_diff"] = max(float(np.max(np.abs(a.values[0].numpy() - b.numpy())))
                                 for a, b in zip(step.bn_variables, ref.bn_variables, strict=True))
        out["bn_max_change"] = max(float(np.max(np.abs(b.numpy() - c.numpy())))
                                   for b, c in zip(ref.bn_variables, fresh.bn_moving_variables, strict=True))
    if mode == "data_parallel":
        # What the docs promise: each arch's loss and gradient on each third of the batch, with that
        # third's own BN batch statistics, weighted by its share (computed eagerly on one device).
        ref = TrainStep(build_supernet(cfg), make_cfg(mode))
        (x, y), a = data[0], archs[0]
        total, grads = tf.constant(0.0), ref.flat.zeros()
        for shard in range(3):
            lo, hi = shard * B // 3, (shard + 1) * B // 3
            for k in range(3):
                total, grads = ref._accumulate(tf.constant(x[lo:hi]), tf.constant(y[lo:hi]), tf.constant(a[k]),
                                               (hi - lo) / B / 3, total, grads)
        total, grads = ref._weight_decay(total, grads)  # once per step, as the step adds it
        out["ref_loss0"], out["ref_grad_norm0"] = float(total), float(tf.linalg.global_norm(grads))
        whole = TrainStep(build_supernet(cfg), make_cfg(mode))
        out["whole_batch_loss0"] = float(whole._step(tf.constant(x), tf.constant(y), tf.constant(a),
                                                     tf.constant(1e-3))["loss"])
    if mode == "data_parallel_sync":
        # Cross-replica statistics are those of the whole batch: the single-device step, to rounding.
        ref = TrainStep(build_supernet(cfg), make_cfg("data_parallel"))
        ref_out = []
        fresh = build_supernet(cfg)
        for (x, y), a in zip(data, archs, strict=True):
            ref_out.append(ref._step(tf.constant(x), tf.constant(y), tf.constant(a), tf.constant(1e-3)))
            if len(ref_out) == 1:  # BN moving statistics after the first step, before Adam's amplification
                out["bn_max_diff"] = max(float(np.max(np.abs(a1 - b.numpy())))
                                         for a1, b in zip(bn_after_first, ref.bn_variables, strict=True))
                out["bn_max_change"] = max(float(np.max(np.abs(b.numpy() - c.numpy())))
                                           for b, c in zip(ref.bn_variables, fresh.bn_moving_variables, strict=True))
        out["ref_loss"] = [float(r["loss"]) for r in ref_out]
        out["ref_grad_norm"] = [float(r["grad_norm"]) for r in ref_out]
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
