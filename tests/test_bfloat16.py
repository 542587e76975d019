"""`train.mixed_precision: bfloat16`: bfloat16 compute, float32 variables, no loss scaling.

Runs the real bfloat16 model on this CPU at a tiny size (TF's CPU build has bfloat16 Conv2D and
FusedBatchNormV3 kernels, with oneDNN using AVX512-BF16/AMX where the CPU has them).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from edgeflow import config as config_mod
from edgeflow.model.supernet import Supernet, compute_dtype_for
from edgeflow.space.sampler import FairSampler
from edgeflow.train.restore import build_supernet
from edgeflow.train.step import TrainStep

H, W, B = 32, 48, 2


def make_cfg(mixed_precision: object) -> config_mod.Config:
    return config_mod.from_dict({"data": {"train_dir": "t", "val_dir": "v", "input_height": H, "input_width": W},
                                 "train": {"mixed_precision": mixed_precision, "lr": 1e-3}})


def test_config_values_map_to_compute_dtypes_and_true_stays_float16() -> None:
    expected = {False: tf.float32, True: tf.float16, "float16": tf.float16, "bfloat16": tf.bfloat16,
                "false": tf.float32}
    for value, dtype in expected.items():
        cfg = make_cfg(value)
        assert compute_dtype_for(cfg.train.mixed_precision) == dtype
        assert build_supernet(cfg).compute_dtype == dtype
    with pytest.raises(config_mod.ConfigError, match="train.mixed_precision: must be false, float16"):
        make_cfg("bf16")


@pytest.mark.slow
def test_bfloat16_step_has_no_loss_scale_runs_bf16_convs_and_matches_float32() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (B, H, W, 6)).astype(np.float32)
    y = rng.normal(0, 3, (B, H, W, 2)).astype(np.float32)
    archs = FairSampler(9).next_archs()
    step32 = TrainStep(Supernet(seed=0), make_cfg(False))
    step16 = TrainStep(Supernet(seed=0, compute_dtype=tf.bfloat16), make_cfg("bfloat16"))
    assert step16.loss_scale is None
    graph_def = step16.function.get_concrete_function().graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    convs = [n for n in nodes if n.op == "Conv2D"]
    assert convs and all(n.attr["T"].type == tf.bfloat16.as_datatype_enum for n in convs)
    # The float32 reference runs the same step function eagerly: no second graph to compile.
    r32 = {k: float(v) for k, v in step32._step(tf.constant(x), tf.constant(y), tf.constant(archs),
                                                 tf.constant(1e-3)).items()}
    r16 = step16(x, y, archs, 1e-3)
    assert r16.finite and not r16.overflow and r16.loss_scale is None
    # bfloat16 keeps 8 bits of mantissa: a loose relative bound, still far tighter than any bug gives.
    assert r16.loss == pytest.approx(r32["loss"], rel=5e-2)
    assert r16.grad_norm == pytest.approx(r32["grad_norm"], rel=1e-1)
    assert all(v.dtype == tf.float32 for v in step16.variables + step16.bn_variables)
    # the update was applied to the float32 weights
    assert int(step16.optimizer.iterations.numpy()) == 1
    fresh = Supernet(seed=0).trainable_variables
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(step16.variables, fresh, strict=True))


def test_a_model_in_another_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a model computing in bfloat16, got float32"):
        TrainStep(Supernet(seed=0), make_cfg("bfloat16"))
