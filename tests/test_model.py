"""The supernet (protocol §2): shapes, single-branch execution, one trace for every arch, BN semantics."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from edgeflow.model.layers import BatchNorm, glorot_uniform
from edgeflow.model.supernet import Supernet
from edgeflow.space.arch import BASELINE_ARCH, parse_arch
from edgeflow.train.loss import supernet_loss

H, W = 32, 48


@pytest.fixture(scope="module")
def net() -> Supernet:
    return Supernet(seed=0)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, size=(2, H, W, 6)).astype(np.float32))
    y = tf.constant(rng.normal(size=(2, H, W, 2)).astype(np.float32))
    return x, y


def _arch(code: str) -> tf.Tensor:
    return tf.constant(parse_arch(code), tf.int32)


def test_output_shapes_small_and_production_size(net, batch):
    x, _ = batch
    outs = net(x, _arch(BASELINE_ARCH), training=False)
    assert [tuple(o.shape) for o in outs] == [(2, 8, 12, 4), (2, 16, 24, 4), (2, 32, 48, 4)]
    # 180 is not a multiple of 16: Up1 doubles 12x15 to 24x30, so the full-scale output is 192x240
    outs = net(tf.zeros([1, 180, 240, 6]), _arch("000000000"), training=False)
    assert [tuple(o.shape) for o in outs] == [(1, 48, 60, 4), (1, 96, 120, 4), (1, 192, 240, 4)]


def test_variable_inventory(net):
    assert len(net.conv_kernels) == 6 + 4 * 6 * 2 + 5 * 3
    assert len(net.bn_moving_variables) == 2 * (6 + 4 * 6 * 2 + 2)
    assert not any(v.trainable for v in net.bn_moving_variables)
    # no conv biases: every trainable variable is a kernel or a BN gamma/beta
    names = [v.name for v in net.trainable_variables]
    assert all(n.split("/")[-1].split(":")[0] in ("kernel", "gamma", "beta") for n in names)
    assert len(names) == len(set(names))
    kernel_ids = {id(k) for k in net.conv_kernels}
    assert sum(id(v) in kernel_ids for v in net.trainable_variables) == len(kernel_ids)


def test_init_is_seeded_glorot_uniform():
    a, b, c = Supernet(seed=7), Supernet(seed=7), Supernet(seed=8)
    for va, vb in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    e0 = a.layers["E0"].conv.kernel.numpy()
    assert e0.shape == (7, 7, 6, 32)
    limit = np.sqrt(6.0 / (49 * 6 + 49 * 32))
    assert np.abs(e0).max() <= limit
    # uniform on [-limit, limit] has std limit / sqrt(3)
    assert abs(e0.std() - limit / np.sqrt(3)) < 0.05 * limit
    assert not np.array_equal(e0, c.layers["E0"].conv.kernel.numpy())
    np.testing.assert_array_equal(e0, glorot_uniform((7, 7, 6, 32), 7, "E0/conv/kernel"))
    bn = a.layers["E0"].bn
    assert (bn.gamma.numpy() == 1).all() and (bn.beta.numpy() == 0).all()
    assert (bn.moving_mean.numpy() == 0).all() and (bn.moving_variance.numpy() == 1).all()


def test_one_trace_serves_thirty_archs_forward_and_backward(batch):
    net = Supernet(seed=1)
    x, y = batch
    traces = []

    @tf.function
    def step(x, y, arch):
        traces.append(1)  # Python side effect: runs only while tracing
        with tf.GradientTape() as tape:
            loss = supernet_loss(net(x, arch, training=True), y)
        grads = tape.gradient(loss, net.trainable_variables)
        return loss, [tf.zeros([]) if g is None else tf.reduce_sum(tf.abs(g)) for g in grads]

    rng = np.random.default_rng(0)
    codes = {tuple(rng.integers(0, 3, 9)) for _ in range(200)}
    codes = sorted(codes)[:30]
    assert len(codes) == 30
    losses = set()
    for code in codes:
        loss, _ = step(x, y, tf.constant(code, tf.int32))
        assert np.isfinite(loss.numpy())
        losses.add(round(float(loss), 6))
    assert len(traces) == 1
    assert len(losses) > 20  # the archs really differ


@pytest.mark.parametrize("graph", [True, False], ids=["tf.function", "eager"])
def test_unselected_branches_get_no_gradient(batch, graph):
    net = Supernet(seed=2)
    x, y = batch

    def grads_of(x, y, arch):
        with tf.GradientTape() as tape:
            loss = supernet_loss(net(x, arch, training=True), y)
        return tape.gradient(loss, net.trainable_variables)

    fn = tf.function(grads_of) if graph else grads_of
    for code in ["000000000", "222222222", "120120120"]:
        grads = fn(x, y, _arch(code))
        used = {v.ref() for v in net.arch_variables(parse_arch(code))}
        for var, g in zip(net.trainable_variables, grads, strict=True):
            nonzero = g is not None and float(tf.reduce_max(tf.abs(g))) > 0
            assert nonzero == (var.ref() in used), (code, var.name)


def _unselected_kernels(net, code):
    used = {v.ref() for v in net.arch_variables(parse_arch(code))}
    return [k for k in net.conv_kernels if k.ref() not in used]


@pytest.mark.parametrize("graph", [True, False], ids=["tf.function", "eager"])
@pytest.mark.parametrize("training", [False, True])
def test_unselected_weights_do_not_change_the_output(batch, training, graph):
    net = Supernet(seed=3)
    x, _ = batch
    code = "102021012"

    def forward(x, arch):
        return net(x, arch, training=training)

    fn = tf.function(forward) if graph else forward
    before = [o.numpy() for o in fn(x, _arch(code))]
    # NaN in every unselected branch: a "compute every branch and mask" forward would turn NaN
    for k in _unselected_kernels(net, code):
        k.assign(tf.fill(k.shape, float("nan")))
    used_bn = {v.ref() for v in net.arch_bn_moving_variables(parse_arch(code))}
    for bn_var in net.bn_moving_variables:
        if bn_var.ref() not in used_bn:
            bn_var.assign(tf.fill(bn_var.shape, float("nan")))
    after = [o.numpy() for o in fn(x, _arch(code))]
    # (in training mode the first call moved the selected BN statistics, which that mode does not read)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    # while changing a selected kernel does change it
    kernel = net.layers["H2Out"].convs[2].kernel
    kernel.assign_add(tf.ones_like(kernel))
    changed = fn(x, _arch(code))[2].numpy()
    assert not np.allclose(changed, before[2])


def test_batch_norm_training_and_inference_semantics():
    rng = np.random.default_rng(4)
    x = rng.normal(loc=2.0, scale=3.0, size=(2, 3, 3, 4)).astype(np.float32)
    bn = BatchNorm(4, name="t")
    bn.gamma.assign([1.0, 2.0, 0.5, 1.0])
    bn.beta.assign([0.0, 1.0, -1.0, 0.5])
    flat = x.reshape(-1, 4).astype(np.float64)
    mean, var_biased, var_unbiased = flat.mean(0), flat.var(0), flat.var(0, ddof=1)
    gamma, beta = bn.gamma.numpy(), bn.beta.numpy()

    y = bn(tf.constant(x), training=True).numpy()
    # normalised with the batch statistics (biased variance) ...
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var_biased + 1e-5) + beta, atol=1e-4)
    # ... while the moving variance takes the Bessel-corrected batch variance, momentum 0.9
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var_unbiased, rtol=1e-5)

    mm, mv = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    y_inf = bn(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(y_inf, gamma * (x - mm) / np.sqrt(mv + 1e-5) + beta, atol=1e-4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mm)  # inference leaves the statistics alone


def test_bn_momentum_tensor_zero_resets_to_batch_statistics():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    bn = BatchNorm(2, name="r")
    bn.moving_mean.assign([100.0, -100.0])
    bn.moving_variance.assign([50.0, 50.0])
    bn(tf.constant(x), training=True, momentum=tf.constant(0.0))
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(bn.moving_mean.numpy(), flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), flat.var(0, ddof=1), rtol=1e-5)
    # momentum k/(k+1) for batch k gives the exact running average of the batch statistics
    x2 = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    bn(tf.constant(x2), training=True, momentum=tf.constant(0.5))
    np.testing.assert_allclose(bn.moving_mean.numpy(), (flat.mean(0) + x2.reshape(-1, 2).mean(0)) / 2,
                               rtol=1e-5)


def test_training_updates_only_the_selected_bns(batch):
    net = Supernet(seed=5)
    x, _ = batch
    code = "012210021"
    before = {v.ref(): v.numpy().copy() for v in net.bn_moving_variables}
    net(x, _arch(code), training=True)
    used = {v.ref() for v in net.arch_bn_moving_variables(parse_arch(code))}
    for v in net.bn_moving_variables:
        moved = not np.array_equal(before[v.ref()], v.numpy())
        assert moved == (v.ref() in used), v.name


def test_checkpoint_round_trip_includes_bn_statistics(batch, tmp_path):
    x, _ = batch
    a = Supernet(seed=6)
    a(x, _arch(BASELINE_ARCH), training=True)
    path = tf.train.Checkpoint(model=a).write(str(tmp_path / "ckpt"))
    b = Supernet(seed=99)
    tf.train.Checkpoint(model=b).read(path).assert_consumed()
    for va, vb in zip(a.variables, b.variables, strict=True):
        assert va.name == vb.name
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    np.testing.assert_array_equal(a(x, _arch(BASELINE_ARCH), training=False)[2].numpy(),
                                  b(x, _arch(BASELINE_ARCH), training=False)[2].numpy())


def test_arch_helpers_reject_bad_archs(net):
    with pytest.raises(ValueError, match="outside"):
        net.arch_variables([0, 0, 0, 0, 0, 0, 0, 0, 3])
    with pytest.raises(ValueError, match="entries"):
        net.arch_variables([0, 0])
