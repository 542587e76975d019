"""`jobs fidelity`: the pool chosen on a login node without TensorFlow, the trainings as one array on the
real single-node SLURM, the report as a job after it; a rerun queues no training."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_service

from edgeflow.commands import rank as rank_cmd
from edgeflow.nas import fidelity
from edgeflow.nas import rank as rank_mod
from edgeflow.rundir import read_events
from tests.helpers import REPO
from tests.nas_helpers import make_run
from tests.test_fidelity import add_pool_evaluation
from tests.test_no_tensorflow import blocked_env  # noqa: F401  (the fixture)

CANDIDATES = "6"


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    run = make_run(tmp_path_factory.mktemp("fidelity_jobs"), demo_data)
    add_pool_evaluation(run)
    return run


def jobs(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def fidelity_args(run: Path, image: Path) -> list[str]:
    return ["fidelity", "--cluster", "ci", "--run", str(run), "--k", "4", "--candidates", CANDIDATES,
            "--set", "train.num_epochs=1", "--profile-set", f"container.image={image}",
            "--profile-set", "slurm.cpus_per_task=1"]


def test_pool_is_chosen_on_a_login_node_and_unranked_candidates_are_refused(
        demo_data: Path, tmp_path: Path, blocked_env: tuple[dict[str, str], Path]) -> None:  # noqa: F811
    env, log = blocked_env
    supernet = make_run(tmp_path, demo_data)  # its own: nothing ranked yet, whatever ran before
    add_pool_evaluation(supernet)
    image = tmp_path / "edgeflow.sif"
    image.touch()
    refused = jobs(*fidelity_args(supernet, image), "--dry-run", env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"python -m jobs rank --cluster ci --run {supernet} --sample {CANDIDATES} --seed 0" in refused.stderr
    assert not (supernet / "fidelity").exists()
    # --rank-shards: that ranking is queued first (here a dry run: its array, and what comes after it)
    first = jobs(*fidelity_args(supernet, image), "--rank-shards", "2", "--dry-run", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "#SBATCH --array=0-1" in first.stdout and f"--sample {CANDIDATES}" in first.stdout.replace("'", "")
    assert "then, once it has ranked them: the pool is chosen" in first.stdout
    assert "train.arch=" not in first.stdout
    assert not (supernet / "fidelity").exists() and not (supernet / "rank").exists()
    # ranked (here, with TensorFlow), the dry run shows the array and the report job after it
    assert rank_cmd.main(["--run", str(supernet), "--sample", CANDIDATES, "--seed", "0"]) == 0
    dry = jobs(*fidelity_args(supernet, image), "--dry-run", "--array-parallelism", "2", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert not log.exists() or not log.read_text().strip(), log.read_text()  # nothing tried TensorFlow
    assert "#SBATCH --array=0-3%2" in dry.stdout and "# stage 2 of 2: fidelity-report-best-000001" in dry.stdout
    for code, _ in fidelity.forced(32, 48):
        assert f"sa-{code}: " in dry.stdout and f"train.arch={code}" in dry.stdout
    assert "--no-train" in dry.stdout and "python -m edgeflow fidelity" in dry.stdout.replace("'", "")
    assert not (supernet / "fidelity").exists()  # a dry run writes nothing


@pytest.mark.slurm
@pytest.mark.slow
def test_fidelity_array_on_slurm_then_the_report_and_a_rerun_queues_no_training(supernet: Path,
                                                                                 tmp_path: Path) -> None:
    from tests.test_jobs_slurm import slurm_up

    require_service(slurm_up(), "no single-node SLURM (sbatch + sinfo with an idle node); run scripts/slurm-up.sh")
    image = tmp_path / "edgeflow.sif"
    image.touch()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", APPTAINER_STANDIN_LOG=str(tmp_path / "apptainer.log"),
               EDGEFLOW_JOBS_INDEX=str(tmp_path / "index.jsonl"))
    env["PATH"] = os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    # The candidates are not ranked yet: --rank-shards queues their ranking first and waits for it.
    out = jobs(*fidelity_args(supernet, image), "--array-parallelism", "2", "--rank-shards", "1", "--wait", env=env,
               timeout=1500)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    ranking = re.findall(r"^submitted job (\S+): experiment \S+/rank/best-000001$", out.stdout, flags=re.M)
    assert len(ranking) == 1 and out.stdout.index(ranking[0]) < out.stdout.index("submitted 5 jobs"), out.stdout
    ranked = rank_mod.read_ranking(supernet / "rank" / "best-000001" / "results.csv")
    assert set(rank_mod.sample_codes(int(CANDIDATES), 0)) <= set(ranked)
    assert "submitted 5 jobs" in out.stdout  # an array of 4, then the report job
    ids = [(job_id, name) for job_id, name in re.findall(r"^submitted job (\S+): experiment (\S+)", out.stdout,
                                                         flags=re.M) if "/rank/" not in name]
    array = {job_id.split("_")[0] for job_id, name in ids if name.startswith("sa-")}
    assert len(ids) == 5 and len(array) == 1, out.stdout
    folder = supernet / "fidelity" / "best-000001"
    report = json.loads((folder / "report.json").read_text())
    assert report["k"] == 4 and report["line"] in out.stdout and (folder / "report.png").is_file()
    runs = sorted(p.name for p in (folder / "runs").iterdir() if p.name.startswith("sa-"))
    assert runs == sorted(f"sa-{m['code']}" for m in report["subnets"])
    for name in runs:
        info = json.loads((folder / "runs" / name / "run.json").read_text())
        assert info["status"] == "completed" and "_" in info["job_ids"][0]  # an array element
    # the report job ran after the array, in the image, with --no-train
    sub = json.loads((folder / "jobs" / "submissions.json").read_text())
    record = sub["submissions"][-1]
    assert record["kind"] == "fidelity" and len(record["after"]) == 4
    assert len((tmp_path / "apptainer.log").read_text().splitlines()) == 6  # the ranking, 4 trainings, the report
    assert "--no-train" in (tmp_path / "apptainer.log").read_text().splitlines()[-1]
    events = list(read_events(folder / "events.jsonl"))
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "completed"
    status = jobs("status", str(folder), "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed", status.stdout

    again = jobs(*fidelity_args(supernet, image), "--dry-run", env=env)
    assert again.returncode == 0, again.stderr
    assert "4 finished, 0 to train" in again.stdout and "--array" not in again.stdout
    assert "train.arch=" not in again.stdout and "--no-train" in again.stdout
