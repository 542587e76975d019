"""Resume (protocol §6): a killed run continues with the same archs, data order and weights as a run that
was never interrupted; SIGTERM mid-epoch checkpoints, exits 75, and the resume completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeflow.rundir import read_events
from tests.helpers import REPO, tiny_config

pytestmark = pytest.mark.slow  # trains: tests/conftest.py schedules these files first

STEPS_PER_EPOCH = 12  # 24 demo samples, batch 2


def write_config(tmp: Path, demo: Path, name: str, **train: object) -> Path:
    return tiny_config(tmp, demo, name, runtime={"seed": 3, "heartbeat_seconds": 0.2},
                       train={"num_epochs": 2, "batch_size": 2, **train},
                       eval={"pool": ["012012012"], "min_epochs_before_early_stop": 30})


def start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeflow", "train", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_event(proc: subprocess.Popen, events: Path, match, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ev in read_events(events):
            if match(ev):
                return ev
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited {proc.returncode} early:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for an event")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def latest_weights(run: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    prefix = json.loads((run / "checkpoints" / "latest.json").read_text())["prefix"]
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "model/" in k or "optimizer/" in k}


def assert_same_training(a: Path, b: Path) -> None:
    sa, sb = (json.loads((r / "state.json").read_text()) for r in (a, b))
    assert sa["step"] == sb["step"] == 2 * STEPS_PER_EPOCH
    assert sa["arch_digest"] == sb["arch_digest"]  # the same 3 archs at every step
    assert sa["data_digest"] == sb["data_digest"]  # the same batches in the same order
    assert sa["fairness_counts"] == sb["fairness_counts"] and sb["fairness_gap"] == 0
    wa, wb = latest_weights(a), latest_weights(b)
    assert wa.keys() == wb.keys() and any("optimizer/" in k for k in wa)
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=1e-4, atol=1e-5, err_msg=key)


def first_event(events: Path, match) -> dict | None:
    return next((e for e in read_events(events) if match(e)), None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict:
    """Three runs of one config, side by side to save wall time: uninterrupted; SIGKILLed after its
    epoch-1 checkpoint and resumed; SIGTERMed mid-epoch 1 and resumed."""
    tmp = tmp_path_factory.mktemp("resume")
    names = ("straight", "killed", "preempted")
    cfgs = {n: write_config(tmp, demo_data, n) for n in names}
    dirs = {n: tmp / "out" / n for n in names}
    procs = {n: start(cfgs[n]) for n in names}
    triggers = {
        "killed": (lambda e: e["event"] == "checkpoint" and e["kind"] == "latest" and e["epoch"] == 1,
                   signal.SIGKILL),
        "preempted": (lambda e: e["event"] == "heartbeat" and e["epoch"] == 1, signal.SIGTERM),
    }
    deadline = time.time() + 400
    while triggers and time.time() < deadline:
        for name, (match, sig) in list(triggers.items()):
            if first_event(dirs[name] / "events.jsonl", match) is not None:
                procs[name].send_signal(sig)
                del triggers[name]
            elif procs[name].poll() is not None:
                log = procs[name].stdout.read()[-3000:]
                raise AssertionError(f"{name} exited {procs[name].returncode} early:\n{log}")
        time.sleep(0.02)
    assert not triggers, f"timed out waiting for {list(triggers)}"
    first = {n: finish(procs[n]) for n in ("killed", "preempted")}
    resumed = {n: start(cfgs[n]) for n in ("killed", "preempted")}
    result = {"dirs": dirs, "first": first, "straight": finish(procs["straight"])}
    result["resumed"] = {n: finish(p) for n, p in resumed.items()}
    return result


def test_uninterrupted_run_completes(runs: dict) -> None:
    code, out = runs["straight"]
    assert code == 0, out[-3000:]


def test_sigkill_after_epoch_1_then_resume_matches_an_uninterrupted_run(runs: dict) -> None:
    run = runs["dirs"]["killed"]
    assert runs["first"]["killed"][0] == -signal.SIGKILL
    code, out = runs["resumed"]["killed"]
    assert code == 0, out[-3000:]
    starts = [e for e in read_events(run / "events.jsonl") if e["event"] == "run_start"]
    assert len(starts) == 2 and starts[1]["start_epoch"] == 2 and "latest-" in starts[1]["resumed_from"]
    assert "resumed from" in out
    assert_same_training(runs["dirs"]["straight"], run)
    # metrics.csv lists each epoch once even if epoch 2 was partly trained before the kill
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_sigterm_mid_epoch_checkpoints_exits_75_and_resume_completes(runs: dict) -> None:
    run, straight = runs["dirs"]["preempted"], runs["dirs"]["straight"]
    code, out = runs["first"]["preempted"]
    assert code == 75, out[-3000:]
    events = list(read_events(run / "events.jsonl"))
    first_end = next(e for e in events if e["event"] == "run_end")
    assert first_end["status"] == "preempted" and "SIGTERM" in first_end["reason"]
    ckpt = [e for e in events if e["event"] == "checkpoint"][0]
    assert ckpt["epoch"] == 1 and 0 < ckpt["batch_in_epoch"] < STEPS_PER_EPOCH

    code, out = runs["resumed"]["preempted"]
    assert code == 0, out[-3000:]
    assert f"batch {ckpt['batch_in_epoch']}" in out
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    # skip_batches resumed exactly the rest of epoch 1: same archs, data and weights as never stopped
    assert_same_training(straight, run)
    epoch1 = [e for e in read_events(run / "events.jsonl") if e["event"] == "epoch"][0]
    straight1 = [e for e in read_events(straight / "events.jsonl") if e["event"] == "epoch"][0]
    assert epoch1["train_loss"] == pytest.approx(straight1["train_loss"], rel=1e-4)  # whole-epoch mean


def test_sigterm_and_sigusr2_raise_the_stop_flag() -> None:
    from edgeflow.train.signals import StopFlag

    for sig in (signal.SIGUSR2, signal.SIGTERM):
        flag = StopFlag().install()
        try:
            assert not flag.requested
            os.kill(os.getpid(), sig)
            assert flag.requested and flag.name == sig.name
        finally:
            flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
