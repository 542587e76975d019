"""Building blocks of the supernet as tf.Modules with explicit tf.Variables (protocol §2).

Explicit variables (no Keras layers) keep the names, the BN statistics and the checkpoint layout under
our control. Initial values come from NumPy generators keyed by (seed, variable path), so a given seed
gives the same weights whatever else is built, on any machine.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from edgeflow.space.table import KERNEL_OPTIONS

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# train.sync_batch_norm: BN batch statistics over all replicas of a tf.distribute step. Set inside a
# replica function (each replica runs in its own thread; a context variable does not cross threads).
_CROSS_REPLICA_BN = contextvars.ContextVar("cross_replica_bn", default=False)


@contextlib.contextmanager
def cross_replica_statistics() -> Iterator[None]:
    """BN layers traced inside use the statistics of the whole batch, all-reduced over the replicas."""
    token = _CROSS_REPLICA_BN.set(True)
    try:
        yield
    finally:
        _CROSS_REPLICA_BN.reset(token)


def _cross_replica_moments(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mean, biased variance and count of x over (batch, height, width) of every replica's shard.

    Two passes (the mean, then the squared deviations from it), as a one-device batch norm computes
    them, rather than E[x^2] - mean^2, which loses digits for activations far from zero. The
    all-reduces are differentiable (their gradient is the all-reduce of the upstream gradient).
    """
    ctx = tf.distribute.get_replica_context()
    xf = tf.cast(x, tf.float32)
    count = tf.cast(tf.reduce_prod(tf.shape(xf)[:-1]), tf.float32)
    total, n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.reduce_sum(xf, axis=[0, 1, 2]), count])
    mean = total / n
    squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.square(xf - mean), axis=[0, 1, 2]))
    return mean, squares / n, n


def resize_bilinear_legacy(x: tf.Tensor, size) -> tf.Tensor:
    """Bilinear resize on the TF1 grid (align_corners=False, half_pixel_centers=False).

    Output pixel i samples input coordinate i * in/out (no half-pixel shift), clamped at the border;
    this is what the existing checkpoints were trained with and differs from `tf.image.resize`.
    """
    return tf.raw_ops.ResizeBilinear(images=x, size=tf.cast(size, tf.int32), align_corners=False,
                                     half_pixel_centers=False)


def upsample2x(x: tf.Tensor) -> tf.Tensor:
    """Double height and width of the current tensor (no skip connection decides the size).

    The result has the dtype of `x`: ResizeBilinear always outputs float32, so under float16 compute
    it is cast back to keep the following convs in float16 (a no-op for float32).
    """
    return tf.cast(resize_bilinear_legacy(x, static_size(x, 2)), x.dtype)


def static_size(x: tf.Tensor, factor: int = 1):
    """Height and width of `x` times `factor`: Python ints when the shape is known (XLA compiles
    resizes and the convolutions after them only with sizes known at compile time), else a tensor."""
    height, width = x.shape[1], x.shape[2]
    if height is not None and width is not None:
        return [int(height) * factor, int(width) * factor]
    return tf.shape(x)[1:3] * factor


def _module_name(path: str) -> str:
    # tf.Module names must be identifiers; the full path ("EB0/depth2/block1") stays in variable names.
    return path.replace("/", "__")


def _initial_rng(seed: int, path: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), zlib.crc32(path.encode())])))


def glorot_uniform(shape: tuple[int, ...], seed: int, path: str) -> np.ndarray:
    """Glorot-uniform values for a conv kernel [kh, kw, cin, cout] (fans include the receptive field)."""
    kh, kw, cin, cout = shape
    limit = np.sqrt(6.0 / (kh * kw * cin + kh * kw * cout))
    return _initial_rng(seed, path).uniform(-limit, limit, size=shape).astype(np.float32)


