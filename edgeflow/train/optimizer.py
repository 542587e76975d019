"""Adam with plain tf.Variable slots (TF1 AdamOptimizer arithmetic), checkpointed with the model.

A hand-rolled optimizer keeps the slots explicit: they are created eagerly for every trainable
variable (so a checkpoint always holds them, even before the first update) and the update can sit
inside a tf.cond that skips non-finite steps without touching them.
"""

from __future__ import annotations

from collections.abc import Sequence

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

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable], lr: tf.Tensor) -> None:
        t = tf.cast(self.iterations.assign_add(1), tf.float32)
        b1, b2 = self.beta1, self.beta2
        lr_t = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for var, g, m, v in zip(variables, grads, self.m, self.v, strict=True):
            g = tf.cast(g, var.dtype)
            m_t = m.assign(b1 * m + (1.0 - b1) * g)
            v_t = v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            var.assign_sub(lr_t * m_t / (tf.sqrt(v_t) + self.epsilon))
