"""Adam as TF1's AdamOptimizer computes it: one fused `ApplyAdam` kernel per variable.

`tf.raw_ops.ResourceApplyAdam` is the kernel TF1's `AdamOptimizer` ran, epsilon outside the square
root: with `alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
`m += (g - m) * (1 - beta1)`, `v += (g^2 - v) * (1 - beta2)`, `var -= m * alpha / (sqrt(v) + epsilon)`
(tests/test_train_step.py checks it bit for bit against a NumPy transcription of these lines).

The slots are plain variables created eagerly for every trainable variable, so a checkpoint always
holds them (even before the first update) under the names it always had.

A skipped step (non-finite, float16 overflow, or a halted run) is a zero effective step, not a
branch: the same kernels run with beta1 = beta2 = 1, lr = 0 and a zero gradient, which leaves m, v
and the variable exactly as they were, and `iterations` does not advance. The host never waits for
the decision (docs/training.md, "The step").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf


class Adam(tf.Module):
    def __init__(self, variables: Sequence[tf.Variable], *, beta1: float, beta2: float, epsilon: float) -> None:
        super().__init__(name="adam")
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        # Number of updates actually applied; skipped (non-finite) steps do not advance bias correction.
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"m{i}") for i, v in enumerate(variables)]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name=f"v{i}") for i, v in enumerate(variables)]

    def slot_variables(self) -> list[tf.Variable]:
        return [self.iterations, *self.m, *self.v]

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable], lr: tf.Tensor,
              applied: tf.Tensor | bool = True, strategy: tf.distribute.Strategy | None = None) -> None:
        """One update where `applied` is true, an exact no-op where it is false.

        `grads` must be finite; on a skipped step pass zeros (the step selects them). With a
        `strategy` (cross-replica context), each variable's copies are updated on their devices.
        """
        applied = tf.convert_to_tensor(applied, tf.bool)
        t = tf.cast(self.iterations.assign_add(tf.cast(applied, tf.int64)), tf.float32)
        # A skip before any update leaves t at 0, where 1 - beta^t is 0: keep the bias terms finite
        # (lr is 0 then, so alpha is 0 either way).
        t = tf.maximum(t, 1.0)
        scalars = {
            "beta1_power": tf.pow(tf.constant(self.beta1), t),
            "beta2_power": tf.pow(tf.constant(self.beta2), t),
            "lr": tf.where(applied, tf.cast(lr, tf.float32), 0.0),
            "beta1": tf.where(applied, self.beta1, 1.0),
            "beta2": tf.where(applied, self.beta2, 1.0),
            "epsilon": tf.constant(self.epsilon),
        }
        for var, g, m, v in zip(variables, grads, self.m, self.v, strict=True):
            if strategy is None:
                _apply_adam(var, m, v, g, scalars)
            else:
                strategy.extended.update(var, _apply_adam, args=(m, v, g, scalars), group=False)


def _apply_adam(var: Any, m: Any, v: Any, g: tf.Tensor, scalars: dict[str, tf.Tensor]) -> None:
    tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, grad=tf.cast(g, var.dtype),
                                 use_locking=False, use_nesterov=False, **scalars)
