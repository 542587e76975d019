"""What a killed writer leaves is removed by the next writer, and nothing of a live one is touched.

The writers are real processes stopped by a real SIGKILL at a known point (they say when they got
there, and hang), so no test depends on timing: an atomic file write mid-fsync, a results file's
creator between its link and its unlink, a folder written whole before its publication.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeflow.nas import results
from edgeflow.rundir import atomic_write_text, staging
from edgeflow.rundir.atomic import temp_path
from tests.helpers import REPO

_HANG_IN = r"""
import os, sys, time
from pathlib import Path
from edgeflow.rundir import staging
from edgeflow.nas import results
from edgeflow.rundir import atomic_write_text

def hang(*args, **kwargs):
    print("there", flush=True)
    time.sleep(600)

where, path = sys.argv[1], Path(sys.argv[2])
if where == "atomic":
    os.fsync = hang
    atomic_write_text(path, "half")
elif where == "results":
    os.link = hang
    results.ensure_file(path)
else:
    with staging.staged(path, "export") as folder:
        (folder / "model.tflite").write_bytes(b"half")
        hang()
"""


def _killed_at(where: str, path: Path) -> None:
    """Run a writer of `path` until it reaches `where`, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", _HANG_IN, where, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "there"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_atomic_write_killed_mid_write_leaves_a_temporary_the_next_write_removes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    _killed_at("atomic", path)
    assert len(_hidden(tmp_path)) == 1 and not path.exists()
    live = temp_path(path)  # this process's: alive
    other = tmp_path / ".state.json.othernode-1-0123abcd.tmp"  # another node's: maybe alive
    live.write_text("mine")
    other.write_text("theirs")
    atomic_write_text(path, "whole")
    assert path.read_text() == "whole"
    assert _hidden(tmp_path) == sorted([live.name, other.name])
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_results_file_creator_killed_before_its_cleanup_leaves_nothing_after_the_next_append(
        tmp_path: Path) -> None:
    path = tmp_path / results.RESULTS_CSV
    _killed_at("results", path)
    assert len(_hidden(tmp_path)) == 1
    row = {c: 0 for c in results.COLUMNS}
    row.update(code="000000000", checkpoint="best-000001", checkpoint_digest="d", protocol="p", writer="w")
    for c in results.FLOAT_COLUMNS:
        row[c] = 1.0
    results.append(path, row)
    assert _hidden(tmp_path) == [] and [r["code"] for r in results.read_rows(path)] == ["000000000"]


def test_a_staged_folder_killed_before_publication_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    target = tmp_path / "e"
    _killed_at("staged", target)
    (killed,) = _hidden(tmp_path)
    assert killed.startswith(".e.export-") and (tmp_path / killed / "model.tflite").exists()
    elsewhere = tmp_path / ".e.export-othernode-1-0123abcd"
    elsewhere.mkdir()
    with staging.staged(target, "export") as folder:
        assert not (tmp_path / killed).exists() and elsewhere.exists()
        (folder / "model.tflite").write_bytes(b"whole")
        staging.publish_link(folder, target, "export")
    assert (target / "model.tflite").read_bytes() == b"whole"
    assert _hidden(tmp_path) == sorted([os.readlink(target), elsewhere.name])
    # Written again: the new version replaces the old one, which is removed after the swap.
    first = os.readlink(target)
    with staging.staged(target, "export") as folder:
        (folder / "model.tflite").write_bytes(b"again")
        staging.publish_link(folder, target, "export")
    assert os.readlink(target) != first and not (tmp_path / first).exists()
    assert (target / "model.tflite").read_bytes() == b"again"


def test_a_staged_folder_is_removed_on_an_error_and_never_replaces_what_is_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "e"
    with pytest.raises(RuntimeError), staging.staged(target, "export") as folder:
        (folder / "x").write_text("half")
        raise RuntimeError("failed midway")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(FileExistsError), staging.staged(target, "export") as folder:
        staging.publish_link(folder, target, "export")
    assert [p.name for p in tmp_path.iterdir()] == ["e"] and (target / "keep").read_text() == "mine"
