"""The strict-fairness step on several replicas through tf.distribute (train.distribute).

Two ways to spread a step (train.distribute_mode):

- arch_parallel (3 replicas, or 3m): replica r computes arch r % 3 on batch shard r // 3 (the whole
  batch when m = 1). Gradients, each weighted by 1/3 and the shard's share of the batch, are summed
  by an all-reduce, so with 3 replicas the loss, the gradient, its norm, the clipping and the Adam
  update are the single-device arithmetic (to float rounding: the sum runs in another order).
  BN moving statistics: every replica sends its updated copy to all others, and each applies the
  three arch updates in arch order, as the single device does one arch after the other.
- data_parallel (any replica count dividing the batch): replica r runs all 3 archs on shard r of the
  batch; BN batch statistics are then those of the shard (per replica), and the moving statistics
  are averaged over replicas (weighted by shard size) after every step, so all copies stay equal.

Variables: weights and Adam slots are mirrored (one copy per replica, updated once in cross-replica
context with the all-reduced gradient); BN moving statistics are replica-local (ON_READ), since each
replica updates its copy in its own forward pass, and are made equal again by the step.
A non-finite loss or gradient skips the update on every replica and restores the BN statistics,
as selects on the devices; what each step did goes into this process's step log, read by the loop
only now and then (edgeflow/train/steplog.py), as on one device. A multi-worker job's stop signal
rides on the gradient all-reduce and halts the log of every task at the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow import jobenv
from edgeflow.config import Config
from edgeflow.data.pipeline import to_unit_range
from edgeflow.model import layers
from edgeflow.model.layers import BN_MOMENTUM
from edgeflow.space.arch import NUM_BLOCKS
from edgeflow.train import workers
from edgeflow.train.layout import KINDS, DistributeError, Layout, check_layout
from edgeflow.train.restore import build_supernet
from edgeflow.train.step import DEFAULT_LOG_STEPS, TrainStep
from edgeflow.train.steplog import StepLog
from edgeflow.train.workers import Task


def make_strategy(cfg: Config, devices: list[str] | None = None) -> tuple[tf.distribute.Strategy | None, Task]:
    """The strategy for train.distribute (None: one device, the plain step) and this trainer's task.

    `auto`: several SLURM tasks -> multi_worker; else several visible GPUs -> mirrored; else none.
    multi_worker must come before anything else starts TensorFlow's runtime (edgeflow/train/workers.py).
    """
    kind = cfg.train.distribute
    if kind == "auto":
        if jobenv.task_count() > 1:
            kind = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "none"
    if kind == "none":
        return None, Task()
    if kind == "mirrored":
        if devices is None and not tf.config.list_physical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices), Task()
    if kind == "multi_worker":
        return workers.connect(cfg)
    raise DistributeError(f"train.distribute: must be one of {', '.join(KINDS)}, got {kind!r}")


def check_last_batch(layout: Layout, train_samples: int, batch_size: int, sync_batch_norm: bool) -> None:
    """Cross-replica BN needs every replica in every step: refuse an epoch whose last batch leaves a shard empty."""
    last = train_samples % batch_size
    if sync_batch_norm and 0 < last < layout.shards:
        raise DistributeError(f"train.sync_batch_norm: the last batch of an epoch has {last} of {train_samples} "
                              f"samples, fewer than the {layout.shards} replicas that must each get one; change "
                              f"train.batch_size or the number of replicas, or set sync_batch_norm: false")


def _local_bn_creator(next_creator: Callable[..., Any], **kwargs: Any) -> Any:
    # BN moving statistics are the only non-trainable variables of the supernet.
    if kwargs.get("trainable") is False:
        kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
        kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)


def build_model(cfg: Config, strategy: tf.distribute.Strategy) -> tf.Module:
    """The supernet with mirrored weights and replica-local BN moving statistics."""
    with strategy.scope(), tf.variable_creator_scope(_local_bn_creator):
        return build_supernet(cfg)


def _bn_usage(model: tf.Module) -> list[tuple[int, int]]:
    """(block, option) that makes an arch use each BN moving variable; (-1, -1): every arch does."""
    all_vars = list(model.bn_moving_variables)
    used = [{v.ref() for v in model.arch_bn_moving_variables([o] * NUM_BLOCKS)} for o in range(3)]
    common = used[0] & used[1] & used[2]
    block_of: dict[Any, int] = {}
    for layer_name, module in model.layers.items():
        block = next(layer.block for layer in _layers() if layer.name == layer_name)
        if block is None:
            continue
        for sub in module.submodules:
            for v in (getattr(sub, "moving_mean", None), getattr(sub, "moving_variance", None)):
                if v is not None:
                    block_of[v.ref()] = block
    usage = []
    for v in all_vars:
        if v.ref() in common:
            usage.append((-1, -1))
            continue
        options = [o for o in range(3) if v.ref() in used[o]]
        if len(options) != 1 or v.ref() not in block_of:
            raise AssertionError(f"BN variable {v.name} is not used by exactly one option of one block")
        usage.append((block_of[v.ref()], options[0]))
    return usage


def _layers():
    from edgeflow.space.table import LAYERS
    return LAYERS


# A multi-worker task looks at the shared stop flag after this many steps (the same steps on every
# task, so all stop at the same one); each look waits for the device once.
STOP_POLL_STEPS = 16


class DistributedTrainStep(TrainStep):
    """TrainStep on the replicas of `strategy`; same launch, log and StepResult as the single-device step."""

    def __init__(self, model: tf.Module, cfg: Config, strategy: tf.distribute.Strategy, *,
                 log_steps: int = DEFAULT_LOG_STEPS) -> None:
        t = cfg.train
        if t.micro_batch_size:
            raise DistributeError("train.micro_batch_size: micro-batching is not combined with train.distribute; "
                                  "spread the batch over replicas instead (set it to 0)")
        if t.mixed_precision in (True, "float16"):
            raise DistributeError("train.mixed_precision: float16 loss scaling is not combined with "
                                  "train.distribute; use bfloat16")
        self.strategy = strategy
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.layout = check_layout(t.distribute_mode, strategy.num_replicas_in_sync, t.batch_size)
        self.sync_bn = bool(t.sync_batch_norm)
        # The step log is this process's own (plain variables, outside the strategy's scope).
        self._own_log = StepLog(log_steps)
        with strategy.scope():
            super().__init__(model, cfg, log_steps=log_steps)
        self.momentum = float(BN_MOMENTUM)
        usage = _bn_usage(model)
        self.bn_block = [b for b, _ in usage]
        self.bn_option = [o for _, o in usage]
        self._replica_fn = self._arch_replica if self.layout.mode == "arch_parallel" else self._data_replica
        # Per-replica shapes vary with the last batch of an epoch: one generalised trace serves them all.
        self.function = tf.function(self._distributed_step, reduce_retracing=True)
        if self.jit_compile:
            # XLA cannot compile the step whole here: tf.distribute's replica all-reduce is a merge
            # across replica threads, not an op. Auto-clustering compiles the parts around it.
            tf.config.optimizer.set_jit("autoclustering")

    def _make_log(self, log_steps: int) -> StepLog:
        return self._own_log

    # ------------------------------------------------------------------ host side
    @property
    def collective_stop(self) -> bool:
        return self.multi_worker

    def place(self, x: Any, flow: Any) -> Any:
        """Each replica's shard of the batch on its device (uint8 frames mapped to [-1, 1] there)."""
        x, flow = np.asarray(x), np.asarray(flow)
        batch = x.shape[0]
        layout = self.layout

        def take(ctx, what: int) -> tf.Tensor:
            lo, hi = layout.bounds(batch, layout.shard_of(ctx.replica_id_in_sync_group))
            if what == 0:
                return to_unit_range(x[lo:hi]) if x.dtype == np.uint8 else tf.constant(x[lo:hi])
            if what == 1:
                return tf.constant(flow[lo:hi])
            return tf.constant((hi - lo) / batch, tf.float32)

        dist = self.strategy.experimental_distribute_values_from_function
        return dist(lambda c: take(c, 0)), dist(lambda c: take(c, 1)), dist(lambda c: take(c, 2))

    def launch(self, batch: Any, archs: Any, lr: float, stop: bool = False) -> None:
        xs, flows, shares = batch
        self.function(xs, flows, shares, tf.convert_to_tensor(archs, tf.int32), tf.constant(lr, tf.float32),
                      tf.constant(1.0 if stop and self.multi_worker else 0.0))

    def any_stop(self, stop: bool) -> bool:
        """Whether any task saw a stop signal: a collective in a multi-worker job, so all stop together."""
        if self.multi_worker:
            return workers.any_task(self.strategy, stop)
        return stop

    # ------------------------------------------------------------------ graph side
    def _arch_replica(self, x, flow, share, archs, stop):
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group
        before = [tf.identity(v) for v in self.bn_variables]
        arch_index = replica % 3
        arch = archs[arch_index]
        loss, acc = self._guarded(x, flow, arch, share / 3.0, self.flat.zeros())
        # Everyone's updated BN copies, positioned by replica (a sum with zeros is exact).
        mine = self._bn_flat()
        onehot = tf.one_hot(replica, self.layout.replicas, dtype=tf.float32)
        gathered = ctx.all_reduce(tf.distribute.ReduceOp.SUM, onehot[:, None] * mine[None, :])
        # The stop flags ride on the gradient all-reduce: every task learns of a signal at the same step.
        loss, acc, stop = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss, acc, tf.identity(stop)])
        composed = self._compose(before, gathered, archs)
        return loss, acc, before, composed, stop

    def _compose(self, before: list[tf.Tensor], gathered: tf.Tensor, archs: tf.Tensor) -> list[tf.Tensor]:
        """Apply every replica's BN update in (arch, shard) order, as one device runs the archs in turn."""
        m = self.momentum
        order = sorted(range(self.layout.replicas), key=lambda r: (r % 3, r // 3))
        out, offset = [], 0
        for old, block, option in zip(before, self.bn_block, self.bn_option, strict=True):
            size = int(np.prod(old.shape))
            value = old
            for r in order:
                local = tf.reshape(gathered[r, offset:offset + size], old.shape)
                # local = m*old + (1-m)*batch_stat when replica r's arch used this BN, else old.
                increment = local - m * old
                if block < 0:
                    value = m * value + increment
                else:
                    used = tf.equal(archs[r % 3][block], option)
                    value = tf.where(used, m * value + increment, value)
            out.append(value)
            offset += size
        return out

    def _data_replica(self, x, flow, share, archs, stop):
        ctx = tf.distribute.get_replica_context()
        before = [tf.identity(v) for v in self.bn_variables]
        loss = tf.constant(0.0)
        acc = self.flat.zeros()
        if self.sync_bn:
            # Every replica must reach every BN all-reduce: no per-replica branch (the start refused
            # batches that would leave a shard empty), and the arch loop unrolled (no collectives in
            # a while loop).
            with layers.cross_replica_statistics():
                for k in range(3):
                    loss, acc = self._accumulate(x, flow, archs[k], share / 3.0, loss, acc)
        else:
            for k in tf.range(3):
                loss_k, acc = self._guarded(x, flow, archs[k], share / 3.0, acc)
                loss += loss_k
        # Moving statistics: the share-weighted mean of the replicas' copies.
        mean = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [share * tf.convert_to_tensor(v) for v in self.bn_variables])
        loss, acc, stop = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [loss, acc, tf.identity(stop)])
        return loss, acc, before, mean, stop

    def _guarded(self, x, flow, arch, weight, acc):
        """Loss * weight and acc + weight * gradient; nothing for an empty shard (a tiny last batch)."""
        def run():
            return self._accumulate(x, flow, arch, weight, tf.constant(0.0), acc)
        return tf.cond(tf.shape(x)[0] > 0, run, lambda: (tf.constant(0.0), acc))

    def _replica(self, x, flow, share, archs, stop, halted):
        loss, acc, before, after, stop = self._replica_fn(x, flow, share, archs, stop)
        loss, acc = self._weight_decay(loss, acc)
        grad_norm = tf.linalg.global_norm(acc)
        finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm))
        applied = tf.logical_and(finite, tf.logical_not(halted))
        for var, old, new in zip(self.bn_variables, before, after, strict=True):
            var.assign(tf.where(applied, new, old))
        return loss, acc, stop

    def _distributed_step(self, xs, flows, shares, archs, lr, stop):
        halted = self.log.halted()
        loss, acc, stop = self.strategy.run(self._replica, args=(xs, flows, shares, archs, stop, halted))
        # Every replica holds the same all-reduced values; the update runs once, on the mirrored weights.
        first = self.strategy.experimental_local_results
        loss, stop = first(loss)[0], first(stop)[0]
        acc = [first(a)[0] for a in acc]
        self._finish(loss, acc, lr, stop=(stop > 0) if self.multi_worker else None, strategy=self.strategy)
