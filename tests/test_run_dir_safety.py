"""The run directory is the trainer's alone: a folder edgeflow did not make is never written into, a
second trainer is refused while the first holds the run, and a write that fails ends the run with one
clear line and the status recorded wherever the file system still takes it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edgeflow import rundir
from tests.helpers import REPO, run_cli, tiny_config


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_existing_folder_that_is_not_a_run_is_never_written_into(tmp_path: Path, demo_data: Path) -> None:
    out = tmp_path / "out"
    (out / "ssh").mkdir(parents=True)
    (out / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
    cfg = tiny_config(tmp_path, demo_data, name="ssh")
    before = files_of(out)
    proc = run_cli("edgeflow", "train", "--config", str(cfg))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not empty and is not an edgeflow run directory" in proc.stderr
    assert files_of(out) == before and sorted(p.name for p in (out / "ssh").iterdir()) == ["sshd_config"]
    # An empty folder (made by hand for the run) is fine to use.
    (out / "fresh").mkdir()
    assert rundir.foreign_folder(out / "fresh") == "" and rundir.foreign_folder(out / "ssh") != ""


def test_a_second_trainer_is_refused_while_the_run_is_held(tmp_path: Path, demo_data: Path) -> None:
    cfg = tiny_config(tmp_path, demo_data, name="held")
    run = tmp_path / "out" / "held"
    # Another trainer holds the run (taken here with the same lock the trainer takes).
    holder = rundir.RunLock(run).acquire()
    try:
        proc = run_cli("edgeflow", "train", "--config", str(cfg))
    finally:
        holder.release()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{run} is in use by pid {os.getpid()} on " in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / rundir.RUN_FILE).exists() and not (run / rundir.EVENTS_FILE).exists()
    # A holder that died releases it: the kernel drops the lock with the process.
    code = f"from edgeflow import rundir; rundir.RunLock({str(run)!r}).acquire(); print('held')"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip() == "held"
    done = run_cli("edgeflow", "train", "--config", str(cfg))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root (CI runs as root)")
def test_a_read_only_output_folder_is_one_clear_line(tmp_path: Path, demo_data: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        cfg = tiny_config(tmp_path, demo_data, name="ro_run", runtime={"output_root": str(ro)})
        proc = run_cli("edgeflow", "train", "--config", str(cfg))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Read-only file system" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _small_files() -> None:
    # Files may not grow past 1 MB: the start files and events fit, a supernet checkpoint does not.
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_write_that_fails_mid_run_ends_it_failed_naming_the_file(tmp_path: Path, demo_data: Path) -> None:
    cfg = tiny_config(tmp_path, demo_data, name="full_disk")
    run = tmp_path / "out" / "full_disk"
    proc = subprocess.run([sys.executable, "-m", "edgeflow", "train", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=900, preexec_fn=_small_files,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == rundir.EXIT_FAILED, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("run failed:")]
    assert len(line) == 1 and "cannot write" in line[0] and str(run / "checkpoints") in line[0]
    run_json = json.loads((run / rundir.RUN_FILE).read_text())
    assert run_json["status"] == "failed" and "cannot write" in run_json["reason"]
    end = rundir.last_event(run / rundir.EVENTS_FILE, "run_end")
    assert end is not None and end["status"] == "failed" and end["exit_code"] == rundir.EXIT_FAILED
    assert not (run / "checkpoints" / "latest.json").exists()  # no pointer to a half-written checkpoint
