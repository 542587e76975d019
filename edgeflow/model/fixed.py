"""One arch of the supernet as a network of its own: only that arch's layers, no switch.

Trained stand-alone (`train.arch`), and exported (edgeflow/export/subnet.py builds on it). Its
modules mirror the supernet's, with only the chosen option of each choice: the variables carry the
supernet's names for the same branch ("EB0/depth2/block1/conv1/kernel") and the checkpoint keys its
paths (`model/layers/EB0/branches/1/1/conv1/kernel`), so a supernet checkpoint read into it fills
exactly the arch's layers (a warm start from a supernet run) and a weight copy by name can check that
nothing is missing or extra. Initial values follow the same (seed, variable name) rule as the
supernet's: with one seed, a stand-alone net starts where the supernet's branches of its arch start.

The call takes the supernet's arguments, so the training step, the evaluator and the flow pictures
serve both; the `arch` argument is the net's own arch and is not read.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edgeflow.model.layers import (
    BN_MOMENTUM,
    BatchNorm,
    Conv2D,
    ConvBNReLU,
    ResidualBlock,
    bn_moving_variables_of,
    conv_kernels_of,
    upsample2x,
)
from edgeflow.space.arch import format_arch, validate_arch
from edgeflow.space.table import DEPTH_OPTIONS, KERNEL_OPTIONS, LAYERS


class _Depth(tf.Module):
    """A depth choice with its option fixed: that branch's residual blocks, under the supernet's path
    (`branches/<option>/<block>`)."""

    def __init__(self, channels: int, option: int, *, seed: int, name: str) -> None:
        super().__init__(name=name)
        self.branches = {str(option): [ResidualBlock(channels, seed=seed, name=f"{name}/depth{option + 1}/block{i}")
                                       for i in range(DEPTH_OPTIONS[option])]}

    def __call__(self, x: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        # (no second attribute naming the blocks: it would be a second checkpoint path to them)
        (blocks,) = self.branches.values()
        for block in blocks:
            x = block(x, training=training, momentum=momentum)
        return x


class _Kernel(tf.Module):
    """A kernel choice with its option fixed: one conv, under the supernet's path (`convs/<option>`)."""

    def __init__(self, cin: int, cout: int, option: int, *, seed: int, name: str) -> None:
        super().__init__(name=name.replace("/", "__"))
        k = KERNEL_OPTIONS[option]
        self.convs = {str(option): Conv2D(cin, cout, k, seed=seed, name=f"{name}/k{k}")}

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        (conv,) = self.convs.values()
        return conv(x)


class _KernelBNReLU(tf.Module):
    """H1 / H2: the chosen kernel's conv, then the BN + ReLU the supernet shares across kernels."""

    def __init__(self, cin: int, cout: int, option: int, *, seed: int, name: str) -> None:
        super().__init__(name=name)
        self.choice = _Kernel(cin, cout, option, seed=seed, name=f"{name}/choice")
        self.bn = BatchNorm(cout, name=f"{name}/bn")

    def __call__(self, x: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        return tf.nn.relu(self.bn(self.choice(x), training=training, momentum=momentum))


class FixedArchNet(tf.Module):
    """The network of one arch code, built eagerly from the layer table (float32 variables; the
    activations in `compute_dtype`, the outputs in float32, as the supernet's)."""

    def __init__(self, arch: Sequence[int], seed: int = 0, compute_dtype: tf.DType = tf.float32) -> None:
        super().__init__(name="fixed_arch_net")
        self.arch = validate_arch(arch)
        self.code = format_arch(self.arch)
        self.seed = int(seed)
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.layers: dict[str, tf.Module] = {}
        for layer in LAYERS:
            option = 0 if layer.block is None else self.arch[layer.block]
            if layer.kind == "conv":
                module: tf.Module = ConvBNReLU(layer.cin, layer.cout, layer.kernel, layer.stride, seed=self.seed,
                                               name=layer.name)
            elif layer.kind == "depth":
                module = _Depth(layer.cin, option, seed=self.seed, name=layer.name)
            elif layer.kind == "head":
                module = _Kernel(layer.cin, layer.cout, option, seed=self.seed, name=layer.name)
            elif layer.kind == "kconv":
                module = _KernelBNReLU(layer.cin, layer.cout, option, seed=self.seed, name=layer.name)
            else:  # the table is ours; an unknown kind is a programming error
                raise AssertionError(f"unknown layer kind {layer.kind!r}")
            self.layers[layer.name] = module

    def __call__(self, x: tf.Tensor, arch: tf.Tensor | None = None, *, training: bool = False,
                 bn_momentum=BN_MOMENTUM) -> list[tf.Tensor]:
        """The three raw outputs [out_1/4, out_1/2, out_1/1], each [B, h, w, 4] (float32)."""
        h = tf.cast(tf.convert_to_tensor(x, dtype=tf.float32), self.compute_dtype)
        outputs: list[tf.Tensor] = []
        for layer in LAYERS:
            module = self.layers[layer.name]
            if layer.kind == "head":
                outputs.append(tf.cast(module(h), tf.float32))
                continue
            if layer.upsample:
                h = upsample2x(h)
            h = module(h, training=training, momentum=bn_momentum)
        return outputs

    # The supernet's questions, answered for the one arch (the step, the evaluator and export ask them).
    @property
    def conv_kernels(self) -> list[tf.Variable]:
        return conv_kernels_of(self)

    @property
    def bn_moving_variables(self) -> list[tf.Variable]:
        return bn_moving_variables_of(self)

    def check_arch(self, arch: Sequence[int]) -> None:
        """ValueError unless `arch` is this net's own."""
        if format_arch(validate_arch(arch)) != self.code:
            raise ValueError(f"arch {format_arch(arch)} is not this stand-alone net's arch {self.code}")

    def arch_variables(self, arch: Sequence[int], *, trainable_only: bool = True) -> list[tf.Variable]:
        """Every variable (trainable ones by default) of the net, which is `arch`'s."""
        self.check_arch(arch)
        return list(self.trainable_variables if trainable_only else self.variables)

    def arch_bn_moving_variables(self, arch: Sequence[int]) -> list[tf.Variable]:
        self.check_arch(arch)
        return self.bn_moving_variables
