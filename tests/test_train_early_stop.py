"""Early stopping on sequences of mean EPE (protocol §6)."""

from __future__ import annotations

import math

from edgeflow.train.early_stop import EarlyStopState, update


def run(seq: list[float], *, min_delta: float = 0.0, patience: int = 2, min_epochs: int = 0):
    state = EarlyStopState()
    decisions = []
    for epoch, value in enumerate(seq, 1):
        d = update(state, epoch, value, min_delta=min_delta, patience=patience, min_epochs=min_epochs)
        decisions.append(d)
        if d.stop:
            break
    return state, decisions


def test_stops_when_bad_count_reaches_patience() -> None:
    state, decisions = run([5.0, 4.0, 4.5, 4.2, 3.0], patience=2)
    assert [d.improved for d in decisions] == [True, True, False, False]
    assert decisions[-1].stop and len(decisions) == 4
    assert (state.best, state.best_epoch, state.bad_epochs) == (4.0, 2, 2)


def test_improvement_must_beat_best_by_more_than_min_delta() -> None:
    state, decisions = run([5.0, 4.999, 4.99, 4.0], min_delta=0.01, patience=5)
    assert [d.improved for d in decisions] == [True, False, False, True]
    assert state.best == 4.0 and state.bad_epochs == 0
    # exactly best - min_delta is not an improvement ("metric < best - min_delta")
    state, decisions = run([5.0, 4.5], min_delta=0.5, patience=5)
    assert [d.improved for d in decisions] == [True, False]


def test_never_stops_before_min_epochs() -> None:
    state, decisions = run([5.0, 6.0, 6.0, 6.0, 6.0, 6.0], patience=2, min_epochs=5)
    assert [d.stop for d in decisions] == [False, False, False, False, True]
    assert state.bad_epochs == 4


def test_non_finite_metric_is_never_an_improvement() -> None:
    state, decisions = run([math.nan, 5.0, math.inf], patience=5)
    assert [d.improved for d in decisions] == [False, True, False]
    assert state.best == 5.0 and state.bad_epochs == 1


def test_state_round_trip() -> None:
    state, _ = run([5.0, 6.0], patience=5)
    again = EarlyStopState.from_dict(state.to_dict())
    assert again == state
