"""Cosine LR from the base LR to 0 over num_epochs * steps_per_epoch, no warm-up (protocol §4)."""

from __future__ import annotations

import math

import pytest

from edgeflow.train.schedule import learning_rate, total_steps


def test_cosine_starts_at_base_ends_at_zero_without_warmup() -> None:
    horizon = total_steps(num_epochs=4, steps_per_epoch=25)
    assert horizon == 100
    assert learning_rate(0, 1e-4, horizon) == pytest.approx(1e-4)
    assert learning_rate(1, 1e-4, horizon) < 1e-4  # decays from the very first step: no warm-up
    assert learning_rate(50, 1e-4, horizon) == pytest.approx(0.5e-4)
    assert learning_rate(25, 1e-4, horizon) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(100, 1e-4, horizon) == pytest.approx(0.0, abs=1e-20)


def test_cosine_is_monotone_and_stays_at_zero_past_the_horizon() -> None:
    values = [learning_rate(s, 1.0, 10) for s in range(15)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert values[10:] == [pytest.approx(0.0, abs=1e-20)] * 5


def test_constant_schedule_and_unknown_name() -> None:
    assert [learning_rate(s, 3e-4, 10, "constant") for s in (0, 5, 20)] == [3e-4] * 3
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(0, 1e-4, 10, "linear")


def test_cosine_ends_at_lr_min_when_given() -> None:
    # The stand-alone recipe: 1e-4 down to 1e-6, and no lower past the horizon.
    assert learning_rate(0, 1e-4, 100, min_lr=1e-6) == pytest.approx(1e-4)
    assert learning_rate(50, 1e-4, 100, min_lr=1e-6) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5)
    assert learning_rate(100, 1e-4, 100, min_lr=1e-6) == pytest.approx(1e-6)
    assert learning_rate(150, 1e-4, 100, min_lr=1e-6) == pytest.approx(1e-6)
    assert learning_rate(30, 1e-4, 100, min_lr=0.0) == learning_rate(30, 1e-4, 100)
