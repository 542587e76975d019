"""Dynamic loss scaling for float16 training (used only when `train.mixed_precision` is true).

float16 gradients underflow to zero below ~6e-8, so the loss is multiplied by a large power of two
before differentiation and the gradients are divided by it again in float32. Too large a scale makes
the float16 backward pass overflow to Inf/NaN; such a step is skipped and the scale halved. After
`growth_interval` consecutive good steps the scale is doubled to probe for a larger usable range.

The state (scale and the count of good steps) is two plain variables, saved in every checkpoint with
the model and the optimizer, so a resumed run continues with exactly the scale it had. Powers of two
keep scaling and unscaling exact in binary floating point. The update is a select on the device, not
a branch: the host never waits for the step's gradients to decide it.
"""

from __future__ import annotations

import tensorflow as tf

INITIAL_SCALE = 2.0 ** 15
GROWTH_INTERVAL = 2000
# Below 1 the scale only shrinks gradients; a step that still overflows at 1 is a real non-finite
# gradient (counted towards divergence), not a scaling problem.
MIN_SCALE = 1.0


class DynamicLossScale(tf.Module):
    def __init__(self, initial_scale: float = INITIAL_SCALE, growth_interval: int = GROWTH_INTERVAL) -> None:
        super().__init__(name="loss_scale")
        if initial_scale < MIN_SCALE:
            raise ValueError(f"initial loss scale must be >= {MIN_SCALE}, got {initial_scale}")
        if growth_interval < 1:
            raise ValueError(f"growth interval must be >= 1, got {growth_interval}")
        self.growth_interval = int(growth_interval)
        self.scale = tf.Variable(float(initial_scale), dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def can_shrink(self) -> tf.Tensor:
        """True while halving can still help, i.e. a non-finite gradient may be a scaling overflow."""
        return self.scale > MIN_SCALE

    def update(self, grads_finite: tf.Tensor, active: tf.Tensor | bool = True) -> None:
        """After a step: grow after `growth_interval` good steps in a row, halve on an overflow.

        Nothing changes where `active` is false (a step that neither trained nor overflowed)."""
        grads_finite = tf.convert_to_tensor(grads_finite, tf.bool)
        active = tf.convert_to_tensor(active, tf.bool)
        count = self.good_steps + 1
        grow = tf.logical_and(grads_finite, count >= self.growth_interval)
        scale = tf.where(grads_finite, tf.where(grow, self.scale * 2.0, self.scale),
                         tf.maximum(self.scale * 0.5, MIN_SCALE))
        good = tf.where(tf.logical_and(grads_finite, tf.logical_not(grow)), count, tf.zeros_like(count))
        self.scale.assign(tf.where(active, scale, self.scale))
        self.good_steps.assign(tf.where(active, good, self.good_steps))
