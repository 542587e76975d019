"""Training augmentation (data.augment): photometric, spatial and occlusion (eraser), TensorFlow ops.

Off by default: the FC2 protocol takes one random crop and nothing else, and with every kind off the
input pipeline is built exactly as without this module. When on, each training position gets a fixed
row of uniform draws from the run's seeded per-epoch generator (edgeflow/data/pipeline.py
`augment_draws`, beside the crop draws), so the same run seed gives the same augmented batches on
every machine and a resume mid-epoch continues bit for bit. The draws of every kind have fixed places
in the row, so turning one kind on or off does not change what the others do.

Applied to the crop (uint8 pair [H, W, 6]: img_0 BGR, img_1 BGR; flow float32 [H, W, 2]) in this order:

- spatial: a zoom into the crop by z in [1, max_zoom] (a window of H/z x W/z at a random place,
  resized back to H x W bilinearly; the flow resized with it and multiplied by the zoom), then a
  left-right flip (u negated) with probability hflip and an up-down flip (v negated) with vflip;
- photometric: the same brightness shift, contrast and saturation factors and gamma for both frames;
- eraser: with probability eraser_prob, 1 to eraser_boxes boxes of img_1 (sides between eraser_min
  and eraser_max of the crop's) painted with img_1's mean colour; the flow is unchanged (the pixels of
  img_0 still move there, they are just hidden: an occlusion).
"""

from __future__ import annotations

import tensorflow as tf

from edgeflow.config import AugmentConfig

PHOTOMETRIC, SPATIAL, ERASER = 0, 4, 9  # where each kind's draws start in a row


def draws_per_sample(aug: AugmentConfig) -> int:
    """The length of a row of draws: fixed for a config."""
    return ERASER + 2 + 4 * aug.eraser_boxes


def _spatial(pair: tf.Tensor, flow: tf.Tensor, d: tf.Tensor, aug: AugmentConfig) -> tuple[tf.Tensor, tf.Tensor]:
    height, width = int(pair.shape[0]), int(pair.shape[1])
    zoom = 1.0 + d[SPATIAL] * (aug.max_zoom - 1.0)
    hh = tf.clip_by_value(tf.cast(tf.round(height / zoom), tf.int32), 2, height)
    ww = tf.clip_by_value(tf.cast(tf.round(width / zoom), tf.int32), 2, width)
    top = tf.minimum(tf.cast(tf.floor(d[SPATIAL + 1] * tf.cast(height - hh + 1, tf.float32)), tf.int32), height - hh)
    left = tf.minimum(tf.cast(tf.floor(d[SPATIAL + 2] * tf.cast(width - ww + 1, tf.float32)), tf.int32), width - ww)

    def zoomed() -> tuple[tf.Tensor, tf.Tensor]:
        window = tf.cast(pair[top:top + hh, left:left + ww], tf.float32)
        frames = tf.image.resize(window, [height, width], method="bilinear")
        motion = tf.image.resize(flow[top:top + hh, left:left + ww], [height, width], method="bilinear")
        scale = tf.stack([width / tf.cast(ww, tf.float32), height / tf.cast(hh, tf.float32)])
        return tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8), motion * scale

    pair, flow = tf.cond(tf.logical_or(hh < height, ww < width), zoomed, lambda: (pair, flow))
    pair, flow = tf.cond(d[SPATIAL + 3] < aug.hflip,
                         lambda: (tf.reverse(pair, [1]), tf.reverse(flow, [1]) * tf.constant([-1.0, 1.0])),
                         lambda: (pair, flow))
    pair, flow = tf.cond(d[SPATIAL + 4] < aug.vflip,
                         lambda: (tf.reverse(pair, [0]), tf.reverse(flow, [0]) * tf.constant([1.0, -1.0])),
                         lambda: (pair, flow))
    return pair, flow


def _photometric(pair: tf.Tensor, d: tf.Tensor, aug: AugmentConfig) -> tf.Tensor:
    x = tf.reshape(tf.cast(pair, tf.float32) / 255.0, tf.concat([tf.shape(pair)[:2], [2, 3]], 0))
    brightness = (2.0 * d[PHOTOMETRIC] - 1.0) * aug.brightness
    contrast = 1.0 + (2.0 * d[PHOTOMETRIC + 1] - 1.0) * aug.contrast
    saturation = 1.0 + (2.0 * d[PHOTOMETRIC + 2] - 1.0) * aug.saturation
    gamma = 1.0 + (2.0 * d[PHOTOMETRIC + 3] - 1.0) * aug.gamma
    grey = tf.reduce_sum(x * tf.constant([0.114, 0.587, 0.299]), axis=-1, keepdims=True)  # B, G, R weights
    x = grey + (x - grey) * saturation
    mean = tf.reduce_mean(x)
    x = tf.clip_by_value((x - mean) * contrast + mean + brightness, 0.0, 1.0) ** gamma
    return tf.reshape(tf.cast(tf.round(x * 255.0), tf.uint8), tf.shape(pair))


def _eraser(pair: tf.Tensor, d: tf.Tensor, aug: AugmentConfig) -> tf.Tensor:
    height, width = int(pair.shape[0]), int(pair.shape[1])
    img0, img1 = pair[..., :3], pair[..., 3:]
    count = 1.0 + tf.floor(d[ERASER + 1] * aug.eraser_boxes)
    rows = tf.cast(tf.range(height), tf.float32)[:, None]
    cols = tf.cast(tf.range(width), tf.float32)[None, :]
    mask = tf.zeros([height, width], tf.bool)
    for k in range(aug.eraser_boxes):
        b = d[ERASER + 2 + 4 * k:ERASER + 6 + 4 * k]
        side = aug.eraser_min + b[2:] * (aug.eraser_max - aug.eraser_min)
        half_h, half_w = side[0] * height / 2.0, side[1] * width / 2.0
        cy, cx = b[0] * height, b[1] * width
        inside = (tf.abs(rows + 0.5 - cy) < half_h) & (tf.abs(cols + 0.5 - cx) < half_w)
        mask = tf.logical_or(mask, tf.logical_and(inside, float(k) < count))
    mask = tf.logical_and(mask, d[ERASER] < aug.eraser_prob)
    mean = tf.cast(tf.round(tf.reduce_mean(tf.cast(img1, tf.float32), axis=[0, 1])), tf.uint8)
    img1 = tf.where(mask[..., None], tf.broadcast_to(mean, tf.shape(img1)), img1)
    return tf.concat([img0, img1], axis=-1)


def augment(pair: tf.Tensor, flow: tf.Tensor, draws: tf.Tensor, aug: AugmentConfig,
            clip: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The augmented crop (uint8 pair, float32 flow clipped to +-clip) for one row of draws."""
    d = tf.cast(draws, tf.float32)
    if aug.spatial:
        pair, flow = _spatial(pair, flow, d, aug)
        flow = tf.clip_by_value(flow, -clip, clip)  # the zoom scales the flow: clip again
    if aug.photometric:
        pair = _photometric(pair, d, aug)
    if aug.eraser:
        pair = _eraser(pair, d, aug)
    return tf.ensure_shape(pair, pair.shape), tf.ensure_shape(flow, flow.shape)
