"""The strict-fairness training step of protocol §4 as ONE traced function.

Signature: (x [None, H, W, 6], flow [None, H, W, 2], archs int32 [3, 9], lr scalar). The arch codes
and the LR are tensors, and the batch dimension is unknown, so every arch and the smaller last batch
reuse the same trace.

Per step: the 3 archs see the same batch; loss_k = supernet_loss + weight decay; gradients are
averaged over the 3 archs (and, with micro-batching, accumulated weighted by micro-batch size);
the global norm is measured before clipping; then one Adam update. A non-finite loss or gradient
skips the update and restores the BN moving statistics the forward passes changed, so weights, Adam
slots and BN statistics stay exactly as they were.

Mixed precision (`train.mixed_precision`, a float16 model): the loss is multiplied by a dynamic loss
scale before differentiation and every gradient divided by it (in float32) before averaging, norm and
clipping. A step whose loss is finite but whose scaled gradients overflowed is skipped like a
non-finite one but reported as `overflow`, not as non-finite: the scale is halved and training goes
on. In float32 and bfloat16 (float32's exponent range: nothing underflows) none of this is in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from edgeflow.config import Config, compute_precision
from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS
from edgeflow.train import loss as loss_lib
from edgeflow.train.loss_scale import DynamicLossScale
from edgeflow.train.optimizer import Adam


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
    # A preemption signal was seen before this step (on any task of a multi-worker job): stop after it.
    stop: bool = False


class TrainStep:
    def __init__(self, model: tf.Module, cfg: Config) -> None:
        t = cfg.train
        self.model = model
        self.variables = list(model.trainable_variables)
        self.kernels = list(model.conv_kernels)
        self.bn_variables = list(model.bn_moving_variables)
        self.optimizer = Adam(self.variables, beta1=t.adam_beta1, beta2=t.adam_beta2, epsilon=t.adam_epsilon)
        self.weight_decay = float(t.weight_decay)
        self.clip_norm = float(t.grad_clip_global_norm)
        self.micro_batch_size = int(t.micro_batch_size)
        # Strict fairness: one arch per option, so every option of every block trains once per step.
        self.archs_per_step = NUM_OPTIONS
        self.jit_compile = bool(t.jit_compile)
        compute_dtype = tf.as_dtype(getattr(model, "compute_dtype", tf.float32))
        wanted = compute_precision(t.mixed_precision)
        if compute_dtype.name != wanted:
            # Loss scaling without float16 is pointless and float16 without it underflows gradients.
            raise ValueError(f"train.mixed_precision={t.mixed_precision} needs a model computing in "
                             f"{wanted}, got {compute_dtype.name}")
        self.loss_scale: DynamicLossScale | None = DynamicLossScale() if wanted == "float16" else None
        if self.jit_compile:
            # XLA auto-clustering: compiles the parts XLA supports and leaves the rest to TensorFlow.
            # Forcing the whole step (tf.function(jit_compile=True)) fails in TF 2.21: XLA cannot
            # compile the gradients of the supernet's switch_case branches ("Dynamic Spatial
            # Convolution is not supported").
            tf.config.optimizer.set_jit("autoclustering")
        h, w = cfg.data.input_height, cfg.data.input_width
        signature = [
            tf.TensorSpec([None, h, w, 6], tf.float32, name="x"),
            tf.TensorSpec([None, h, w, 2], tf.float32, name="flow"),
            tf.TensorSpec([self.archs_per_step, NUM_BLOCKS], tf.int32, name="archs"),
            tf.TensorSpec([], tf.float32, name="lr"),
        ]
        self.function = tf.function(self._step, input_signature=signature, )

    def __call__(self, x, flow, archs, lr: float, stop: bool = False) -> StepResult:
        out = self.function(x, flow, tf.convert_to_tensor(archs, tf.int32), tf.constant(lr, tf.float32))
        overflow = bool(out["overflow"]) if "overflow" in out else False
        return StepResult(loss=float(out["loss"]), grad_norm=float(out["grad_norm"]),
                          clipped=bool(out["clipped"]), finite=bool(out["finite"]) or overflow,
                          overflow=overflow,
                          loss_scale=float(out["loss_scale"]) if "loss_scale" in out else None, stop=stop)

    def any_stop(self, stop: bool) -> bool:
        """Whether any trainer of the job saw a stop signal (one process: its own flag)."""
        return stop

    def tracing_count(self) -> int:
        return int(self.function.experimental_get_tracing_count())

    def _accumulate(self, x, flow, arch, weight, total_loss, grads_sum, scale=None):
        with tf.GradientTape() as tape:
            outputs = self.model(x, arch, training=True)
            loss = tf.cast(loss_lib.supernet_loss(outputs, flow), tf.float32)
            loss = loss + loss_lib.weight_decay_loss(self.kernels, self.weight_decay)
            # Scaled inside the tape so the float16 backward pass carries large enough values.
            target = loss if scale is None else loss * scale
        grads = tape.gradient(target, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if scale is not None:
            # Unscale in float32 before anything sums, measures or clips the gradients.
            grads = [tf.cast(g, tf.float32) / scale for g in grads]
        grads_sum = [acc + tf.cast(g, tf.float32) * weight for acc, g in zip(grads_sum, grads, strict=True)]
        return total_loss + loss * weight, grads_sum

    def _step(self, x: tf.Tensor, flow: tf.Tensor, archs: tf.Tensor, lr: tf.Tensor) -> dict[str, tf.Tensor]:
        # Read before any forward pass; automatic control dependencies order these reads first.
        bn_snapshot = [tf.identity(v) for v in self.bn_variables]
        batch = tf.shape(x)[0]
        micro = batch if self.micro_batch_size <= 0 else tf.minimum(self.micro_batch_size, batch)
        num_micro = (batch + micro - 1) // micro
        batch_f = tf.cast(batch, tf.float32)
        arch_weight = 1.0 / self.archs_per_step

        # Read once: the scale is constant within a step (it changes only at the end).
        scale = None if self.loss_scale is None else tf.identity(self.loss_scale.scale)
        total_loss = tf.constant(0.0)
        grads_sum = [tf.zeros_like(v) for v in self.variables]
        # A graph loop (not a Python one) so the model is traced once, not once per arch.
        for k in tf.range(self.archs_per_step):
            arch = archs[k]
            if self.micro_batch_size <= 0:
                total_loss, grads_sum = self._accumulate(x, flow, arch, arch_weight, total_loss, grads_sum,
                                                         scale)
                continue
            for i in tf.range(num_micro):
                xs = x[i * micro:(i + 1) * micro]
                ys = flow[i * micro:(i + 1) * micro]
                # Gradients of a micro-batch mean, weighted by its share of the batch, add up to the
                # gradient of the batch mean (BN batch statistics are per micro-batch, as documented).
                weight = tf.cast(tf.shape(xs)[0], tf.float32) / batch_f * arch_weight
                total_loss, grads_sum = self._accumulate(xs, ys, arch, weight, total_loss, grads_sum, scale)

        grad_norm = tf.linalg.global_norm(grads_sum)
        finite = tf.logical_and(tf.math.is_finite(total_loss), tf.math.is_finite(grad_norm))
        clipped_grads, _ = tf.clip_by_global_norm(grads_sum, self.clip_norm, use_norm=grad_norm)

        def apply() -> tf.Tensor:
            self.optimizer.apply(clipped_grads, self.variables, lr)
            return tf.constant(True)

        def skip() -> tf.Tensor:
            for var, saved in zip(self.bn_variables, bn_snapshot, strict=True):
                var.assign(saved)
            return tf.constant(False)

        applied = tf.cond(finite, apply, skip)
        result = {"loss": total_loss, "grad_norm": grad_norm, "clipped": grad_norm > self.clip_norm,
                  "finite": applied}
        if self.loss_scale is not None:
            # A finite loss with non-finite gradients is a float16 overflow of the scaled backward pass,
            # as long as halving the scale can still help; a non-finite loss never is (the forward pass
            # does not depend on the scale), so it stays a real non-finite step and the scale is kept.
            loss_finite = tf.math.is_finite(total_loss)
            grads_finite = tf.math.is_finite(grad_norm)
            overflow = tf.logical_and(loss_finite, tf.logical_and(tf.logical_not(grads_finite),
                                                                  self.loss_scale.can_shrink()))
            tf.cond(tf.logical_or(finite, overflow), lambda: self.loss_scale.update(grads_finite),
                    lambda: tf.constant(False))
            result["overflow"] = overflow
            result["loss_scale"] = tf.identity(self.loss_scale.scale)
        return result
