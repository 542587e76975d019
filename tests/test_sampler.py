"""Strict-fairness sampler (protocol §4): permutations, fairness, reproducible state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS
from edgeflow.space.sampler import FairSampler


def test_each_step_is_one_permutation_per_block():
    sampler = FairSampler(seed=3)
    for _ in range(50):
        archs = sampler.next_archs()
        assert archs.shape == (NUM_OPTIONS, NUM_BLOCKS)
        assert archs.dtype == np.int32
        # every block's column is a permutation of (0, 1, 2): each option trained exactly once
        assert (np.sort(archs, axis=0) == np.arange(NUM_OPTIONS)[:, None]).all()


def test_fairness_gap_zero_at_every_step_and_counts_equal_steps():
    sampler = FairSampler(seed=0)
    assert sampler.fairness_gap() == 0
    for step in range(1, 301):
        sampler.next_archs()
        assert sampler.fairness_gap() == 0
        assert sampler.steps == step
        assert (sampler.counts == step).all()


def test_fairness_gap_detects_an_unfair_count():
    sampler = FairSampler(seed=0)
    sampler.next_archs()
    sampler.counts[4, 2] += 2
    assert sampler.fairness_gap() == 2


def test_permutations_are_random_and_independent_across_blocks():
    sampler = FairSampler(seed=11)
    rows = [sampler.next_archs() for _ in range(300)]
    first = np.stack([r[0] for r in rows])  # arch 0 of each step, (300, 9)
    # each option is arch 0's choice about a third of the time in every block
    share = np.stack([(first == o).mean(axis=0) for o in range(NUM_OPTIONS)])
    assert np.all(np.abs(share - 1 / 3) < 0.1)
    # blocks are not all drawn with the same permutation
    assert (first != first[:, :1]).any()


def test_same_seed_same_sequence_other_seed_differs():
    a, b, c = FairSampler(5), FairSampler(5), FairSampler(6)
    seq_a = [a.next_archs() for _ in range(20)]
    seq_b = [b.next_archs() for _ in range(20)]
    seq_c = [c.next_archs() for _ in range(20)]
    assert all((x == y).all() for x, y in zip(seq_a, seq_b, strict=True))
    assert not all((x == y).all() for x, y in zip(seq_a, seq_c, strict=True))


def test_state_dict_json_round_trip_continues_identically():
    original = FairSampler(seed=42)
    for _ in range(17):
        original.next_archs()
    saved = json.loads(json.dumps(original.state_dict()))
    expected = [original.next_archs() for _ in range(25)]

    resumed = FairSampler(seed=0)  # a different seed: the state must override it
    resumed.load_state_dict(saved)
    assert resumed.steps == 17
    assert (resumed.counts == 17).all()
    got = [resumed.next_archs() for _ in range(25)]
    assert all((x == y).all() for x, y in zip(expected, got, strict=True))
    assert resumed.steps == original.steps == 42
    assert (resumed.counts == original.counts).all()


def test_state_big_ints_are_json_safe_strings():
    state = FairSampler(seed=1).state_dict()
    inner = state["bit_generator"]["state"]
    assert isinstance(inner["state"], str) and int(inner["state"]) > 2**53
    json.dumps(state)  # no NumPy types left


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.pop("counts"), "missing"),
    (lambda s: s.update(counts=[[0, 0, 0]]), "shape"),
    (lambda s: s.update(version=99), "version"),
    (lambda s: s["bit_generator"].update(bit_generator="MT19937"), "PCG64"),
    (lambda s: s["bit_generator"]["state"].update(state="not-a-number"), "bit generator state"),
])
def test_bad_state_is_rejected_and_leaves_the_sampler_unchanged(mutate, match):
    state = FairSampler(seed=2).state_dict()
    mutate(state)
    sampler = FairSampler(seed=9)
    before = sampler.state_dict()
    with pytest.raises(ValueError, match=match):
        sampler.load_state_dict(state)
    assert sampler.state_dict() == before


def test_negative_seed_rejected():
    with pytest.raises(ValueError, match="seed"):
        FairSampler(seed=-1)


def test_a_stand_alone_run_trains_its_one_arch_every_step_and_resumes_its_counts():
    from edgeflow.space.sampler import FixedSampler, archs_per_step, make_sampler

    assert isinstance(make_sampler(3), FairSampler) and archs_per_step() == NUM_OPTIONS
    sampler = make_sampler(3, "012012012")
    assert isinstance(sampler, FixedSampler) and archs_per_step("012012012") == 1
    for _ in range(5):
        archs = sampler.next_archs()
        assert archs.dtype == np.int32 and archs.tolist() == [[0, 1, 2, 0, 1, 2, 0, 1, 2]]
    assert sampler.fairness_gap() is None  # strict fairness does not apply (never a gap to alert on)
    assert sampler.counts[np.arange(NUM_BLOCKS), [0, 1, 2] * 3].tolist() == [5] * NUM_BLOCKS
    assert int(sampler.counts.sum()) == 5 * NUM_BLOCKS
    again = FixedSampler("012012012")
    again.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert again.steps == 5 and (again.counts == sampler.counts).all()
    with pytest.raises(ValueError, match="arch 012012012's, this run trains 000021222"):
        FixedSampler("000021222").load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="a supernet's state has no arch"):
        FixedSampler("000021222").load_state_dict(FairSampler(0).state_dict())
