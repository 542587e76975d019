"""The step without its overheads (issue 24): the same arithmetic, no host waits, input and evaluation
off the critical path. Real TensorFlow on the CPU at tiny sizes; nothing here measures time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from edgeflow.config import Config
from edgeflow.model.layers import BatchNorm
from edgeflow.model.supernet import Supernet
from edgeflow.space.sampler import FairSampler
from edgeflow.train import steplog
from edgeflow.train.optimizer import Adam
from edgeflow.train.step import TrainStep
from tests.helpers import REPO, tiny_config

H, W = 32, 48
F32 = np.float32


def make_cfg(**train) -> Config:
    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = H, W
    cfg.train.grad_clip_global_norm, cfg.train.lr = 1.0, 1e-3
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, H, W, 6)).astype(F32), rng.normal(0, 3, (n, H, W, 2)).astype(F32))


def state_bytes(step: TrainStep) -> list[bytes]:
    return [v.numpy().tobytes() for v in step.variables + step.bn_variables + step.optimizer.slot_variables()]


@pytest.fixture(scope="module")
def step() -> TrainStep:
    return TrainStep(Supernet(seed=0), make_cfg())


def test_fused_adam_is_tf1_apply_adam_bit_for_bit_and_a_skip_changes_no_bit() -> None:
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 4, 8), (8,), (5, 5, 2, 3)]
    values = [rng.normal(0, 0.1, s).astype(F32) for s in shapes]
    variables = [tf.Variable(v) for v in values]
    adam = Adam(variables, beta1=0.9, beta2=0.999, epsilon=1e-8)
    var, m, v = [x.copy() for x in values], [np.zeros(s, F32) for s in shapes], [np.zeros(s, F32) for s in shapes]
    lr, b1, b2, eps = F32(1e-3), F32(0.9), F32(0.999), F32(1e-8)
    t = 0
    for n in range(6):
        # Gradients over six orders of magnitude, some exactly zero.
        grads = [(rng.normal(0, 1, s) * 10.0 ** rng.integers(-6, 1)).astype(F32) for s in shapes]
        grads[1][:3] = 0.0
        before = [x.numpy().tobytes() for x in variables + adam.slot_variables()]
        applied = n != 3
        adam.apply([g if applied else np.zeros_like(g) for g in grads], variables, tf.constant(lr),
                   tf.constant(applied))
        if not applied:  # the zero step: nothing moves, not even the update count
            assert [x.numpy().tobytes() for x in variables + adam.slot_variables()] == before
            continue
        t += 1
        # TF1's ApplyAdam kernel, written out in float32 (epsilon outside the square root).
        b1p = tf.pow(tf.constant(0.9), tf.constant(float(t))).numpy()
        b2p = tf.pow(tf.constant(0.999), tf.constant(float(t))).numpy()
        alpha = F32(lr * np.sqrt(F32(1) - b2p) / (F32(1) - b1p))
        for i, g in enumerate(grads):
            m[i] = m[i] + (g - m[i]) * (F32(1) - b1)
            v[i] = v[i] + (g * g - v[i]) * (F32(1) - b2)
            var[i] = var[i] - (m[i] * alpha) / (np.sqrt(v[i]) + eps)
            assert adam.m[i].numpy().tobytes() == m[i].tobytes()
            assert adam.v[i].numpy().tobytes() == v[i].tobytes()
            assert variables[i].numpy().tobytes() == var[i].tobytes()
    assert int(adam.iterations.numpy()) == t == 5


def test_a_skip_before_any_update_keeps_every_bit() -> None:
    variables = [tf.Variable(np.ones((2, 2), F32))]
    adam = Adam(variables, beta1=0.9, beta2=0.999, epsilon=1e-8)
    before = [x.numpy().tobytes() for x in variables + adam.slot_variables()]
    adam.apply([np.zeros((2, 2), F32)], variables, tf.constant(1e-3), tf.constant(False))
    assert [x.numpy().tobytes() for x in variables + adam.slot_variables()] == before


def test_nonfinite_step_changes_no_bit_and_is_logged_on_the_device(step: TrainStep) -> None:
    step(*batch(4, 1), FairSampler(1).next_archs(), 1e-3)  # slots and statistics are not at their initial values
    x, y = batch(4, 3)
    x[1, 5, 5, 2] = np.nan
    before = state_bytes(step)
    step.launch(step.place(x, y), FairSampler(3).next_archs(), 1e-3)
    assert state_bytes(step) == before  # weights, Adam slots and count, BN statistics: every bit
    (record,) = step.log.read().records
    assert record.outcome == steplog.NONFINITE and not np.isfinite(record.loss + record.grad_norm)


def test_the_step_log_gives_each_step_once_in_order(step: TrainStep) -> None:
    sampler, expected = FairSampler(4), []
    for i in range(3):
        expected.append(step(*batch(3, 10 + i), sampler.next_archs(), 1e-3).loss)
    assert step.log.read().records == []  # each __call__ already read its row
    for i in range(3):
        step.launch(step.place(*batch(3, 20 + i)), sampler.next_archs(), 1e-3)
    readout = step.log.read()
    assert len(readout.records) == 3 and all(r.outcome == steplog.APPLIED for r in readout.records)
    assert all(np.isfinite(r.loss) and r.grad_norm > 0 for r in readout.records)
    assert step.tracing_count() == 1


def test_divergence_halts_the_log_so_later_steps_change_nothing() -> None:
    step = TrainStep(Supernet(seed=0), make_cfg(), log_steps=4)
    step.log.start(consecutive_nonfinite=1, limit=2)  # a resumed run one non-finite step from its limit
    bad, good = batch(2, 5), batch(2, 6)
    bad[0][0, 0, 0, 0] = np.inf
    sampler = FairSampler(5)
    step.launch(step.place(*bad), sampler.next_archs(), 1e-3)
    frozen = state_bytes(step)
    for _ in range(2):  # queued before the host could know: they must not train
        step.launch(step.place(*good), sampler.next_archs(), 1e-3)
    assert state_bytes(step) == frozen
    readout = step.log.read()
    assert readout.halt == steplog.DIVERGED and readout.consecutive_nonfinite == 2
    assert [r.outcome for r in readout.records] == [steplog.NONFINITE, steplog.HALTED, steplog.HALTED]
    # the ring holds 4 rows: the host must read at least that often
    for _ in range(5):
        step.launch(step.place(*good), sampler.next_archs(), 1e-3)
    with pytest.raises(RuntimeError, match="more than its 4 rows"):
        step.log.read()


def test_uint8_frames_are_mapped_on_the_step_device_exactly_as_the_pipeline_maps_them(step: TrainStep) -> None:
    from edgeflow.data.pipeline import to_unit_range
    from edgeflow.train.feed import probe

    frames = np.arange(256, dtype=np.uint8).repeat(6).reshape(1, 16, 16, 6)
    flow = np.zeros((1, 16, 16, 2), F32)
    x, _ = step.place(tf.constant(frames), flow)
    assert x.dtype == tf.float32 and x.numpy().tobytes() == to_unit_range(frames).numpy().tobytes()
    # the data digest's probe is pixel (0, 0) as the step sees it
    assert probe(tf.constant(frames), tf.constant(flow)).tobytes() == np.concatenate(
        [x.numpy()[:, 0, 0, :], flow[:, 0, 0, :]], axis=1).tobytes()


def test_fused_moving_average_matches_the_unfused_update() -> None:
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 9, 11, 16)).astype(F32))
    fused, unfused = BatchNorm(16, name="a"), BatchNorm(16, name="b")
    mean = rng.normal(0, 1, 16).astype(F32)
    for bn in (fused, unfused):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(np.full(16, 1.5, F32))
    y1 = fused(x, training=True, momentum=0.9)  # a Python float: the fused kernel's running average
    y2 = unfused(x, training=True, momentum=tf.constant(0.9))  # a tensor: written out
    assert y1.numpy().tobytes() == y2.numpy().tobytes()
    assert fused.moving_mean.numpy().tobytes() == unfused.moving_mean.numpy().tobytes()
    np.testing.assert_allclose(fused.moving_variance.numpy(), unfused.moving_variance.numpy(), rtol=3e-7, atol=0)


def test_the_feed_ends_its_pipeline_in_its_own_thread_not_the_loops() -> None:
    from edgeflow.train.feed import EpochFeed

    ended_in: list[str] = []

    class Iterator:
        def __init__(self) -> None:
            self.i = 0

        def __next__(self):
            self.i += 1
            return tf.zeros([2, 4, 4, 6], tf.uint8), tf.zeros([2, 4, 4, 2])

        def __del__(self) -> None:
            ended_in.append(threading.current_thread().name)

    class Dataset:
        def __iter__(self):
            return Iterator()

    feed = EpochFeed(Dataset, 3)
    batches = list(feed)
    feed._thread.join()
    assert len(batches) == 3 and all(b.size == 2 and b.probe.shape == (2, 8) for b in batches)
    assert ended_in == ["epoch-feed"]


def test_a_failing_pipeline_raises_in_the_loop_at_its_batch() -> None:
    from edgeflow.train.feed import EpochFeed

    def make():
        def gen():
            yield tf.zeros([1, 4, 4, 6], tf.uint8), tf.zeros([1, 4, 4, 2])
            raise tf.errors.InvalidArgumentError(None, None, "sample 7 cannot be read")
        return gen()

    feed = EpochFeed(make, 3)
    seen = []
    with pytest.raises(tf.errors.InvalidArgumentError, match="sample 7"):
        for b in feed:
            seen.append(b)
    assert len(seen) == 1


def test_cached_evaluation_batches_give_the_same_numbers(demo_data: Path) -> None:
    from edgeflow.data.splits import resolve_splits
    from edgeflow.train.evaluate import CachedBatches, Evaluator, datasets

    cfg = make_cfg()
    cfg.data.train_dir, cfg.data.val_dir = str(demo_data / "train"), str(demo_data / "val")
    cfg.train.batch_size = cfg.eval.batch_size = 4
    cfg.eval.bn_recal_batches, cfg.eval.eval_batches_per_arch = 2, 2
    splits = resolve_splits(cfg)
    model = Supernet(seed=0)
    evaluator = Evaluator(model, cfg)
    pool = ["000000000", "012012012"]
    plain = evaluator.evaluate(pool, *datasets(cfg, splits.train, splits.val))
    cached_recal, cached_evals = datasets(cfg, splits.train, splits.val, cache=True)
    assert isinstance(cached_evals, CachedBatches) and len(cached_evals) == 2
    assert cached_evals.items[0][0].dtype == tf.uint8  # kept as the pipeline decoded them
    assert evaluator.evaluate(pool, cached_recal, cached_evals) == plain


def test_gpus_given_but_not_seen_stop_the_start_with_the_reason(tmp_path: Path, demo_data: Path) -> None:
    cfg = tiny_config(tmp_path, demo_data, "nogpu")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0")
    proc = subprocess.run([sys.executable, "-m", "edgeflow", "train", "--config", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "GPU(s) 0 (CUDA_VISIBLE_DEVICES) but TensorFlow sees none" in proc.stderr
    assert not (tmp_path / "out" / "nogpu" / "run.json").exists()


def test_the_gpu_preset_is_the_production_protocol_run_for_a_gpu() -> None:
    import dataclasses

    from edgeflow import config as config_mod
    from edgeflow.train.signature import signature

    prod = config_mod.load(REPO / "configs" / "supernet_fc2_180x240.yaml")
    gpu = config_mod.load(REPO / "configs" / "supernet_fc2_180x240_gpu.yaml")
    assert signature(gpu) == signature(prod)
    a, b = dataclasses.asdict(prod), dataclasses.asdict(gpu)
    differ = {f"{section}.{key}" for section in a for key in a[section] if a[section][key] != b[section][key]}
    assert differ == {"runtime.experiment_name", "data.format", "data.packed_dir", "data.stage_to_local",
                      "train.mixed_precision", "train.jit_compile"}
    assert gpu.train.mixed_precision == "bfloat16" and gpu.train.jit_compile


@pytest.mark.slow
def test_the_loop_reads_the_step_log_only_at_the_epoch_end(tmp_path: Path, demo_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow.cli import main

    reads: list[int] = []
    original = steplog.StepLog.read

    def counted(self):
        readout = original(self)
        reads.append(len(readout.records))
        return readout

    monkeypatch.setattr(steplog.StepLog, "read", counted)
    cfg = tiny_config(tmp_path, demo_data, "reads", runtime={"heartbeat_seconds": 1e6, "progress_seconds": 1e6},
                      train={"num_epochs": 2, "batch_size": 4})
    assert main(["train", "--config", str(cfg)]) == 0
    run = tmp_path / "out" / "reads"
    state = json.loads((run / "state.json").read_text())
    steps = state["steps_per_epoch"]
    # no heartbeat or progress line was due: one read per epoch, each with that epoch's steps
    assert reads == [steps, steps] and state["step"] == 2 * steps
    assert json.loads((run / "run.json").read_text())["device"]["kind"] == "CPU"


def _loop_reading(records: list, halt: int, queued: int):
    """The loop's bookkeeping (Trainer._read_steps) over a step log that returns `records`."""
    import time
    from types import SimpleNamespace

    from edgeflow.train.loop import Trainer
    from edgeflow.train.state import TrainState

    sampler = FairSampler(3)
    state = TrainState(sampler=sampler.state_dict())
    pending = [(sampler.next_archs(), np.zeros((2, 8), F32), 2) for _ in range(queued)]
    log = SimpleNamespace(read=lambda: steplog.Readout(records, halt, 0))
    trainer = SimpleNamespace(step_fn=SimpleNamespace(log=log), state=state, _pending=pending, sampler=sampler,
                              _mark=time.perf_counter(), cfg=Config())
    trainer._count_step = lambda *args: Trainer._count_step(trainer, *args)
    return trainer, lambda decide=True: Trainer._read_steps(trainer, 1, decide=decide)


