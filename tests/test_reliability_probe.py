"""The kill probes, short: one SIGKILL at a random moment of each kind, then a rerun, compared with a
run that was never killed.

- training (bench/probe_kill_resume.py): a tiny run killed, resumed, bit-exact with an uninterrupted
  one (tests/test_resume.py adds a SIGKILL after an epoch and a SIGTERM mid-epoch);
- pack, rank, export, import-v1 (bench/probe_kill_commands.py): killed while writing over their own
  earlier output or into a new place; the output right after the kill is the old one or absent, the
  rerun's equals the unkilled run's, and nothing temporary is left.

`make probe` runs the long versions (20 kills of training, 4 of each command). The kill moment is drawn
from a new seed each time (printed on a failure: `python -m bench.probe_kill_commands --seed S`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bench.probe_kill_commands import KINDS
from bench.probe_kill_commands import probe as probe_commands
from bench.probe_kill_resume import probe
from tests.nas_helpers import make_run


@pytest.mark.slow
def test_sigkills_at_random_moments_then_resume_end_bit_identical(tmp_path_factory: pytest.TempPathFactory,
                                                                  demo_data: Path) -> None:
    # Not tmp_path: its name contains "test_...", and a val_dir named like a test split is refused.
    workdir = tmp_path_factory.mktemp("probe")
    result = probe(kills=1, seed=3, workdir=workdir, epochs=2, data=demo_data)
    assert result.ok, "\n".join(result.differences)
    # The kills landed (a run that finished before its first kill would compare nothing interesting).
    assert result.kills, "no kill landed before the run completed"
    assert result.starts == len(result.kills) + 1


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """A run with a 'best' checkpoint to rank and export (initialised, not trained: nothing here needs it)."""
    return make_run(tmp_path_factory.mktemp("probe_source"), demo_data, name="source")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_command_killed_at_a_random_moment_then_run_again_equals_an_unkilled_run(
        kind: str, tmp_path_factory: pytest.TempPathFactory, demo_data: Path, source_run: Path) -> None:
    seed = int(os.environ.get("EDGEFLOW_PROBE_SEED", random.randrange(1_000_000)))
    workdir = tmp_path_factory.mktemp(f"probe_{kind}")
    (result,) = probe_commands([kind], kills=1, seed=seed, workdir=workdir, data=demo_data, run=source_run)
    where = f"seed {seed}, kills: {result.kills}"
    assert result.ok, "\n".join([where, *result.differences])
    assert len(result.kills) == 1, where
