"""Mixed precision (`train.mixed_precision`): float16 compute with float32 variables and loss scaling.

Runs on the CPU at a tiny size. TF 2.21's CPU build has float16 kernels for Conv2D (and its
gradients), FusedBatchNormV3 with float32 scale/offset and ResizeBilinear, so the real float16 model
runs here; `test_float16_kernels_are_available_on_this_build` states that dependency explicitly.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from edgeflow.config import Config
from edgeflow.model.supernet import Supernet
from edgeflow.space.arch import parse_arch
from edgeflow.space.sampler import FairSampler
from edgeflow.train.epoch_stats import EpochStats
from edgeflow.train.loop import Trainer
from edgeflow.train.loss_scale import GROWTH_INTERVAL, INITIAL_SCALE, DynamicLossScale
from edgeflow.train.step import TrainStep

pytestmark = pytest.mark.slow  # trains: tests/conftest.py schedules these files first

H, W, B = 32, 48, 2
ARCHS = ("000021222", "222222222", "012012012")


def make_cfg(**train) -> Config:
    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = H, W
    cfg.train.lr = 1e-3
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (B, H, W, 6)).astype(np.float32),
            rng.normal(0, 3, (B, H, W, 2)).astype(np.float32))


def arch_t(code: str) -> tf.Tensor:
    return tf.constant(parse_arch(code), tf.int32)


def snapshot(step: TrainStep) -> list[np.ndarray]:
    return [v.numpy() for v in step.variables + step.bn_variables + step.optimizer.slot_variables()]


@pytest.fixture(scope="module")
def nets() -> tuple[Supernet, Supernet]:
    # Same seed: identical float32 weights, only the compute dtype differs.
    return Supernet(seed=0), Supernet(seed=0, compute_dtype=tf.float16)


@pytest.fixture(scope="module")
def mixed_step() -> TrainStep:
    return TrainStep(Supernet(seed=0, compute_dtype=tf.float16), make_cfg(mixed_precision=True))


def test_float16_kernels_are_available_on_this_build() -> None:
    # If a CPU build lacked these kernels, the float16 tests below could not run; fail loudly with the
    # op's name rather than testing a float32 stand-in.
    x = tf.ones([1, 4, 4, 2], tf.float16)
    y = tf.nn.conv2d(x, tf.ones([3, 3, 2, 2], tf.float16), 1, "SAME")
    z, mean, _ = tf.compat.v1.nn.fused_batch_norm(y, tf.ones([2]), tf.zeros([2]), is_training=True)
    assert (y.dtype, z.dtype, mean.dtype) == (tf.float16, tf.float16, tf.float32)


def test_float16_forward_is_close_to_float32_and_returns_float32(nets) -> None:
    net32, net16 = nets
    x, _ = batch(0)
    for code in ARCHS:
        for training in (False, True):
            out32 = net32(x, arch_t(code), training=training)
            out16 = net16(x, arch_t(code), training=training)
            for a, b in zip(out32, out16, strict=True):
                assert b.dtype == tf.float32 and a.shape == b.shape
                a, b = a.numpy(), b.numpy()
                assert np.all(np.isfinite(b))
                # float16 has ~3 decimal digits; errors grow through ~20 layers, hence a loose bound.
                scale = float(np.max(np.abs(a)))
                assert float(np.max(np.abs(a - b))) <= 0.05 * scale + 1e-2, (code, training)
    # BN statistics are float32 and updated the same way in both (batch statistics in float32)
    for v32, v16 in zip(net32.bn_moving_variables, net16.bn_moving_variables, strict=True):
        assert v16.dtype == tf.float32
        np.testing.assert_allclose(v16.numpy(), v32.numpy(), rtol=2e-2, atol=2e-2)


def test_variables_stay_float32_and_convs_run_in_float16(nets) -> None:
    _, net16 = nets
    assert net16.compute_dtype == tf.float16
    assert all(v.dtype == tf.float32 for v in net16.variables)
    assert all(k.dtype == tf.float32 for k in net16.conv_kernels)
    fn = tf.function(lambda x, a: net16(x, a, training=True))
    graph_def = fn.get_concrete_function(tf.TensorSpec([None, H, W, 6], tf.float32),
                                         tf.TensorSpec([9], tf.int32)).graph.as_graph_def()
    # Convs sit in the top-level graph (E0, ...) and inside the switch_case branch functions.
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    convs = [n for n in nodes if n.op == "Conv2D"]
    bns = [n for n in nodes if n.op.startswith("FusedBatchNorm")]
    assert len(convs) == 69 and bns
    assert all(n.attr["T"].type == tf.float16.as_datatype_enum for n in convs)
    assert all(n.attr["T"].type == tf.float16.as_datatype_enum for n in bns)
    assert all(n.attr["U"].type == tf.float32.as_datatype_enum for n in bns)


def test_bad_compute_dtype_and_mismatched_config_are_refused() -> None:
    with pytest.raises(ValueError, match="compute_dtype"):
        Supernet(seed=0, compute_dtype=tf.int32)
    net32 = Supernet(seed=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainStep(net32, make_cfg(mixed_precision=True))


def test_mixed_step_finds_its_scale_traces_once_and_trains(mixed_step: TrainStep) -> None:
    step = mixed_step
    sampler = FairSampler(1)
    before = [v.numpy() for v in step.variables]
    # At init on random data the float32 gradients reach ~70, so 2**15 overflows float16 (65504): the
    # first steps are skipped, each halving the scale, until one fits (about 2**8 here).
    x, y = batch(0)
    overflows = 0
    while (result := step(x, y, sampler.next_archs(), 1e-3)).overflow:
        overflows += 1
        assert result.finite and result.loss_scale == INITIAL_SCALE / 2 ** overflows
        assert overflows < 12, "the loss scale never settled"
    assert int(step.optimizer.iterations.numpy()) == 1
    scale = result.loss_scale
    for i in range(1, 3):
        result = step(*batch(i), sampler.next_archs(), 1e-3)
        assert result.finite and not result.overflow and np.isfinite(result.loss)
        assert np.isfinite(result.grad_norm) and result.grad_norm > 0
        assert result.loss_scale == scale
    assert step.tracing_count() == 1
    assert int(step.optimizer.iterations.numpy()) == 3
    assert int(step.loss_scale.good_steps.numpy()) == 3
    # strict fairness over 3 steps touched every branch, so every (float32) weight moved
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, step.variables, strict=True))
    assert all(v.dtype == tf.float32 for v in step.variables + step.optimizer.slot_variables()[1:])


def test_overflow_halves_the_scale_and_skips_without_a_nonfinite_step(mixed_step: TrainStep) -> None:
    step = mixed_step
    step.loss_scale.scale.assign(2.0 ** 60)  # scaled float16 gradients overflow to Inf
    step.loss_scale.good_steps.assign(7)
    before = snapshot(step)
    iterations = int(step.optimizer.iterations.numpy())
    result = step(*batch(10), FairSampler(2).next_archs(), 1e-3)
    assert result.overflow and result.finite and np.isfinite(result.loss)
    assert not np.isfinite(result.grad_norm)
    assert result.loss_scale == 2.0 ** 59 == float(step.loss_scale.scale.numpy())
    assert int(step.loss_scale.good_steps.numpy()) == 0
    # nothing changed: weights, Adam slots (and its step count), BN moving statistics
    assert int(step.optimizer.iterations.numpy()) == iterations
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(step), strict=True))
    # the loop's bookkeeping: counted as an overflow, not as a non-finite step, and kept out of the means
    stats = EpochStats()
    stats.add_step(loss=result.loss, grad_norm=result.grad_norm, clipped=result.clipped, finite=result.finite,
                   samples=B, seconds=1.0, overflow=result.overflow)
    summary = stats.summary()
    assert summary["nonfinite_steps"] == 0 and summary["overflow_steps"] == 1 and np.isnan(summary["grad_norm"])
    assert EpochStats.from_dict(stats.to_dict()).overflow_steps == 1
    # a usable scale trains again, in the same trace
    step.loss_scale.scale.assign(2.0 ** 6)
    result = step(*batch(11), FairSampler(3).next_archs(), 1e-3)
    assert result.finite and not result.overflow
    assert int(step.optimizer.iterations.numpy()) == iterations + 1
    assert step.tracing_count() == 1


def test_nonfinite_loss_is_a_real_nonfinite_step_and_keeps_the_scale(mixed_step: TrainStep) -> None:
    step = mixed_step
    x, y = batch(12)
    # NaN in a conv kernel, not (only) in the input: a fused CPU kernel (conv + ReLU) may turn a NaN
    # activation into 0, but the coupled L2 term sums every kernel's squares, so the loss is NaN for sure.
    kernel = step.kernels[0]
    saved = kernel.numpy()
    poisoned = saved.copy()
    poisoned.flat[0] = np.nan
    kernel.assign(poisoned)
    try:
        assert step.weight_decay > 0
        scale = float(step.loss_scale.scale.numpy())
        before = snapshot(step)
        result = step(x, y, FairSampler(4).next_archs(), 1e-3)
        assert not np.isfinite(result.loss)
        assert not result.finite and not result.overflow
        assert result.loss_scale == scale
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, snapshot(step), strict=True))
    finally:
        kernel.assign(saved)  # the step is shared by the module's other tests


def test_dynamic_loss_scale_grows_after_the_interval_and_halves_to_a_floor() -> None:
    assert GROWTH_INTERVAL == 2000
    ls = DynamicLossScale(initial_scale=4.0, growth_interval=3)
    for expected_scale, expected_good in ((4.0, 1), (4.0, 2), (8.0, 0), (8.0, 1)):
        ls.update(tf.constant(True))
        assert (float(ls.scale.numpy()), int(ls.good_steps.numpy())) == (expected_scale, expected_good)
    for expected_scale in (4.0, 2.0, 1.0, 1.0):
        ls.update(tf.constant(False))
        assert float(ls.scale.numpy()) == expected_scale and int(ls.good_steps.numpy()) == 0
    assert not bool(ls.can_shrink())


def test_float32_path_has_no_loss_scaling_and_the_mixed_step_matches_it() -> None:
    x, y = batch(5)
    archs = FairSampler(9).next_archs()
    step = TrainStep(Supernet(seed=0), make_cfg())
    assert step.loss_scale is None and step.model.compute_dtype == tf.float32
    r32 = step(x, y, archs, 1e-3)
    assert r32.finite and not r32.overflow and r32.loss_scale is None
    # the traced step reads no variable beyond the model's, the optimizer's and its step log's: no scale
    concrete = step.function.get_concrete_function()
    expected = {v.ref() for v in step.variables + step.bn_variables + step.optimizer.slot_variables()
                + list(step.log.variables)}
    # (the fused Adam kernel takes its slots by handle, so they need not show among the variables read)
    assert {v.ref() for v in concrete.variables} <= expected
    # The same step from the same weights in float16: unscaling is exact (powers of two), so the loss
    # and the gradient norm differ from float32 only by float16 rounding.
    mixed = TrainStep(Supernet(seed=0, compute_dtype=tf.float16), make_cfg(mixed_precision=True))
    mixed.loss_scale.scale.assign(2.0 ** 6)  # small enough not to overflow at init (see above)
    r16 = mixed(x, y, archs, 1e-3)
    assert r16.finite and not r16.overflow
    assert r16.loss == pytest.approx(r32.loss, rel=2e-2)
    assert r16.grad_norm == pytest.approx(r32.grad_norm, rel=5e-2)


def test_loss_scale_is_checkpointed_and_a_float32_checkpoint_resumes(tmp_path, mixed_step: TrainStep) -> None:
    step = mixed_step
    ckpt = tf.train.Checkpoint(model=step.model, optimizer=step.optimizer, loss_scale=step.loss_scale)
    step.loss_scale.scale.assign(2.0 ** 11)
    step.loss_scale.good_steps.assign(123)
    prefix = ckpt.write(str(tmp_path / "mixed"))
    plain = tf.train.Checkpoint(model=step.model, optimizer=step.optimizer).write(str(tmp_path / "plain"))
    step.loss_scale.scale.assign(1.0)
    step.loss_scale.good_steps.assign(0)
    # Trainer._read_checkpoint only needs these attributes
    trainer = SimpleNamespace(model=step.model, step_fn=step, checkpoint=ckpt)
    Trainer._read_checkpoint(trainer, prefix)
    assert float(step.loss_scale.scale.numpy()) == 2.0 ** 11 and int(step.loss_scale.good_steps.numpy()) == 123
    # a checkpoint without a loss scale (trained in float32) still restores weights and optimizer
    step.loss_scale.scale.assign(INITIAL_SCALE)
    step.loss_scale.good_steps.assign(0)
    Trainer._read_checkpoint(trainer, plain)
    assert float(step.loss_scale.scale.numpy()) == INITIAL_SCALE
