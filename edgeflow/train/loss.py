"""Supernet loss and EPE (protocol §3).

Coarse-to-fine: the 1/4 output is upsampled (legacy bilinear grid) and added to the 1/2 output, that
sum upsampled and added to the 1/1 output. Values are not rescaled: every scale is in full-resolution
pixels. Labels are the input-size flow resized (legacy grid) to each output's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edgeflow.model.layers import resize_bilinear_legacy

SCALE_WEIGHTS = (0.125, 0.25, 0.5)  # 1/4, 1/2, 1/1
SIGMA_FLOOR = 1e-3
VAR_SHIFT = 1e-3


def accumulate(outputs: Sequence[tf.Tensor]) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Per scale (coarse to fine): (flow_acc [B,h,w,2], var_acc [B,h,w,2])."""
    flow_acc = outputs[0][..., 0:2]
    var_acc = outputs[0][..., 2:4]
    result = [(flow_acc, var_acc)]
    for out in outputs[1:]:
        size = tf.shape(out)[1:3]
        flow_acc = resize_bilinear_legacy(flow_acc, size) + out[..., 0:2]
        var_acc = resize_bilinear_legacy(var_acc, size) + out[..., 2:4]
        result.append((flow_acc, var_acc))
    return result


def scale_term(flow_acc: tf.Tensor, var_acc: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """mean(d) + mean(d / sigma) + mean(softplus(var)), d = |flow - label|, sigma = max(softplus(var+1e-3), 1e-3)."""
    d = tf.abs(flow_acc - label)
    sigma = tf.maximum(tf.nn.softplus(var_acc + VAR_SHIFT), SIGMA_FLOOR)
    return tf.reduce_mean(d) + tf.reduce_mean(d / sigma) + tf.reduce_mean(tf.nn.softplus(var_acc))


def resize_label(label: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """The label resized (legacy bilinear grid) to the height and width of `like`."""
    return resize_bilinear_legacy(tf.convert_to_tensor(label, tf.float32), tf.shape(like)[1:3])


def supernet_loss(outputs: Sequence[tf.Tensor], label: tf.Tensor) -> tf.Tensor:
    """0.125*term_1/4 + 0.25*term_1/2 + 0.5*term_1/1 (weight decay not included)."""
    if len(outputs) != len(SCALE_WEIGHTS):
        raise ValueError(f"expected {len(SCALE_WEIGHTS)} outputs (1/4, 1/2, 1/1), got {len(outputs)}")
    total = tf.constant(0.0)
    for weight, (flow_acc, var_acc) in zip(SCALE_WEIGHTS, accumulate(outputs), strict=True):
        total += weight * scale_term(flow_acc, var_acc, resize_label(label, flow_acc))
    return total


def weight_decay_loss(kernels: Sequence[tf.Variable], wd: float) -> tf.Tensor:
    """wd * sum(0.5 * ||W||^2) over the given kernels (tf.nn.l2_loss is 0.5 * sum(W^2))."""
    if not kernels:
        return tf.constant(0.0)
    return tf.cast(wd, tf.float32) * tf.add_n([tf.nn.l2_loss(k) for k in kernels])


def epe(outputs: Sequence[tf.Tensor], label: tf.Tensor) -> tf.Tensor:
    """Mean end-point error of the fully accumulated flow against the label resized to its size."""
    flow_acc, _ = accumulate(outputs)[-1]
    diff = flow_acc - resize_label(label, flow_acc)
    return tf.reduce_mean(tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1)))
