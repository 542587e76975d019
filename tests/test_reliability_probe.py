"""The crash-and-resume probe (bench/probe_kill_resume.py), short: one SIGKILL at a random moment of a
tiny run, followed by a resume, then a bit-exact comparison with an uninterrupted run (tests/test_resume.py
adds a SIGKILL after an epoch and a SIGTERM mid-epoch).
`make probe` runs the long version (20 kills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.probe_kill_resume import probe


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
