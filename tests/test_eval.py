"""Pool evaluation (protocol §5): exact-average BN recalibration, determinism, no side effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeflow.config import Config

H, W = 32, 48
POOL = ["000000000", "222222222", "012012012"]


@pytest.fixture(scope="module")
def setup(demo_data: Path):
    from edgeflow.data.splits import resolve_splits
    from edgeflow.model.supernet import Supernet
    from edgeflow.train.evaluate import Evaluator, datasets

    cfg = Config()
    cfg.data.train_dir, cfg.data.val_dir = str(demo_data / "train"), str(demo_data / "val")
    cfg.data.input_height, cfg.data.input_width = H, W
    cfg.train.batch_size = 4
    cfg.eval.batch_size, cfg.eval.bn_recal_batches, cfg.eval.eval_batches_per_arch = 4, 2, 2
    splits = resolve_splits(cfg)
    model = Supernet(seed=0)
    recal, evals = datasets(cfg, splits.train, splits.val)
    return model, Evaluator(model, cfg), recal, evals


def all_values(model) -> list[np.ndarray]:
    return [v.numpy() for v in model.variables]


def test_same_weights_give_identical_numbers_and_no_variable_changes(setup) -> None:
    model, evaluator, recal, evals = setup
    before = all_values(model)
    first = evaluator.evaluate(POOL, recal, evals)
    second = evaluator.evaluate(POOL, recal, evals)
    assert first == second
    assert all(np.array_equal(a, b) for a, b in zip(before, all_values(model), strict=True))
    values = np.array([first.arch_epe[c] for c in POOL])
    assert list(first.arch_epe) == POOL and np.all(np.isfinite(values))
    assert first.mean_epe == pytest.approx(values.mean())
    assert first.std_epe == pytest.approx(values.std(ddof=0))  # population std
    assert first.median_epe == pytest.approx(np.median(values))
    assert first.p90_epe == pytest.approx(np.percentile(values, 90))


def test_recalibration_is_an_exact_average_whose_first_batch_resets(setup) -> None:
    model, evaluator, recal, _ = setup
    arch = [2] * 9
    (first_batch,) = list(recal.take(1))
    bn = model.arch_bn_moving_variables(arch)
    trained = [v.numpy() for v in bn]
    try:
        evaluator.recalibrate(arch, [first_batch])
        once = [v.numpy() for v in bn]
        for v in bn:  # garbage in the old statistics must not survive: batch 0 replaces them
            v.assign(v + 100.0)
        evaluator.recalibrate(arch, [first_batch, first_batch, first_batch])
        thrice = [v.numpy() for v in bn]
    finally:
        for v, t in zip(bn, trained, strict=True):
            v.assign(t)
    assert any(not np.allclose(a, b) for a, b in zip(trained, once, strict=True))
    for a, b in zip(once, thrice, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_summary_of_a_pool() -> None:
    from edgeflow.train.evaluate import summarize

    r = summarize({"000000000": 1.0, "111111111": 2.0, "222222222": 6.0})
    assert (r.mean_epe, r.median_epe) == (3.0, 2.0)
    assert r.std_epe == pytest.approx(np.std([1.0, 2.0, 6.0]))
    assert r.fields()["arch_epe"] == {"000000000": 1.0, "111111111": 2.0, "222222222": 6.0}
