"""The EdgeFlowNAS v1 supernet (protocol §2) as a tf.Module.

`arch` is an int32 tensor [9]; every choice block is a `tf.switch_case`, so only the selected branch
runs forward and backward and one traced function serves all 3^9 archs.

`compute_dtype` float16 or bfloat16 gives mixed precision: activations and convs in that dtype, every
variable (and the BN statistics) in float32, the three outputs returned in float32 so the loss is
float32. bfloat16 has float32's exponent range, so its gradients need no loss scaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edgeflow.config import compute_precision
from edgeflow.model.layers import (
    BN_MOMENTUM,
    BatchNorm,
    Conv2D,
    ConvBNReLU,
    DepthChoice,
    KernelChoice,
    bn_moving_variables_of,
    conv_kernels_of,
    upsample2x,
)
from edgeflow.space.arch import NUM_BLOCKS, validate_arch
from edgeflow.space.table import LAYERS

COMPUTE_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


def compute_dtype_for(mixed_precision: bool | str) -> tf.DType:
    """The model's compute dtype for `train.mixed_precision` (training and `edgeflow eval` agree):
    false -> float32, true or "float16" -> float16, "bfloat16" -> bfloat16."""
    return tf.as_dtype(compute_precision(mixed_precision))


class Supernet(tf.Module):
    """All weights of the supernet, built eagerly from the layer table with seeded Glorot init."""

    def __init__(self, seed: int = 0, compute_dtype: tf.DType = tf.float32) -> None:
        super().__init__(name="supernet")
        self.seed = int(seed)
        compute_dtype = tf.as_dtype(compute_dtype)
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {[d.name for d in COMPUTE_DTYPES]}, "
                             f"got {compute_dtype.name}")
        # Only the activations follow it; variables are float32 whatever it is (same checkpoints).
        self.compute_dtype = compute_dtype
        # One attribute per table row keeps checkpoint keys readable ("E0", "EB0", ...).
        self.layers: dict[str, tf.Module] = {}
        for layer in LAYERS:
            if layer.kind == "conv":
                module = ConvBNReLU(layer.cin, layer.cout, layer.kernel, layer.stride,
                                    seed=self.seed, name=layer.name)
            elif layer.kind == "depth":
                module = DepthChoice(layer.cin, seed=self.seed, name=layer.name)
            elif layer.kind == "head":
                module = KernelChoice(layer.cin, layer.cout, seed=self.seed, name=layer.name)
            elif layer.kind == "kconv":
                module = _KernelChoiceBNReLU(layer.cin, layer.cout, seed=self.seed, name=layer.name)
            else:  # the table is ours; an unknown kind is a programming error
                raise AssertionError(f"unknown layer kind {layer.kind!r}")
            self.layers[layer.name] = module

    def __call__(self, x: tf.Tensor, arch: tf.Tensor, *, training: bool,
                 bn_momentum=BN_MOMENTUM) -> list[tf.Tensor]:
        """Forward pass of one arch: [out_1/4, out_1/2, out_1/1], each [B, h, w, 4]."""
        arch = tf.convert_to_tensor(arch, dtype=tf.int32)
        # The casts are no-ops for float32, so that path is the same graph as without a compute dtype.
        h = tf.cast(tf.convert_to_tensor(x, dtype=tf.float32), self.compute_dtype)
        outputs: list[tf.Tensor] = []
        for layer in LAYERS:
            module = self.layers[layer.name]
            if layer.kind == "head":
                # float32 outputs: the loss (means over many pixels, softplus, divisions) stays float32.
                outputs.append(tf.cast(module(h, arch[layer.block]), tf.float32))
                continue
            if layer.upsample:
                h = upsample2x(h)
            if layer.kind == "conv":
                h = module(h, training=training, momentum=bn_momentum)
            else:
                h = module(h, arch[layer.block], training=training, momentum=bn_momentum)
        return outputs

    @property
    def conv_kernels(self) -> list[tf.Variable]:
        """Every conv kernel of the supernet, all branches (the weight-decay set)."""
        return conv_kernels_of(self)

    @property
    def bn_moving_variables(self) -> list[tf.Variable]:
        """Moving mean and variance of every BN of the supernet, all branches."""
        return bn_moving_variables_of(self)

    def arch_modules(self, arch: Sequence[int]) -> list[tf.Module]:
        """The Conv2D and BatchNorm modules that `arch` (9 Python ints) runs."""
        arch = validate_arch(arch)
        used: list[tf.Module] = []
        for layer in LAYERS:
            module = self.layers[layer.name]
            if layer.block is None:
                parts = [module]
            else:
                parts = module.branch_modules(arch[layer.block])
                if layer.kind == "kconv":
                    parts = parts + [module.bn]
            for part in parts:
                used += [m for m in _leaf_modules(part)]
        return used

    def arch_variables(self, arch: Sequence[int], *, trainable_only: bool = True) -> list[tf.Variable]:
        """Variables `arch` uses (trainable ones by default; BN moving statistics when False)."""
        out: list[tf.Variable] = []
        for m in self.arch_modules(arch):
            for v in _own_variables(m):
                if v.trainable or not trainable_only:
                    out.append(v)
        return out

    def arch_bn_moving_variables(self, arch: Sequence[int]) -> list[tf.Variable]:
        """Moving statistics of the BNs `arch` uses (what BN recalibration resets)."""
        return [v for m in self.arch_modules(arch) if isinstance(m, BatchNorm)
                for v in (m.moving_mean, m.moving_variance)]


class _KernelChoiceBNReLU(tf.Module):
    """H1 / H2: a kernel-choice conv followed by ONE BN + ReLU shared by the three kernels."""

    def __init__(self, cin: int, cout: int, *, seed: int, name: str) -> None:
        super().__init__(name=name)
        self.choice = KernelChoice(cin, cout, seed=seed, name=f"{name}/choice")
        self.bn = BatchNorm(cout, name=f"{name}/bn")

    def branch_modules(self, option: int) -> list[tf.Module]:
        return self.choice.branch_modules(option)

    def __call__(self, x: tf.Tensor, option: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        return tf.nn.relu(self.bn(self.choice(x, option), training=training, momentum=momentum))


def _leaf_modules(module: tf.Module) -> list[tf.Module]:
    if isinstance(module, (Conv2D, BatchNorm)):
        return [module]
    return [m for m in module.submodules if isinstance(m, (Conv2D, BatchNorm))]


def _own_variables(module: tf.Module) -> list[tf.Variable]:
    if isinstance(module, Conv2D):
        return [module.kernel]
    if isinstance(module, BatchNorm):
        return [module.gamma, module.beta, module.moving_mean, module.moving_variance]
    raise TypeError(f"not a leaf module: {module!r}")


assert NUM_BLOCKS == 1 + max(layer.block for layer in LAYERS if layer.block is not None)
