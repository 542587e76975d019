"""The strict-fairness step (protocol §4) on the real supernet at a tiny input size."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from edgeflow.config import Config
from edgeflow.model.supernet import Supernet
from edgeflow.space.sampler import FairSampler
from edgeflow.train import loss as loss_lib
from edgeflow.train.step import TrainStep

H, W = 32, 48
CLIP = 1.0  # small, so clipping is active and its effect on the update is visible


def make_cfg(**train) -> Config:
    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = H, W
    cfg.train.grad_clip_global_norm = CLIP
    cfg.train.lr = 1e-3
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, H, W, 6)).astype(np.float32),
            rng.normal(0, 3, (n, H, W, 2)).astype(np.float32))


def eager_loss_and_grads(step: TrainStep, x, y, archs, parts: list[slice]):
    """The protocol arithmetic written out eagerly: mean over archs of size-weighted micro-batch losses."""
    total, grads = 0.0, [tf.zeros_like(v) for v in step.variables]
    for arch in archs:
        for part in parts:
            w = (part.stop - part.start) / len(x) / len(archs)
            with tf.GradientTape() as tape:
                out = step.model(x[part], tf.constant(arch), training=True)
                loss = loss_lib.supernet_loss(out, y[part]) + loss_lib.weight_decay_loss(step.kernels, 4e-5)
            g = tape.gradient(loss, step.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = [a + w * b for a, b in zip(grads, g, strict=True)]
            total += w * float(loss)
    return total, grads


def snapshot(step: TrainStep) -> list[np.ndarray]:
    return [v.numpy() for v in step.variables + step.bn_variables + step.optimizer.slot_variables()]


@pytest.fixture(scope="module")
def step() -> TrainStep:
    return TrainStep(Supernet(seed=0), make_cfg())


def test_one_trace_serves_every_arch_and_the_smaller_last_batch(step: TrainStep) -> None:
    sampler = FairSampler(1)
    before = [v.numpy() for v in step.variables]
    for n in (4, 4, 3):
        result = step(*batch(n, n), sampler.next_archs(), 1e-3)
        assert result.finite and np.isfinite(result.loss)
    assert step.tracing_count() == 1
    assert int(step.optimizer.iterations.numpy()) == 3
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before, step.variables, strict=True)]
    # strict fairness: every option of every block was trained, so every weight moved
    assert all(changed)


def test_gradient_is_the_arch_mean_norm_is_measured_before_clipping(step: TrainStep) -> None:
    x, y = batch(4, 7)
    archs = FairSampler(2).next_archs()
    # BN batch statistics do not depend on the moving ones, so the eager gradients match the step's.
    expected_loss, grads = eager_loss_and_grads(step, x, y, archs, [slice(0, 4)])
    norm = float(tf.linalg.global_norm(grads))
    m_before = [m.numpy() for m in step.optimizer.m]
    result = step(x, y, archs, 1e-3)
    assert result.loss == pytest.approx(expected_loss, rel=1e-4)
    assert result.grad_norm == pytest.approx(norm, rel=1e-3)
    assert norm > CLIP and result.clipped
    # Adam's first moment got (1 - beta1) * the CLIPPED gradient: the clip happened before the update.
    scale = CLIP / norm
    for m0, m1, g in zip(m_before, step.optimizer.m, grads, strict=True):
        np.testing.assert_allclose(m1.numpy(), 0.9 * m0 + 0.1 * scale * g.numpy(), rtol=2e-3, atol=1e-7)


def test_non_finite_step_leaves_weights_slots_and_bn_statistics_untouched(step: TrainStep) -> None:
    x, y = batch(4, 3)
    x[1, 5, 5, 2] = np.nan
    before = snapshot(step)
    result = step(x, y, FairSampler(3).next_archs(), 1e-3)
    assert not result.finite
    after = snapshot(step)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after, strict=True))
    # and a finite step afterwards still trains
    assert step(*batch(4, 4), FairSampler(4).next_archs(), 1e-3).finite


def test_micro_batches_weighted_by_size_give_the_batch_mean() -> None:
    micro = TrainStep(Supernet(seed=0), make_cfg(micro_batch_size=2))
    x, y = batch(3, 11)  # micro-batches of 2 and 1: weights 2/3 and 1/3
    archs = FairSampler(5).next_archs()
    expected_loss, grads = eager_loss_and_grads(micro, x, y, archs, [slice(0, 2), slice(2, 3)])
    result = micro(x, y, archs, 1e-3)
    assert result.loss == pytest.approx(expected_loss, rel=1e-4)
    assert result.grad_norm == pytest.approx(float(tf.linalg.global_norm(grads)), rel=1e-3)
    assert micro(*batch(4, 12), FairSampler(6).next_archs(), 1e-3).finite
    assert micro.tracing_count() == 1


def test_jit_compile_lowers_the_whole_step_to_xla() -> None:
    # XLA accepts every op of the step with static shapes (the x2 upsampling sizes are Python ints):
    # lowering to HLO is what failed before ("Dynamic Spatial Convolution"); compiling it for the CPU
    # and running it takes minutes here, so `python -m bench step` does that.
    jit = TrainStep(Supernet(seed=0), make_cfg(jit_compile=True))
    x, y = batch(2, 13)
    hlo = jit.function.experimental_get_compiler_ir(tf.constant(x), tf.constant(y),
                                                    tf.constant(FairSampler(7).next_archs()),
                                                    tf.constant(1e-3))(stage="hlo")
    # one loop over the 3 archs; each of the 9 choice blocks a conditional forward and backward
    assert hlo.count(" while(") == 1 and hlo.count(" conditional(") == 18


@pytest.mark.parametrize("clip", [0.0, CLIP])
def test_a_standalone_step_is_the_supernet_step_of_its_arch(clip: float) -> None:
    """The stand-alone net's step (train.arch) is the supernet's arithmetic for one arch: after one step
    its weights equal the supernet's for that arch trained three times on the batch (the mean of three
    equal losses; no weight decay, which the supernet takes over every branch's kernels). With
    train.grad_clip_global_norm 0 nothing is clipped."""
    from edgeflow.model.fixed import FixedArchNet
    from edgeflow.space.arch import parse_arch

    code = "012012012"
    arch = parse_arch(code)
    x, y = batch(2, 5)
    supernet = TrainStep(Supernet(seed=4), make_cfg(grad_clip_global_norm=clip, weight_decay=0.0))
    alone = TrainStep(FixedArchNet(arch, seed=4), make_cfg(grad_clip_global_norm=clip, weight_decay=0.0, arch=code))
    assert alone.archs_per_step == 1 and len(alone.variables) < len(supernet.variables)
    a = supernet(x, y, np.asarray([arch] * 3, np.int32), 1e-3)
    b = alone(x, y, np.asarray([arch], np.int32), 1e-3)
    assert b.loss == pytest.approx(a.loss, rel=1e-5) and b.grad_norm == pytest.approx(a.grad_norm, rel=1e-4)
    assert b.clipped == a.clipped == (clip > 0 and a.grad_norm > clip)
    if clip == 0:
        assert a.grad_norm > CLIP  # so clipping, were it on, would have changed the update
    # Adam's first moment after one step is (1 - beta1) times the gradient it applied (clipped or not):
    # the same, variable for variable, in both steps, and of the global norm the clip setting says.
    first = {v.name: m.numpy() for v, m in zip(alone.variables, alone.optimizer.m, strict=True)}
    by_ref = {v.ref(): m for v, m in zip(supernet.variables, supernet.optimizer.m, strict=True)}
    theirs = {v.name: by_ref[v.ref()].numpy() for v in supernet.model.arch_variables(arch)}
    assert first.keys() == theirs.keys()
    scale = max(float(np.abs(m).max()) for m in first.values())
    for name, value in first.items():
        np.testing.assert_allclose(value, theirs[name], rtol=1e-3, atol=1e-4 * scale, err_msg=name)
    applied = float(np.sqrt(sum(float(np.sum(np.square(m.astype(np.float64)))) for m in first.values()))) / 0.1
    assert applied == pytest.approx(b.grad_norm if clip == 0 else min(b.grad_norm, clip), rel=1e-3)
