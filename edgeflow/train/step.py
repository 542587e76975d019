"""The strict-fairness training step of protocol §4 as ONE traced function that never makes the host wait.

Signature: (x [None, H, W, 6], flow [None, H, W, 2], archs int32 [3, 9], lr scalar); a stand-alone net
(`train.arch`, edgeflow/model/fixed.py) takes archs [1, 9], its own arch, with the same arithmetic. The arch codes
and the LR are tensors, and the batch dimension is unknown, so every arch and the smaller last batch
reuse the same trace (with `train.jit_compile`, XLA compiles it once per batch size).

Per step: the 3 archs see the same batch; each arch's loss is the supernet loss (protocol §3) and its
gradient, weighted by 1/3 (and by its micro-batch's share of the batch), is added into two flat
buffers (conv kernels; everything else), so the sum over archs costs two kernels per arch instead of
two per variable. The coupled weight decay, the same for every arch, is added once: its loss to the
mean loss, its gradient `wd * W` to the flat kernel buffer. The global norm is measured before
clipping; then one fused Adam update (edgeflow/train/optimizer.py).

Nothing is decided on the host: a non-finite loss or gradient turns the update into an exact zero
step (a select, not a branch) and puts the BN moving statistics the forward passes changed back, so
weights, Adam slots, the update count and BN statistics stay exactly as they were. What the step did
(loss, grad norm, clipped, outcome) goes into the device-side step log (edgeflow/train/steplog.py),
which the loop reads at heartbeats, progress lines and epoch ends only.

Mixed precision (`train.mixed_precision`, a float16 model): the loss is multiplied by a dynamic loss
scale before differentiation and every gradient divided by it (in float32) before averaging, norm and
clipping. A step whose loss is finite but whose scaled gradients overflowed is skipped like a
non-finite one but recorded as an overflow: the scale is halved and training goes on. In float32 and
bfloat16 (float32's exponent range: nothing underflows) none of this is in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.config import Config, compute_precision
from edgeflow.data.pipeline import to_unit_range
from edgeflow.space.arch import NUM_BLOCKS
from edgeflow.space.sampler import archs_per_step
from edgeflow.train import loss as loss_lib
from edgeflow.train.loss_scale import DynamicLossScale
from edgeflow.train.optimizer import Adam
from edgeflow.train.steplog import StepLog

# Rows of the step log when the caller does not say (the loop passes an epoch's length).
DEFAULT_LOG_STEPS = 256


@dataclass(frozen=True)
class StepResult:
    loss: float       # mean over the 3 archs (and micro-batches, weighted by size)
    grad_norm: float  # global norm of the averaged gradient, before clipping
    clipped: bool
    finite: bool      # the update was applied (or skipped only for a loss-scale overflow, see below)
    # Mixed precision only: the scaled gradients overflowed, the update was skipped and the scale
    # halved. Not a divergence sign, so `finite` stays True; the loop must not train on it either.
    overflow: bool = False
    loss_scale: float | None = None  # the scale after this step (None in float32)


class _ShapeConstants:
    """One constant per distinct shape within a trace (many variables share a shape): fewer graph nodes."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, ...], tf.Tensor] = {}

    def __call__(self, shape: Any) -> tf.Tensor:
        key = tuple(int(d) for d in shape)
        if key not in self._made:
            self._made[key] = tf.constant(key, tf.int32) if key else tf.constant([], tf.int32)
        return self._made[key]


