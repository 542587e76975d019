"""Every file and folder edgeflow writes gets the mode the umask allows, as any new file would.

A finished run, its rank and search folders, a pack and an export, each made by the real command
under umask 002 (a shared project folder: group-writable), then walked: files 0664, folders 0775.
0600 (what tempfile makes) or a hard-coded 0644 both fail it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, tiny_config

UMASK = 0o002


def _run(*args: str) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "edgeflow", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900, umask=UMASK)
    assert proc.returncode == 0, (args[0], proc.stderr[-3000:])


def _wrong_modes(root: Path) -> list[str]:
    wrong = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; its target is walked on its own
        want = (0o777 if stat.S_ISDIR(st.st_mode) else 0o666) & ~UMASK
        if stat.S_IMODE(st.st_mode) != want:
            wrong.append(f"{path.relative_to(root.parent)}: {stat.S_IMODE(st.st_mode):04o}, want {want:04o}")
    return wrong


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, Path]:
    # Not tmp_path: its name contains "test_...", and a val_dir named like a test split is refused.
    tmp = tmp_path_factory.mktemp("modes")
    cfg = tiny_config(tmp, demo_data, name="modes", eval={"pool": ["000000000"]})
    _run("train", "--config", str(cfg))
    run = tmp / "out" / "modes"
    _run("rank", "--run", str(run), "--archs", "000000000", "111111111", "--name", "r")
    _run("search", "--run", str(run), "--objectives", "epe,flops", "--evaluations", "2", "--population", "2",
         "--name", "s")
    _run("pack", "--config", str(cfg), "--out", str(tmp / "pack"), "--split", "val", "--no-progress")
    _run("export", "--run", str(run), "--arch", "000000000", "--out", str(tmp / "exports" / "e"),
         "--calibration-samples", "2")
    return {"run": run, "pack": tmp / "pack", "exports": tmp / "exports"}


@pytest.mark.slow
def test_run_rank_search_pack_and_export_files_follow_the_umask(made: dict[str, Path]) -> None:
    run = made["run"]
    for folder in (run / "checkpoints", run / "rank" / "r", run / "search" / "s", made["pack"], made["exports"]):
        assert any(p.is_file() for p in folder.rglob("*")), f"{folder} holds no file: nothing was checked"
    assert (run / "rank" / "r" / "results.csv").is_file() and (made["exports"] / "e" / "export.json").is_file()
    wrong = [line for root in made.values() for line in _wrong_modes(root)
             if not line.startswith(f"{run.name}/tensorboard:")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_the_tensorboard_folder_follows_the_umask(made: dict[str, Path]) -> None:
    assert not [line for line in _wrong_modes(made["run"]) if line.startswith(f"{made['run'].name}/tensorboard:")]
