"""The fixed-arch network of one arch code: a plain chain of that arch's layers, no switch.

Modules and variables carry the supernet's names for the same branch ("EB0/depth2/block1/conv1/kernel"),
so weights are copied by name and a missing or extra variable is caught, not silently misplaced. The
forward pass is inference only (BN on its moving statistics) and always float32, whatever the run's
compute dtype was.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edgeflow.model.layers import BatchNorm, Conv2D, ConvBNReLU, ResidualBlock, upsample2x
from edgeflow.space.arch import format_arch, validate_arch
from edgeflow.space.table import DEPTH_OPTIONS, KERNEL_OPTIONS, LAYERS, Layer
from edgeflow.train.loss import accumulate


class _Head(tf.Module):
    """H0Out / H1Out / H2Out: one conv, linear output."""

    def __init__(self, layer: Layer, option: int) -> None:
        super().__init__(name=layer.name)
        k = KERNEL_OPTIONS[option]
        self.conv = Conv2D(layer.cin, layer.cout, k, seed=0, name=f"{layer.name}/k{k}")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.conv(x)


class _KConvBNReLU(tf.Module):
    """H1 / H2: the chosen kernel's conv, then the BN + ReLU the supernet shares across kernels."""

    def __init__(self, layer: Layer, option: int) -> None:
        super().__init__(name=layer.name)
        k = KERNEL_OPTIONS[option]
        self.conv = Conv2D(layer.cin, layer.cout, k, seed=0, name=f"{layer.name}/choice/k{k}")
        self.bn = BatchNorm(layer.cout, name=f"{layer.name}/bn")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(self.bn(self.conv(x), training=False))


class _Depth(tf.Module):
    """A depth choice with its option fixed: that branch's residual blocks in a chain."""

    def __init__(self, layer: Layer, option: int) -> None:
        super().__init__(name=layer.name)
        self.blocks = [ResidualBlock(layer.cin, seed=0, name=f"{layer.name}/depth{option + 1}/block{i}")
                       for i in range(DEPTH_OPTIONS[option])]

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        for block in self.blocks:
            x = block(x, training=False)
        return x


class _Fixed(tf.Module):
    def __init__(self, layer: Layer) -> None:
        super().__init__(name=layer.name)
        self.unit = ConvBNReLU(layer.cin, layer.cout, layer.kernel, layer.stride, seed=0, name=layer.name)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.unit(x, training=False)


class Subnet(tf.Module):
    """One arch of the supernet as its own network. Variables start at placeholder values (the
    constructors' init); `edgeflow.export.weights.copy_from_supernet` fills them."""

    def __init__(self, arch: Sequence[int]) -> None:
        super().__init__(name="subnet")
        self.arch = validate_arch(arch)
        self.code = format_arch(self.arch)
        self.modules: list[tf.Module] = []
        for layer in LAYERS:
            option = 0 if layer.block is None else self.arch[layer.block]
            if layer.kind == "conv":
                module: tf.Module = _Fixed(layer)
            elif layer.kind == "depth":
                module = _Depth(layer, option)
            elif layer.kind == "head":
                module = _Head(layer, option)
            elif layer.kind == "kconv":
                module = _KConvBNReLU(layer, option)
            else:  # the table is ours; an unknown kind is a programming error
                raise AssertionError(f"unknown layer kind {layer.kind!r}")
            self.modules.append(module)

    def __call__(self, x: tf.Tensor) -> list[tf.Tensor]:
        """The three raw outputs [out_1/4, out_1/2, out_1/1] (as the supernet returns them)."""
        h = tf.convert_to_tensor(x, tf.float32)
        outputs: list[tf.Tensor] = []
        for layer, module in zip(LAYERS, self.modules, strict=True):
            if layer.kind == "head":
                outputs.append(module(h))
                continue
            if layer.upsample:
                h = upsample2x(h)
            h = module(h)
        return outputs

    def predict(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(flow, uncertainty) at the 1/1 scale: the coarse-to-fine sums the loss and EPE use.

        `uncertainty` is the accumulated uncertainty channels before the softplus; the per-pixel
        error scale of the loss is max(softplus(uncertainty + 1e-3), 1e-3), in pixels.
        """
        flow, uncertainty = accumulate(self(x))[-1]
        return flow, uncertainty
