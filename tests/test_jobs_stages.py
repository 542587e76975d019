"""`python -m jobs submit --stages A B`: training stages as a chain of jobs, each from the best checkpoint
of the one before, with the real trainer (tiny configs on the demo data, one epoch each), locally and on
the real single-node SLURM; and what the launcher refuses before anything is queued.

Stage 1 and stage 2 have the same config but the name, so stage 1 is the fresh run stage 2 is compared
with: started from stage 1's weights, stage 2's first epoch has the lower loss.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_service

from edgeflow import rundir
from jobs import cli
from jobs.records import submissions
from tests.helpers import REPO, tiny_config
from tests.test_jobs_chain import slurm_up


@pytest.fixture
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not tmp_path: its name contains "test_...", and a val_dir named like a test split is refused.
    return tmp_path_factory.mktemp("stages")


def jobs_cli(work: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", EDGEFLOW_JOBS_INDEX=str(work / "index.jsonl"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=timeout)


def stage_config(work: Path, demo: Path, name: str, **sections: dict[str, Any]) -> Path:
    """tiny_config, whose `data` argument is the data set: here `data=` overrides data keys too."""
    path = tiny_config(work, demo, name)
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def two_stages(work: Path, data: Path) -> tuple[Path, Path]:
    return stage_config(work, data, "a"), stage_config(work, data, "b")


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in rundir.read_events(run / "events.jsonl") if e["event"] == kind]


def check_stage_two_started_from_stage_one(first: Path, second: Path) -> None:
    """What stage 2's files say about where its weights came from, and that they were trained ones."""
    submitted = yaml.safe_load((second / "jobs" / "submitted_config.yaml").read_text())["checkpoint"]
    assert (submitted["init_from"], submitted["resume_checkpoint"]) == (str(first), "best")
    (start,) = events(second, "run_start")
    best = rundir.read_json(first / "checkpoints" / "best.json")
    assert start["warm_start_from"] == str(first)
    init = start["init_from"]
    assert (init["run"], init["key"], init["checkpoint"], init["epoch"]) == \
        (str(first), "checkpoint.init_from", "best", 1)
    assert Path(init["prefix"]).name == best["prefix"] and Path(init["prefix"]).parent == first / "checkpoints"
    assert json.loads((second / "run.json").read_text())["init_from"] == init
    # Stage 1 is the fresh run of the same config: from its weights, stage 2's first epoch has the lower loss.
    fresh, warm = events(first, "epoch")[0]["train_loss"], events(second, "epoch")[0]["train_loss"]
    assert warm < fresh, (warm, fresh)


def test_a_local_chain_starts_stage_two_from_stage_ones_best_checkpoint(work: Path, demo_data: Path) -> None:
    a, b = two_stages(work, demo_data)
    out = jobs_cli(work, "submit", "--stages", str(a), str(b), "--cluster", "local", "--wait")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    first, second = work / "out" / "a", work / "out" / "b"
    ids = re.findall(r"^submitted job (\S+):", out.stdout, flags=re.M)
    assert len(ids) == 2 and f"starts after:  stage 1 (job {ids[0]}) ended well" in out.stdout
    assert "a: completed" in out.stdout and "b: completed" in out.stdout
    check_stage_two_started_from_stage_one(first, second)
    assert submissions(second)[-1]["chain"]["after"][0]["job_id"] == ids[0]
    status = jobs_cli(work, "status", str(second))
    assert status.returncode == 0, status.stderr
    assert "stage:      2 of 2" in status.stdout and f"stage 1:  job {ids[0]}, completed: {first}" in status.stdout
    assert f"init from:  the best checkpoint of {first} (epoch 1)" in status.stdout