class FlatGrads:
    """The order of the variables in the two flat gradient buffers: conv kernels, then the rest."""

    def __init__(self, variables: Sequence[tf.Variable], kernels: Sequence[tf.Variable]) -> None:
        kernel_refs = {k.ref() for k in kernels}
        self.kernels = [v for v in variables if v.ref() in kernel_refs]
        self.others = [v for v in variables if v.ref() not in kernel_refs]
        self.order = self.kernels + self.others
        position = {v.ref(): i for i, v in enumerate(self.order)}
        self.to_model_order = [position[v.ref()] for v in variables]
        self.sizes = [[int(np.prod(v.shape)) for v in group] for group in (self.kernels, self.others)]

    def flatten(self, grads: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Gradients in `order` -> [kernels flat, others flat] (float32)."""
        n = len(self.kernels)
        flat_shape = tf.constant([-1])  # one constant for every reshape: fewer graph nodes
        return [tf.concat([tf.reshape(tf.cast(g, tf.float32), flat_shape) for g in part], 0)
                for part in (grads[:n], grads[n:])]

    def unflatten(self, flats: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """[kernels flat, others flat] -> one tensor per variable, in the model's variable order."""
        out: list[tf.Tensor] = []
        shapes = _ShapeConstants()
        for flat, group, sizes in zip(flats, (self.kernels, self.others), self.sizes, strict=True):
            out += [tf.reshape(p, shapes(v.shape)) for p, v in zip(tf.split(flat, sizes), group, strict=True)]
        return [out[i] for i in self.to_model_order]

    def zeros(self) -> list[tf.Tensor]:
        return [tf.zeros([sum(s)], tf.float32) for s in self.sizes]


class TrainStep:
    def __init__(self, model: tf.Module, cfg: Config, *, log_steps: int = DEFAULT_LOG_STEPS) -> None:
        t = cfg.train
        self.model = model
        self.variables = list(model.trainable_variables)
        self.kernels = list(model.conv_kernels)
        self.bn_variables = list(model.bn_moving_variables)
        self.flat = FlatGrads(self.variables, self.kernels)
        self.optimizer = Adam(self.variables, beta1=t.adam_beta1, beta2=t.adam_beta2, epsilon=t.adam_epsilon)
        self.weight_decay = float(t.weight_decay)
        self.clip_norm = float(t.grad_clip_global_norm)
        self.micro_batch_size = int(t.micro_batch_size)
        # Strict fairness: one arch per option, so every option of every block trains once per step; a
        # stand-alone net (train.arch): its one arch.
        self.archs_per_step = archs_per_step(t.arch)
        self.jit_compile = bool(t.jit_compile)
        compute_dtype = tf.as_dtype(getattr(model, "compute_dtype", tf.float32))
        wanted = compute_precision(t.mixed_precision)
        if compute_dtype.name != wanted:
            # Loss scaling without float16 is pointless and float16 without it underflows gradients.
            raise ValueError(f"train.mixed_precision={t.mixed_precision} needs a model computing in "
                             f"{wanted}, got {compute_dtype.name}")
        self.loss_scale: DynamicLossScale | None = DynamicLossScale() if wanted == "float16" else None
        self.log = self._make_log(log_steps)
        self.device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
        h, w = cfg.data.input_height, cfg.data.input_width
        signature = [
            tf.TensorSpec([None, h, w, 6], tf.float32, name="x"),
            tf.TensorSpec([None, h, w, 2], tf.float32, name="flow"),
            tf.TensorSpec([self.archs_per_step, NUM_BLOCKS], tf.int32, name="archs"),
            tf.TensorSpec([], tf.float32, name="lr"),
        ]
        # jit_compile: XLA compiles the whole step, one executable per batch size (docs/training.md).
        self.function = tf.function(self._step, input_signature=signature, jit_compile=self.jit_compile or None)

    def _make_log(self, log_steps: int) -> StepLog:
        return StepLog(log_steps)

    # ------------------------------------------------------------------ host side
    def place(self, x: Any, flow: Any) -> Any:
        """The step's inputs on its device (the input feed calls this ahead of time, in its thread):
        uint8 frames cross to the device as they are and are mapped to [-1, 1] there."""
        with tf.device(self.device):
            x = to_unit_range(x) if tf.as_dtype(x.dtype) == tf.uint8 else tf.identity(x)
            return x, tf.identity(flow)

    def launch(self, batch: Any, archs: Any, lr: float, stop: bool = False) -> None:
        """Queue one step on the inputs `place` returned; nothing is read back (see `log.read`).

        `stop` matters to the multi-worker step only (a signal shared with the other tasks)."""
        x, flow = batch
        self.function(x, flow, tf.convert_to_tensor(archs, tf.int32), tf.constant(lr, tf.float32))

    def __call__(self, x: Any, flow: Any, archs: Any, lr: float, stop: bool = False) -> StepResult:
        """One step, then its record: waits for the device (tests, benchmarks, the image check)."""
        self.launch(self.place(x, flow), archs, lr, stop=stop)
        record = self.log.read().records[-1]
        return StepResult(loss=record.loss, grad_norm=record.grad_norm, clipped=record.clipped,
                          finite=record.applied or record.overflow, overflow=record.overflow,
                          loss_scale=record.loss_scale)

    @property
    def collective_stop(self) -> bool:
        """True when a stop signal must reach other processes through the step (multi-worker)."""
        return False

    def any_stop(self, stop: bool) -> bool:
        """Whether any trainer of the job saw a stop signal (one process: its own flag)."""
        return stop

    def tracing_count(self) -> int:
        return int(self.function.experimental_get_tracing_count())

    # ------------------------------------------------------------------ graph side
    def _accumulate(self, x, flow, arch, weight, total_loss, acc, scale=None):
        """total_loss + weight * loss(arch) and acc + weight * its gradient (flat); weight decay not included.

        The weight multiplies the loss inside the tape, so the gradient comes out weighted and is added
        in one pass (the same sum as weighting each gradient, to float rounding)."""
        with tf.GradientTape() as tape:
            outputs = self.model(x, arch, training=True)
            loss = tf.cast(loss_lib.supernet_loss(outputs, flow), tf.float32)
            # Scaled inside the tape so the float16 backward pass carries large enough values.
            target = loss * weight if scale is None else loss * (weight * scale)
        grads = tape.gradient(target, self.flat.order, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flats = self.flat.flatten(grads)
        if scale is not None:
            # Unscale in float32 before anything sums, measures or clips the gradients.
            flats = [f / scale for f in flats]
        return total_loss + loss * weight, [a + f for a, f in zip(acc, flats, strict=True)]

    def _weight_decay(self, loss, acc):
        """Add the coupled L2 term once: its loss (protocol §3) and its gradient wd * W to the kernels."""
        if self.weight_decay == 0.0:
            return loss, acc
        # One flat copy of the kernels serves both (its l2 sum equals protocol §3's to float rounding).
        flat_shape = tf.constant([-1])
        weights = tf.concat([tf.reshape(k, flat_shape) for k in self.flat.kernels], 0)
        loss = loss + self.weight_decay * tf.nn.l2_loss(weights)
        return loss, [acc[0] + self.weight_decay * weights, acc[1]]

    def _bn_flat(self) -> tf.Tensor:
        flat_shape = tf.constant([-1])
        return tf.concat([tf.reshape(tf.convert_to_tensor(v), flat_shape) for v in self.bn_variables], 0)

    def _restore_bn_unless(self, keep: tf.Tensor, saved: tf.Tensor) -> None:
        """Put the BN moving statistics back to `saved` (flat) where `keep` is false; one select."""
        chosen = tf.where(keep, self._bn_flat(), saved)
        sizes = [int(np.prod(v.shape)) for v in self.bn_variables]
        shapes = _ShapeConstants()
        for var, part in zip(self.bn_variables, tf.split(chosen, sizes), strict=True):
            var.assign(tf.reshape(part, shapes(var.shape)))

    def _step(self, x: tf.Tensor, flow: tf.Tensor, archs: tf.Tensor, lr: tf.Tensor) -> dict[str, tf.Tensor]:
        # Read before any forward pass; automatic control dependencies order these reads first.
        bn_before = self._bn_flat()
        batch = tf.shape(x)[0]
        micro = batch if self.micro_batch_size <= 0 else tf.minimum(self.micro_batch_size, batch)
        num_micro = (batch + micro - 1) // micro
        batch_f = tf.cast(batch, tf.float32)
        arch_weight = 1.0 / self.archs_per_step

        # Read once: the scale is constant within a step (it changes only at the end).
        scale = None if self.loss_scale is None else tf.identity(self.loss_scale.scale)
        total_loss = tf.constant(0.0)
        acc = self.flat.zeros()
        # A graph loop (not a Python one) so the model is traced once, not once per arch; a stand-alone
        # net's one arch needs no loop.
        for k in (tf.range(self.archs_per_step) if self.archs_per_step > 1 else range(1)):
            arch = archs[k]
            if self.micro_batch_size <= 0:
                total_loss, acc = self._accumulate(x, flow, arch, arch_weight, total_loss, acc, scale)
                continue
            for i in tf.range(num_micro):
                xs = x[i * micro:(i + 1) * micro]
                ys = flow[i * micro:(i + 1) * micro]
                # Gradients of a micro-batch mean, weighted by its share of the batch, add up to the
                # gradient of the batch mean (BN batch statistics are per micro-batch, as documented).
                weight = tf.cast(tf.shape(xs)[0], tf.float32) / batch_f * arch_weight
                total_loss, acc = self._accumulate(xs, ys, arch, weight, total_loss, acc, scale)
        total_loss, acc = self._weight_decay(total_loss, acc)
        figures = self._finish(total_loss, acc, lr)
        self._restore_bn_unless(figures["finite"], bn_before)
        return figures

    def _finish(self, loss: tf.Tensor, acc: list[tf.Tensor], lr: tf.Tensor, stop: tf.Tensor | None = None,
                strategy: tf.distribute.Strategy | None = None) -> dict[str, tf.Tensor]:
        """Norm, clip, the update (an exact zero step when skipped) and the step's log row. Returns the
        step's figures as tensors (`finite`: it trained); the loop never reads them, the log has them."""
        grad_norm = tf.linalg.global_norm(acc)
        loss_finite = tf.math.is_finite(loss)
        grads_finite = tf.math.is_finite(grad_norm)
        finite = tf.logical_and(loss_finite, grads_finite)
        halted = self.log.halted()
        applied = tf.logical_and(finite, tf.logical_not(halted))
        # tf.clip_by_global_norm's factor, and 0 on a skipped step; multiply_no_nan gives 0 there even
        # for NaN or Inf entries (0 * NaN is NaN), so clipping and the skip are one pass over the gradient.
        if self.clip_norm > 0:
            factor = tf.where(applied, self.clip_norm * tf.minimum(1.0 / grad_norm, 1.0 / self.clip_norm), 0.0)
            clipped = grad_norm > self.clip_norm
        else:  # train.grad_clip_global_norm 0: no clipping (the stand-alone recipe)
            factor = tf.where(applied, 1.0, 0.0)
            clipped = tf.constant(False)
        effective = [tf.math.multiply_no_nan(g, factor) for g in acc]
        self.optimizer.apply(self.flat.unflatten(effective), self.variables, lr, applied, strategy=strategy)
        overflow = tf.constant(False)
        scale_after = None
        if self.loss_scale is not None:
            # A finite loss with non-finite gradients is a float16 overflow of the scaled backward pass,
            # as long as halving the scale can still help; a non-finite loss never is (the forward pass
            # does not depend on the scale), so it stays a real non-finite step and the scale is kept.
            overflow = tf.logical_and(tf.logical_and(loss_finite, tf.logical_not(grads_finite)),
                                      self.loss_scale.can_shrink())
            active = tf.logical_and(tf.logical_or(finite, overflow), tf.logical_not(halted))
            self.loss_scale.update(grads_finite, active)
            scale_after = self.loss_scale.scale
        self.log.write(loss=loss, grad_norm=grad_norm, clipped=clipped,
                       nonfinite=tf.logical_not(tf.logical_or(finite, overflow)), overflow=overflow,
                       loss_scale=scale_after, stop=stop)
        return {"loss": loss, "grad_norm": grad_norm, "clipped": clipped, "finite": applied}