class Conv2D(tf.Module):
    """Conv with padding "same", no bias.

    The kernel variable is always float32 (the optimizer, weight decay and checkpoints see float32);
    the conv runs in the dtype of its input, so under mixed precision the kernel is cast to float16
    for the op and its gradient arrives back in float32 through the cast.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.kernel_size = kernel
        self.stride = stride
        shape = (kernel, kernel, cin, cout)
        self.kernel = tf.Variable(glorot_uniform(shape, seed, f"{name}/kernel"), name=f"{name}/kernel")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # tf.cast returns the variable's value unchanged when the dtypes already match (float32 path).
        kernel = tf.cast(self.kernel, x.dtype)
        return tf.nn.conv2d(x, kernel, strides=self.stride, padding="SAME")


class BatchNorm(tf.Module):
    """TF1 fused batch norm: batch statistics in training mode, moving statistics in inference mode.

    In training mode the moving statistics are updated as moving = m*moving + (1-m)*batch (not at all
    when `momentum` is None), where the batch variance has Bessel's correction (n/(n-1)), as TF1's
    fused batch norm did; the normalisation itself uses the biased batch variance.

    Under mixed precision `x` is float16 while gamma, beta and the statistics stay float32: the fused
    kernel accepts that mix, computes the statistics in float32 and returns y in the dtype of x.
    """

    def __init__(self, channels: int, *, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.gamma = tf.Variable(tf.ones([channels]), name=f"{name}/gamma")
        self.beta = tf.Variable(tf.zeros([channels]), name=f"{name}/beta")
        self.moving_mean = tf.Variable(tf.zeros([channels]), trainable=False, name=f"{name}/moving_mean")
        self.moving_variance = tf.Variable(tf.ones([channels]), trainable=False,
                                           name=f"{name}/moving_variance")

    def __call__(self, x: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=BN_EPSILON, is_training=False)
            return y
        if isinstance(momentum, (float, int)) and not _CROSS_REPLICA_BN.get():
            # A fixed momentum (training): the fused kernel updates the moving statistics itself
            # (its exponential average), instead of five more kernels per statistic. The factor is
            # float32's 1 - m, as the unfused update computes it; the moving mean comes out bit for bit
            # the same, the variance to one float32 rounding (tests/test_model.py).
            factor = float(np.float32(1.0) - np.float32(momentum))
            y, new_mean, new_var = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance, epsilon=BN_EPSILON,
                is_training=True, exponential_avg_factor=factor)
            self.moving_mean.assign(new_mean)
            self.moving_variance.assign(new_var)
            return y
        if _CROSS_REPLICA_BN.get():
            mean, var, n = _cross_replica_moments(x)
            y = tf.cast(tf.nn.batch_normalization(tf.cast(x, tf.float32), mean, var, self.beta, self.gamma,
                                                  BN_EPSILON), x.dtype)
            batch_mean, batch_var = mean, var * n / tf.maximum(n - 1.0, 1.0)  # Bessel, as the fused kernel
        else:
            y, batch_mean, batch_var = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, epsilon=BN_EPSILON, is_training=True)
        if momentum is None:
            # Batch statistics without a moving-statistic update (the original trainer's evaluation).
            return y
        m = tf.cast(momentum, tf.float32)
        # The statistics are not differentiated through (as in TF1, where the update ops sat outside).
        batch_mean = tf.stop_gradient(batch_mean)
        batch_var = tf.stop_gradient(batch_var)
        self.moving_mean.assign(m * self.moving_mean + (1.0 - m) * batch_mean)
        self.moving_variance.assign(m * self.moving_variance + (1.0 - m) * batch_var)
        return y


class ConvBNReLU(tf.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.conv = Conv2D(cin, cout, kernel, stride, seed=seed, name=f"{name}/conv")
        self.bn = BatchNorm(cout, name=f"{name}/bn")

    def __call__(self, x: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        return tf.nn.relu(self.bn(self.conv(x), training=training, momentum=momentum))


class ResidualBlock(tf.Module):
    """conv3x3 + BN + ReLU, conv3x3 + BN, add the input, ReLU; channels unchanged."""

    def __init__(self, channels: int, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.conv1 = Conv2D(channels, channels, 3, seed=seed, name=f"{name}/conv1")
        self.bn1 = BatchNorm(channels, name=f"{name}/bn1")
        self.conv2 = Conv2D(channels, channels, 3, seed=seed, name=f"{name}/conv2")
        self.bn2 = BatchNorm(channels, name=f"{name}/bn2")

    def __call__(self, x: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        h = tf.nn.relu(self.bn1(self.conv1(x), training=training, momentum=momentum))
        h = self.bn2(self.conv2(h), training=training, momentum=momentum)
        return tf.nn.relu(h + x)


class DepthChoice(tf.Module):
    """Three independent branches on the same input: option d runs d+1 residual blocks of its own."""

    def __init__(self, channels: int, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.branches = [
            [ResidualBlock(channels, seed=seed, name=f"{name}/depth{d + 1}/block{i}") for i in range(d + 1)]
            for d in range(3)
        ]

    def branch_modules(self, option: int) -> list[tf.Module]:
        return list(self.branches[option])

    def __call__(self, x: tf.Tensor, option: tf.Tensor, *, training: bool, momentum=BN_MOMENTUM) -> tf.Tensor:
        def make_branch(blocks):
            def run():
                h = x
                for block in blocks:
                    h = block(h, training=training, momentum=momentum)
                return h
            return run

        # switch_case runs (and differentiates) only the selected branch.
        return tf.switch_case(option, [make_branch(b) for b in self.branches], name=self.name)


class KernelChoice(tf.Module):
    """Three convs (3x3, 5x5, 7x7), each with its own weights; the option picks one."""

    def __init__(self, cin: int, cout: int, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.convs = [Conv2D(cin, cout, k, seed=seed, name=f"{name}/k{k}") for k in KERNEL_OPTIONS]

    def branch_modules(self, option: int) -> list[tf.Module]:
        return [self.convs[option]]

    def __call__(self, x: tf.Tensor, option: tf.Tensor) -> tf.Tensor:
        return tf.switch_case(option, [lambda c=c: c(x) for c in self.convs], name=self.name)


def conv_kernels_of(net: tf.Module) -> list[tf.Variable]:
    """Every conv kernel of `net` (the weight-decay set), in module order."""
    return [m.kernel for m in net._flatten(predicate=lambda m: isinstance(m, Conv2D))]


def bn_moving_variables_of(net: tf.Module) -> list[tf.Variable]:
    """Moving mean and variance of every BN of `net` (what recalibration replaces), in module order."""
    bns = list(net._flatten(predicate=lambda m: isinstance(m, BatchNorm)))
    return [v for bn in bns for v in (bn.moving_mean, bn.moving_variance)]
