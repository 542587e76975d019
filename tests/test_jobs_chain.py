"""Job dependencies: a chain of jobs, each starting only after the ones before ended well.

The node command is a stand-in, not training: it notes when it started, records how its run ended
(as a command of the kit does) and exits accordingly. The chain goes through the one submission
pipeline (jobs.submit), with the local executor (the node side waits for the earlier jobs), where
`jobs status` and `list` are checked while stages wait, and on the real single-node SLURM
(`--dependency=afterok`, which removes a dependent job that can no longer start). Chains of real
training stages (`submit --stages`) are in tests/test_jobs_stages.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_service

from edgeflow import rundir
from jobs import backends, listing, profile, status, sweep
from jobs import submit as pipeline
from jobs.records import submissions
from jobs.submit import Batch, Unit
from tests.helpers import REPO

DEMO = REPO / "configs" / "demo.yaml"

# argv: run directory, then "completed" / "failed" (how the run ends), "hold" / "holdfail" (end completed /
# failed once the file `go` appears in the run directory) or "noop" (end well without recording anything,
# as the trainer does for a run with nothing left to do).
STAND_IN = """
import sys, time, pathlib
from edgeflow import jobenv, rundir
run, how = pathlib.Path(sys.argv[1]), sys.argv[2]
(run / "started").write_text(repr(time.time()))
while how.startswith("hold") and not (run / "go").exists():
    time.sleep(0.2)
if how == "noop":
    sys.exit(0)
