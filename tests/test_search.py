"""`edgeflow search`: NSGA-II over the arch space; non-dominated front, resume after SIGKILL, reuse, constraints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeflow.commands import search as search_cmd
from edgeflow.nas import results, search
from edgeflow.nas.rank import RankError
from edgeflow.space.latency import latency_ms
from tests.helpers import REPO
from tests.nas_helpers import make_run

LIMIT = 2.6e8  # FLOPs at 32x48: the space spans about 1.4e8 to 4.2e8, so some archs break it
SETTINGS = ["--objectives", "epe,flops", "--evaluations", "12", "--population", "4", "--max-flops", str(LIMIT),
            "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, Path]:
    """Two copies of one run (same checkpoint bytes): one searched straight through, one killed."""
    straight = make_run(tmp_path_factory.mktemp("search"), demo_data)
    killed = tmp_path_factory.mktemp("search_killed") / "tiny"
    shutil.copytree(straight, killed)
    return straight, killed


def dominates(a: dict, b: dict) -> bool:
    return (a["epe_mean"] <= b["epe_mean"] and a["flops"] <= b["flops"]
            and (a["epe_mean"] < b["epe_mean"] or a["flops"] < b["flops"]))


@pytest.mark.slow
def test_search_front_is_non_dominated_and_a_killed_search_resumes_to_the_same_front(runs) -> None:
    straight, killed = runs
    assert search_cmd.main(["--run", str(straight), *SETTINGS, "--name", "s"]) == 0
    folder = straight / "search/s"
    front = search.read_front(folder / "front.csv")
    visited = results.read_rows(folder / "results.csv")
    assert len(visited) >= 12 - 4 and front
    for f in front:
        assert not any(dominates(v, f) for v in visited), f"{f['code']} is dominated"
    for v in visited:  # every visited arch off the front is dominated by a front member
        if v["code"] not in {f["code"] for f in front}:
            assert any(dominates(f, v) for f in front)
    assert (folder / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the constraint: an arch above the FLOPs limit is neither evaluated nor on the front
    assert all(r["flops"] <= LIMIT for r in visited)
    state = json.loads((folder / "search_state.json").read_text())
    assert state["complete"] and state["n_eval"] >= 12

    # the same search in a subprocess, SIGKILLed after its second evaluation, then run again
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "edgeflow", "search", "--run", str(killed), *SETTINGS,
                             "--name", "s"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    csv_path = killed / "search/s/results.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(results.read_rows(csv_path)) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done_before = len(results.read_rows(csv_path))
    assert 2 <= done_before < len(visited)
    assert search_cmd.main(["--run", str(killed), *SETTINGS, "--name", "s"]) == 0
    resumed = search.read_front(killed / "search/s/front.csv")
    assert resumed == front
    # nothing the killed process evaluated was evaluated again
    assert len(results.read_rows(csv_path)) == len(visited)
    assert len(csv_path.read_text().splitlines()) == 1 + len(visited)


def test_search_reuses_every_result_of_the_run_and_refuses_other_settings(runs, capsys) -> None:
    straight, _ = runs
    assert search_cmd.main(["--run", str(straight), *SETTINGS, "--name", "again"]) == 0
    state = json.loads((straight / "search/again/search_state.json").read_text())
    assert state["new_evaluations"] == 0  # all cached from the first search's results
    assert search.read_front(straight / "search/again/front.csv") == search.read_front(
        straight / "search/s/front.csv")
    capsys.readouterr()
    assert search_cmd.main(["--run", str(straight), *SETTINGS[:-1], "4", "--name", "again"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_objectives_and_settings_are_checked() -> None:
    assert search.parse_objectives("epe,latency") == ("epe", "latency")
    for bad in ("flops,epe", "epe", "epe,speed", "epe,flops,flops"):
        with pytest.raises(RankError, match="--objectives"):
            search.parse_objectives(bad)
    with pytest.raises(RankError, match="--evaluations"):
        search.check_settings(search.Settings(("epe", "flops"), evaluations=3, population=4, seed=0))


def test_latency_figure_grows_with_kernels_depth_and_resolution() -> None:
    small, big = latency_ms("000000000", 180, 240), latency_ms("222222222", 180, 240)
    assert 0 < small < big
    assert latency_ms("000000000", 360, 480) > 3 * small
    assert latency_ms("000000002", 180, 240) > small  # a bigger kernel on the full-resolution head