@pytest.mark.slurm
def test_a_slurm_chain_starts_stage_two_from_stage_ones_best_checkpoint(work: Path, demo_data: Path) -> None:
    require_service(slurm_up(), "no single-node SLURM (sbatch + sinfo with an idle node); run scripts/slurm-up.sh")
    image = work / "edgeflow.sif"
    image.touch()
    # sbatch passes this environment to the jobs: the stand-in apptainer, this venv's python inside it.
    env = {"PATH": os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "APPTAINER_STANDIN_LOG": str(work / "apptainer.log")}
    a, b = two_stages(work, demo_data)
    out = jobs_cli(work, "submit", "--stages", str(a), str(b), "--cluster", "ci", "--profile-set",
                   f"container.image={image}", "--profile-set", "slurm.cpus_per_task=1", "--wait", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    first, second = work / "out" / "a", work / "out" / "b"
    ids = re.findall(r"^submitted job (\S+):", out.stdout, flags=re.M)
    assert len(ids) == 2 and all(i.isdigit() for i in ids)
    script = (second / "jobs" / f"{ids[1]}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{ids[0]}\n" in script and "#SBATCH --kill-on-invalid-dep=yes" in script
    check_stage_two_started_from_stage_one(first, second)
    assert float(events(second, "run_start")[0]["time"]) > float(events(first, "run_end")[-1]["time"])
    calls = [shlex.split(line) for line in (work / "apptainer.log").read_text().splitlines()]
    assert len(calls) == 2 and calls[1][-1] == str(second / "jobs" / "submitted_config.yaml")


def test_a_broken_later_stage_refuses_the_whole_chain_before_anything_is_queued(work: Path, demo_data: Path) -> None:
    broken = work / "broken"
    shutil.copytree(demo_data / "train", broken / "train")
    (broken / "val").mkdir()
    a = stage_config(work, demo_data, "a")
    b = stage_config(work, demo_data, "b", data={"val_dir": str(broken / "val")})
    out = jobs_cli(work, "submit", "--stages", str(a), str(b), "--cluster", "local")
    assert out.returncode == 4, out.stdout + out.stderr
    assert "== preflight: a" in out.stdout and "== preflight: b" in out.stdout
    assert "preflight: FAILED" in out.stdout and str(broken / "val") in out.stdout
    assert "nothing was queued" in out.stderr and "submitted job" not in out.stdout
    assert not (work / "out").exists() and not (work / "index.jsonl").exists()


def test_a_failed_first_stage_ends_the_second_with_the_reason(work: Path, demo_data: Path) -> None:
    a, b = two_stages(work, demo_data)
    first, second = work / "out" / "a", work / "out" / "b"
    # The first stage's run directory holds a run of another input size: its trainer refuses to start.
    first.mkdir(parents=True)
    (first / "run.json").write_text(json.dumps({"experiment": "a", "status": "completed",
                                                "signature": {"input_size": [64, 96]}}))
    out = jobs_cli(work, "submit", "--stages", str(a), str(b), "--cluster", "local", "--wait")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr
    (first_end,) = events(first, "run_end")
    assert first_end["status"] == "failed"
    (end,) = events(second, "run_end")
    assert (end["status"], end["source"]) == ("failed", "launcher")
    assert end["reason"] == f"not started: stage 1 (run {first}) ended failed: {first_end['reason']}"
    assert not events(second, "run_start")
    assert json.loads((second / "run.json").read_text())["status"] == "failed"
    assert f"b: failed (not started: stage 1 (run {first}) ended failed" in out.stdout


def test_the_dry_run_lists_every_stage_with_its_dependency_and_init_from(work: Path, demo_data: Path) -> None:
    configs = [stage_config(work, demo_data, name) for name in ("a", "b", "c")]
    out = jobs_cli(work, "submit", "--stages", *map(str, configs), "--cluster", "ci", "--dry-run",
                   "--set", "train.lr=3e-4")
    assert out.returncode == 0, out.stderr
    text, root = out.stdout, work / "out"
    stage = [text.index(f"# stage {k} of 3: {name}") for k, name in ((1, "a"), (2, "b"), (3, "c"))]
    assert stage == sorted(stage)
    one, two, three = text[stage[0]:stage[1]], text[stage[1]:stage[2]], text[stage[2]:]
    assert "#   starts first" in one and "--dependency" not in one and "init_from" not in one
    assert "#   starts after stage 1 (job <a:0>) ended well" in two
    assert "#SBATCH --dependency='afterok:<a:0>'" in two and "#SBATCH --kill-on-invalid-dep=yes" in two
    assert f"overrides: checkpoint.init_from={root / 'a'} checkpoint.resume_checkpoint=best" in two
    assert "#   starts after stage 1 (job <a:0>) and stage 2 (job <b:0>) ended well" in three
    assert "afterok:<a:0>:<b:0>" in three and f"checkpoint.init_from={root / 'b'} " in three
    assert not root.exists()


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(["submit", *args, "--cluster", "local", "--dry-run"]) == rundir.EXIT_BAD_INPUT
    return capsys.readouterr().err


def test_stage_configs_that_cannot_chain_are_refused_naming_the_key(work: Path, demo_data: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    a = stage_config(work, demo_data, "a")
    same = work / "same" / "a.yaml"  # another file, the same experiment
    same.parent.mkdir()
    shutil.copy(a, same)
    err = refused(capsys, "--stages", str(a), str(same))
    assert f"runtime.experiment_name: stages 1 ({a}) and 2 ({same}) would both write to {work / 'out' / 'a'}" in err
    b = stage_config(work, demo_data, "b")
    err = refused(capsys, "--stages", str(a), str(b), "--set", "runtime.experiment_name=x")
    assert "runtime.experiment_name: stages 1" in err and "--set applies to every stage" in err
    other = stage_config(work, demo_data, "other", checkpoint={"init_from": str(work / "elsewhere")})
    err = refused(capsys, "--stages", str(a), str(other))
    assert f"config {other}: checkpoint.init_from: '{work / 'elsewhere'}', but stage 2" in err
    assert "remove the key" in err
    latest = stage_config(work, demo_data, "latest", checkpoint={"resume_checkpoint": "latest"})
    err = refused(capsys, "--stages", str(a), str(latest))
    assert f"config {latest}: checkpoint.resume_checkpoint: 'latest'" in err
    err = refused(capsys, "--stages", str(a), str(b), "--set", "checkpoint.resume_experiment_name=zz")
    assert "--set checkpoint.resume_experiment_name=zz: checkpoint.resume_experiment_name: 'zz'" in err
    bigger = stage_config(work, demo_data, "bigger", data={"input_height": 64, "input_width": 96})
    err = refused(capsys, "--stages", str(a), str(bigger))
    assert f"{bigger}: stage 2 cannot start from stage 1's checkpoint" in err and "input_size" in err
    err = refused(capsys, "--stages", str(a), str(b), "--seeds", "0", "1")
    assert "--stages: cannot be combined with --seeds" in err
    # The stage's own init_from naming the previous stage is what the launcher sets anyway: accepted.
    named = stage_config(work, demo_data, "named", checkpoint={"init_from": str(work / "out" / "a"),
                                                              "resume_checkpoint": "best"})
    assert cli.main(["submit", "--stages", str(a), str(named), "--cluster", "local", "--dry-run"]) == 0
    assert not (work / "out").exists()
