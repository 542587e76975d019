"""The archs each training step trains: the strict-fairness sampler (protocol §4) of a supernet, or the
one arch of a stand-alone net (`train.arch`), behind one small interface (`make_sampler`).

Strict fairness: each step draws, for every choice block, an independent random permutation of the options; arch k of
the step takes entry k of every permutation. So each step trains every option of every block exactly
once and the cumulative option counts stay equal (fairness gap 0) at every step boundary.

Light module (NumPy only). Its state (bit generator state, counts, step) is JSON-serialisable so a
resumed run continues the exact same sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS, parse_arch

_STATE_VERSION = 1


class FairSampler:
    """Draws the NUM_OPTIONS archs of each strict-fairness step from a seeded PCG64 generator."""

    archs_per_step = NUM_OPTIONS

    def __init__(self, seed: int) -> None:
        if int(seed) < 0:
            raise ValueError(f"sampler seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.counts = np.zeros((NUM_BLOCKS, NUM_OPTIONS), dtype=np.int64)
        self.steps = 0

    def next_archs(self) -> np.ndarray:
        """The archs of the next step: int32 (NUM_OPTIONS, NUM_BLOCKS), row k = arch k."""
        # One permutation per block, drawn block by block in arch-code order.
        perms = np.stack([self._rng.permutation(NUM_OPTIONS) for _ in range(NUM_BLOCKS)])
        archs = perms.T.astype(np.int32)
        for row in archs:
            self.counts[np.arange(NUM_BLOCKS), row] += 1
        self.steps += 1
        return archs

    def fairness_gap(self) -> int:
        """Max over blocks of (max option count - min option count); 0 unless something is broken."""
        return int((self.counts.max(axis=1) - self.counts.min(axis=1)).max())

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "steps": int(self.steps),
            "counts": self.counts.astype(int).tolist(),
            "bit_generator": _jsonable(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict()` (possibly after a JSON round trip)."""
        try:
            version = state["version"]
            counts = np.asarray(state["counts"], dtype=np.int64)
            steps = int(state["steps"])
            bit_state = state["bit_generator"]
        except (KeyError, TypeError) as err:
            raise ValueError(f"sampler state is missing or has a bad field: {err!r}") from err
        if version != _STATE_VERSION:
            raise ValueError(f"sampler state version {version!r} is not supported (expected {_STATE_VERSION})")
        if counts.shape != (NUM_BLOCKS, NUM_OPTIONS):
            raise ValueError(f"sampler state counts have shape {counts.shape}, "
                             f"expected {(NUM_BLOCKS, NUM_OPTIONS)}")
        if not isinstance(bit_state, dict) or bit_state.get("bit_generator") != "PCG64":
            raise ValueError(f"sampler state bit generator is {bit_state.get('bit_generator')!r}, expected 'PCG64'")
        bit_gen = np.random.PCG64()
        try:
            bit_gen.state = {
                "bit_generator": "PCG64",
                "state": {"state": int(bit_state["state"]["state"]), "inc": int(bit_state["state"]["inc"])},
                "has_uint32": int(bit_state["has_uint32"]),
                "uinteger": int(bit_state["uinteger"]),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"sampler state has a bad bit generator state: {err!r}") from err
        self._rng = np.random.Generator(bit_gen)
        self.seed = int(state.get("seed", self.seed))
        self.counts = counts
        self.steps = steps


class FixedSampler:
    """The one arch of a stand-alone net, every step: FairSampler's interface, nothing random.

    Strict fairness does not apply: `fairness_gap` is None (not measured), never a gap the monitor
    would alert on. `counts` are the real option counts (the arch's option of each block, once a step)."""

    archs_per_step = 1

    def __init__(self, code: str) -> None:
        self.arch = parse_arch(code)
        self._row = np.asarray([self.arch], dtype=np.int32)
        self.counts = np.zeros((NUM_BLOCKS, NUM_OPTIONS), dtype=np.int64)
        self.steps = 0

    def next_archs(self) -> np.ndarray:
        """The arch of the next step: int32 (1, NUM_BLOCKS)."""
        self.counts[np.arange(NUM_BLOCKS), self._row[0]] += 1
        self.steps += 1
        return self._row.copy()

    def fairness_gap(self) -> int | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "arch": "".join(str(v) for v in self.arch), "steps": int(self.steps),
                "counts": self.counts.astype(int).tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            version, arch, steps = state["version"], state["arch"], int(state["steps"])
            counts = np.asarray(state["counts"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"stand-alone sampler state is missing or has a bad field: {err!r} (a supernet's "
                             f"state has no arch)") from err
        if version != _STATE_VERSION:
            raise ValueError(f"sampler state version {version!r} is not supported (expected {_STATE_VERSION})")
        if parse_arch(str(arch)) != self.arch:
            raise ValueError(f"sampler state is arch {arch}'s, this run trains {''.join(map(str, self.arch))}")
        if counts.shape != (NUM_BLOCKS, NUM_OPTIONS):
            raise ValueError(f"sampler state counts have shape {counts.shape}, expected {(NUM_BLOCKS, NUM_OPTIONS)}")
        self.counts, self.steps = counts, steps


Sampler = FairSampler | FixedSampler


def make_sampler(seed: int, arch: str = "") -> Sampler:
    """The sampler of a run: strict fairness for a supernet (arch ""), the fixed arch of a stand-alone net."""
    return FixedSampler(arch) if arch else FairSampler(seed)


def archs_per_step(arch: str = "") -> int:
    """How many archs a training step trains: 3 for a supernet (strict fairness), 1 for a stand-alone net."""
    return FixedSampler.archs_per_step if arch else FairSampler.archs_per_step


def _jsonable(value: Any) -> Any:
    # PCG64 state holds 128-bit ints; they are written as decimal strings because many JSON readers
    # (jq, JavaScript) silently round integers beyond 2**53. load_state_dict accepts ints or strings.
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value)) if abs(int(value)) >= 2**53 else int(value)
    return value
