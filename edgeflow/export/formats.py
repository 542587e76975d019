"""The deployment files of a subnet: a TF SavedModel and float32 / full-integer int8 TFLite models.

Every artefact computes the same thing: (flow, uncertainty) at the network's 1/1 scale, the coarse-to-
fine sums of `Subnet.predict`. The SavedModel has two signatures:

- `serving_default`: `frame0`, `frame1` uint8 [batch, h, w, 3] in BGR order (as OpenCV reads them),
  any h >= H and w >= W; centre-cropped to H x W and normalised exactly as the evaluation pipeline
  does ((v/255 - 0.5) * 2, frame0's channels first).
- `normalized`: `x` float32 [batch, H, W, 6], the pipeline's network input.

The TFLite models take the `normalized` input with batch 1 (NPU compilers want static shapes); the
int8 model is fully integer, input and outputs included, and carries its quantisation parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from edgeflow.data.pipeline import to_unit_range
from edgeflow.export.subnet import Subnet

SERVING = "serving_default"
NORMALIZED = "normalized"


class ServingModule(tf.Module):
    """What the SavedModel holds: the subnet's variables and its two signatures."""

    def __init__(self, subnet: Subnet, height: int, width: int) -> None:
        super().__init__(name="edgeflow_subnet")
        self.subnet = subnet
        self.height, self.width = int(height), int(width)
        self.arch_code = tf.Variable(subnet.code, trainable=False, name="arch_code")
        self.input_size = tf.Variable([self.height, self.width], trainable=False, name="input_size")
        frame = tf.TensorSpec([None, None, None, 3], tf.uint8)
        self.serve_frames = tf.function(self._frames, input_signature=[frame, frame])
        self.serve_normalized = tf.function(
            self._normalized, input_signature=[tf.TensorSpec([None, self.height, self.width, 6], tf.float32)])

    def _normalized(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        flow, uncertainty = self.subnet.predict(x)
        return {"flow": flow, "uncertainty": uncertainty}

    def _crop(self, frame: tf.Tensor, name: str) -> tf.Tensor:
        h, w = tf.shape(frame)[1], tf.shape(frame)[2]
        big_enough = tf.logical_and(h >= self.height, w >= self.width)
        with tf.control_dependencies([tf.debugging.Assert(
                big_enough, [f"{name} must be at least {self.height}x{self.width} pixels, got", h, w])]):
            # the eval pipeline's centre crop: (h - H) // 2, (w - W) // 2
            top, left = (h - self.height) // 2, (w - self.width) // 2
        return frame[:, top:top + self.height, left:left + self.width, :]

    def _frames(self, frame0: tf.Tensor, frame1: tf.Tensor) -> dict[str, tf.Tensor]:
        pair = tf.concat([self._crop(frame0, "frame0"), self._crop(frame1, "frame1")], axis=-1)
        return self._normalized(to_unit_range(pair))


def write_saved_model(module: ServingModule, path: Path) -> None:
    tf.saved_model.save(module, str(path), signatures={
        SERVING: module.serve_frames.get_concrete_function(),
        NORMALIZED: module.serve_normalized.get_concrete_function(),
    })


def _tflite_function(module: ServingModule) -> Callable:
    spec = tf.TensorSpec([1, module.height, module.width, 6], tf.float32)
    return tf.function(module._normalized).get_concrete_function(spec)


def tflite_float(module: ServingModule) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_tflite_function(module)], module)
    return converter.convert()


def tflite_int8(module: ServingModule, representative: Iterable[np.ndarray]) -> bytes:
    """Full-integer int8: every op, the input and the outputs; `representative` yields [1, H, W, 6]
    float32 inputs (re-iterable: the converter may read it more than once)."""
    samples = [np.asarray(x, np.float32) for x in representative]
    if not samples:
        raise ValueError("int8 conversion needs at least one representative sample")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_tflite_function(module)], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()
