"""The exported network of one arch code: the stand-alone net (edgeflow/model/fixed.py), float32.

Modules and variables carry the supernet's names for the same branch ("EB0/depth2/block1/conv1/kernel"),
so weights are copied by name (edgeflow/export/weights.py) and a missing or extra variable is caught,
not silently misplaced. Export runs it in inference mode (BN on its moving statistics), always in
float32, whatever the run's compute dtype was.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edgeflow.model.fixed import FixedArchNet
from edgeflow.train.loss import accumulate


class Subnet(FixedArchNet):
    """One arch as its own float32 network. Variables start at placeholder values (the constructors'
    init); `edgeflow.export.weights.copy_from_supernet` fills them, from a supernet or a stand-alone net."""

    def __init__(self, arch: Sequence[int]) -> None:
        super().__init__(arch, seed=0, compute_dtype=tf.float32)

    def predict(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(flow, uncertainty) at the 1/1 scale: the coarse-to-fine sums the loss and EPE use.

        `uncertainty` is the accumulated uncertainty channels before the softplus; the per-pixel
        error scale of the loss is max(softplus(uncertainty + 1e-3), 1e-3), in pixels.
        """
        flow, uncertainty = accumulate(self(x, training=False))[-1]
        return flow, uncertainty