status = "failed" if how in ("failed", "holdfail") else "completed"
rundir.record_end(run, run.name, jobenv.job_id(), status, f"stand-in command {status}")
sys.exit(0 if status == "completed" else 1)
"""


def unit(demo_data: Path, out: Path, name: str, how: str) -> Unit:
    sets = [f"data.train_dir={demo_data / 'train'}", f"data.val_dir={demo_data / 'val'}",
            f"runtime.output_root={out}", f"runtime.experiment_name={name}"]
    (el,) = sweep.expand([str(DEMO)], None, sets)
    return Unit(el.run_dir, name, el.cfg, "stand-in", args=("-c", STAND_IN, str(el.run_dir), how))


def chain(*units: Unit) -> list[Batch]:
    return [Batch("stand-in", [u], f"chain-{u.experiment}") for u in units]


def wait_for(what: str, pred: Callable[[], bool], limit_s: float = 300) -> None:
    end = time.time() + limit_s
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what} after {limit_s:.0f} s")


def run_end(run: Path) -> dict:
    end = rundir.last_event(run / "events.jsonl", "run_end")
    assert end is not None, f"{run}: no run_end"
    return end


@pytest.fixture
def local_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path_factory.mktemp("chain")
    monkeypatch.setenv("EDGEFLOW_JOBS_INDEX", str(base / "index.jsonl"))
    monkeypatch.chdir(REPO)
    return base


def test_local_chain_starts_the_second_job_after_the_first_ended_well(local_env: Path, demo_data: Path) -> None:
    prof = profile.load("local")
    first, second = unit(demo_data, local_env, "a", "completed"), unit(demo_data, local_env, "b", "completed")
    subs = pipeline.submit(chain(first, second), prof)
    results = pipeline.wait(subs, backends.of(prof), poll_s=0.5)
    assert results == {first.run_dir: ("completed", "stand-in command completed"),
                       second.run_dir: ("completed", "stand-in command completed")}
    # b's command ran only once a's run had ended; its submission says what it waited for.
    assert float((second.run_dir / "started").read_text()) > float(run_end(first.run_dir)["time"])
    assert submissions(second.run_dir)[-1]["after"] == [subs[0].job_id]
    log = subs[1].queued.stdout.read_text()
    assert f"waiting for job(s) {subs[0].job_id} to end" in log and "ended well: starting" in log


def test_local_chain_never_starts_the_second_job_when_the_first_fails(local_env: Path, demo_data: Path) -> None:
    prof = profile.load("local")
    first, second = unit(demo_data, local_env, "a", "failed"), unit(demo_data, local_env, "b", "completed")
    subs = pipeline.submit(chain(first, second), prof)
    pipeline.wait(subs, backends.of(prof), poll_s=0.5)
    assert run_end(first.run_dir)["status"] == "failed"
    assert not (second.run_dir / "started").exists(), "the second job must not start"
    end = run_end(second.run_dir)
    assert end["status"] == "failed" and end["source"] == "launcher"
    assert end["reason"] == f"not started: stage 1 (run {first.run_dir}) ended failed: stand-in command failed"
    assert rundir.read_json(second.run_dir / "run.json")["status"] == "failed"


def test_a_waiting_local_job_can_be_cancelled(local_env: Path, demo_data: Path) -> None:
    prof = profile.load("local")
    first, second = unit(demo_data, local_env, "a", "hold"), unit(demo_data, local_env, "b", "completed")
    subs = pipeline.submit(chain(first, second), prof)
    wait_for("the first job to start", lambda: (first.run_dir / "started").exists())
    wait_for("the second job to wait", lambda: "waiting for job(s)" in subs[1].queued.stdout.read_text())
    info = status.describe(second.run_dir)
    assert info["health"]["verdict"] == "waiting" and f"waiting for stage 1 (job {subs[0].job_id})" in \
        info["health"]["message"]
    assert status.cancel(second.run_dir) == [subs[1].job_id]
    wait_for("the second job to end", lambda: not backends.of(prof).running([subs[1].queued]))
    end = run_end(second.run_dir)
    assert end["status"] == "preempted" and "cancelled while waiting for job(s)" in end["reason"]
    (first.run_dir / "go").touch()
    pipeline.wait(subs, backends.of(prof), poll_s=0.5)
    assert run_end(first.run_dir)["status"] == "completed" and not (second.run_dir / "started").exists()


def test_status_and_list_show_a_chain_waiting_and_a_failed_stage_ends_every_later_one(
        local_env: Path, demo_data: Path) -> None:
    prof = profile.load("local")
    a, b, c = (unit(demo_data, local_env, "a", "holdfail"), unit(demo_data, local_env, "b", "completed"),
               unit(demo_data, local_env, "c", "completed"))
    subs = pipeline.submit(chain(a, b, c), prof)
    ja, jb, jc = (s.job_id for s in subs)
    # Each later stage depends on every stage before it (the first that failed is the one it names).
    assert submissions(c.run_dir)[-1]["after"] == [ja, jb]
    wait_for("the first stage to start", lambda: (a.run_dir / "started").exists())
    for s in subs[1:]:
        wait_for("a later stage to wait", lambda s=s: "waiting for job(s)" in s.queued.stdout.read_text())
    second, third = status.describe(b.run_dir), status.describe(c.run_dir)
    assert (second["health"]["verdict"], third["health"]["verdict"]) == ("waiting", "waiting")
    assert second["health"]["message"].startswith(f"waiting for stage 1 (job {ja})")
    assert third["health"]["message"].startswith(f"waiting for stage 2 (job {jb})")  # the one next in line
    assert [(m["stage"], m["job_id"], m["this"]) for m in second["chain"]["members"]] == \
        [(1, ja, False), (2, jb, True), (3, jc, False)]
    text = status.format_status(second)
    assert "stage:      2 of 3" in text and f"stage 1:  job {ja}, " in text
    assert f"stage 3:  job {jc}, not started: {c.run_dir}" in text
    assert "verdict:    waiting: waiting for stage 1" in text
    rows = {r["experiment"]: r for r in (listing.row(i) for i in listing.describe_all(local_env))}
    assert rows["b"]["verdict"] == rows["c"]["verdict"] == "waiting" and rows["a"]["verdict"] != "waiting"

    (a.run_dir / "go").touch()
    pipeline.wait(subs, backends.of(prof), poll_s=0.5)
    assert run_end(a.run_dir)["status"] == "failed"
    for later in (b, c):
        assert not (later.run_dir / "started").exists(), f"{later.experiment} must not start"
        end = run_end(later.run_dir)
        assert (end["status"], end["source"]) == ("failed", "launcher")
        assert end["reason"] == f"not started: stage 1 (run {a.run_dir}) ended failed: stand-in command failed"
        assert status.describe(later.run_dir)["health"]["verdict"] == "ended"


def test_a_chain_submitted_again_builds_on_a_first_stage_that_had_nothing_left_to_do(
        local_env: Path, demo_data: Path) -> None:
    # The trainer records nothing when its run already completed (exit 0): the stage after it starts.
    prof = profile.load("local")
    first, second = unit(demo_data, local_env, "a", "noop"), unit(demo_data, local_env, "b", "completed")
    rundir.record_end(first.run_dir, "a", "earlier", "completed", "num_epochs=1 reached")
    subs = pipeline.submit(chain(first, second), prof)
    results = pipeline.wait(subs, backends.of(prof), poll_s=0.5)
    assert results[first.run_dir] == ("completed", "already completed before this submission; nothing left to do")
    assert results[second.run_dir] == ("completed", "stand-in command completed")
    assert (first.run_dir / "started").exists() and (second.run_dir / "started").exists()


# -- the same on the real single-node SLURM ------------------------------------------------------------

def slurm_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture
def slurm_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, object]:
    require_service(slurm_up(), "no single-node SLURM (sbatch + sinfo with an idle node); run scripts/slurm-up.sh")
    base = tmp_path_factory.mktemp("slurmchain")
    image = base / "edgeflow.sif"
    image.touch()
    # sbatch passes this environment to the jobs: the stand-in apptainer, this venv's python inside it.
    monkeypatch.setenv("PATH", os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent),
                                                os.environ["PATH"]]))
    monkeypatch.setenv("APPTAINER_STANDIN_LOG", str(base / "apptainer.log"))
    monkeypatch.setenv("EDGEFLOW_JOBS_INDEX", str(base / "index.jsonl"))
    monkeypatch.chdir(REPO)
    prof = profile.load("ci", [f"container.image={image}", "slurm.cpus_per_task=1"])
    return base, prof


def job_state(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
    return fields.get("JobState", "?"), fields.get("Reason", "?")


@pytest.mark.slurm
def test_slurm_chain_runs_the_second_job_after_the_first(slurm_env: tuple[Path, object], demo_data: Path) -> None:
    base, prof = slurm_env
    first, second = unit(demo_data, base, "a", "hold"), unit(demo_data, base, "b", "completed")
    subs = pipeline.submit(chain(first, second), prof)  # type: ignore[arg-type]
    script = (second.run_dir / "jobs" / f"{subs[1].job_id}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{subs[0].job_id}" in script and "#SBATCH --kill-on-invalid-dep=yes" in script
    wait_for("the first job to start", lambda: (first.run_dir / "started").exists())
    # Pending on its dependency, before its job started: waiting, not dead.
    info = status.describe(second.run_dir)
    assert info["health"]["verdict"] == "waiting", info["health"]
    assert info["health"]["message"].startswith(f"waiting for stage 1 (job {subs[0].job_id})")
    (first.run_dir / "go").touch()
    results = pipeline.wait(subs, backends.of(prof), poll_s=1)  # type: ignore[arg-type]
    assert [results[u.run_dir][0] for u in (first, second)] == ["completed", "completed"], results
    assert float((second.run_dir / "started").read_text()) > float(run_end(first.run_dir)["time"])


@pytest.mark.slurm
def test_slurm_chain_never_starts_the_second_job_when_the_first_fails(slurm_env: tuple[Path, object],
                                                                     demo_data: Path) -> None:
    base, prof = slurm_env
    first, second = unit(demo_data, base, "a", "failed"), unit(demo_data, base, "b", "completed")
    subs = pipeline.submit(chain(first, second), prof)  # type: ignore[arg-type]
    pipeline.wait(subs, backends.of(prof), poll_s=1)  # type: ignore[arg-type]
    assert run_end(first.run_dir)["status"] == "failed"
    assert job_state(subs[0].job_id)[0] == "FAILED"
    # SLURM removed the dependent job: it never ran, and `jobs status` says why.
    assert job_state(subs[1].job_id) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not (second.run_dir / "started").exists() and not subs[1].queued.stdout.exists()
    info = status.describe(second.run_dir)
    assert info["health"]["verdict"] == "ended"
    assert info["health"]["message"].startswith(f"not started: stage 1 (run {first.run_dir}) ended failed")