def test_a_halted_log_counts_the_steps_up_to_the_halt_and_rewinds_the_sampler() -> None:
    rec = steplog.StepRecord
    records = [rec(1.0, 2.0, False, steplog.APPLIED, None), rec(1.5, 300.0, True, steplog.APPLIED, None),
               rec(0.0, 0.0, False, steplog.HALTED, None), rec(0.0, 0.0, False, steplog.HALTED, None)]
    trainer, read = _loop_reading(records, steplog.STOPPED, 4)
    assert read() == (steplog.STOPPED, 1.5)
    state = trainer.state
    assert (state.step, state.batch_in_epoch) == (2, 2)
    assert state.epoch_stats.losses == [1.0, 1.5] and state.epoch_stats.clip_count == 1
    after_two = FairSampler(3)
    after_two.next_archs(), after_two.next_archs()
    # the checkpoint's sampler state and the live sampler: after the 2 counted steps, not the 4 queued
    assert state.sampler == after_two.state_dict() == trainer.sampler.state_dict()


def test_a_diverged_log_ends_the_run_at_the_step_that_reached_the_limit() -> None:
    from edgeflow.train.loop import _Diverged

    rec = steplog.StepRecord
    nan = float("nan")
    records = [rec(nan, nan, False, steplog.NONFINITE, None), rec(nan, nan, False, steplog.NONFINITE, None),
               rec(0.0, 0.0, False, steplog.HALTED, None)]
    trainer, read = _loop_reading(records, steplog.DIVERGED, 3)
    trainer.cfg.train.max_nonfinite_steps = 2
    with pytest.raises(_Diverged, match="2 consecutive non-finite steps .* last at epoch 1 step 2"):
        read()
    assert trainer.state.nonfinite_total == 2 and trainer.state.epoch_stats.nonfinite_steps == 2
