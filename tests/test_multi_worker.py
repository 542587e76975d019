"""train.distribute: multi_worker without SLURM's scheduler: trainer processes given a SLURM step's
environment by hand (what srun sets), on this machine's loopback.

The real thing (srun starting 3 tasks, a requeue and a resume) is in tests/test_jobs_slurm.py; here
are the setups that must stop before training: a peer that never comes, tasks that disagree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeflow import rundir
from edgeflow.train import workers
from tests.helpers import REPO, tiny_config

pytestmark = pytest.mark.slow


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_task_outlives_its_test() -> Iterator[None]:
    # A task that waits for a peer forever would hold its ports (and a core) after a failed test.
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_task(config: Path, index: int, count: int, port_base: int, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, SLURM_PROCID=str(index), SLURM_STEP_NUM_TASKS=str(count), SLURM_STEP_NODELIST="localhost",
               SLURM_STEP_TASKS_PER_NODE=str(count), SLURM_JOB_ID="4242", TF_CPP_MIN_LOG_LEVEL="2")
    env[workers.PORT_BASE_ENV] = str(port_base)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeflow", "train", "--config", str(config), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def free_port_base() -> int:
    # A base whose next ports nobody listens on (the other xdist worker may run a test of its own).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1]) if s.getsockname()[1] < 60000 else 40000


def test_a_peer_that_never_comes_stops_the_task_with_the_addresses_and_writes_nothing(
        tmp_path: Path, demo_data: Path) -> None:
    cfg = tiny_config(tmp_path, demo_data, name="alone", train={"distribute": "multi_worker", "worker_timeout_s": 3})
    base = free_port_base()
    proc = start_task(cfg, 0, 2, base)  # task 1 of 2 is never started
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == rundir.EXIT_FAILED, out + err
    assert f"task 0 of 2: waiting up to 3 s for the peers (localhost:{base}, localhost:{base + 1})" in out
    assert "peers did not all answer within 3 s (train.worker_timeout_s)" in err
    assert "Timeout (0:00:03)!" in err
    assert not (tmp_path / "out" / "alone").exists()  # nothing written


def test_tasks_with_different_configs_refuse_to_train(tmp_path: Path, demo_data: Path) -> None:
    cfg = tiny_config(tmp_path, demo_data, name="twins",
                      train={"distribute": "multi_worker", "distribute_mode": "data_parallel", "num_epochs": 1})
    base = free_port_base()
    procs = [start_task(cfg, 0, 2, base), start_task(cfg, 1, 2, base, "--set", "train.lr=0.5")]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == rundir.EXIT_BAD_INPUT, out + err
        assert "tasks 1 start a different run than task 0" in err
    assert not (tmp_path / "out" / "twins").exists()  # no task wrote the run directory


def test_port_base_comes_from_the_job_id_unless_set() -> None:
    assert workers.port_base({"SLURM_JOB_ID": "123"}) == 20000 + 123 * 16
    assert workers.port_base({"SLURM_JOB_ID": "2123"}) == workers.port_base({"SLURM_JOB_ID": "123"})
    assert workers.port_base({"SLURM_JOB_ID": "9", workers.PORT_BASE_ENV: "31000"}) == 31000
    assert workers.port_base({}) == 20000
