"""The launcher without a queue: dry-run batch scripts, sweep naming, refusals, the node's own gate.

These run `python -m jobs` in a subprocess (the real CLI, real preflight on real demo data); none
needs SLURM: a dry run builds the batch script with submitit's own function and queues nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeflow import config as efconfig
from edgeflow import rundir
from edgeflow.config import ConfigError
from jobs import cli, profile, sweep
from jobs.launch import NodeSpec, trainer_command
from jobs.supervise import JobFailed, NodeJob
from tests.helpers import REPO

DEMO = REPO / "configs" / "demo.yaml"


def data_overrides(data: Path, out: Path) -> list[str]:
    return [f"data.train_dir={data / 'train'}", f"data.val_dir={data / 'val'}", f"runtime.output_root={out}"]


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not tmp_path: its name contains "test_...", and a val_dir named like a test split is refused.
    return tmp_path_factory.mktemp("jobs")


def run_jobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobs", *args], cwd=REPO, capture_output=True, text=True,
                          env=full_env, timeout=120)


def set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_help_lists_the_commands() -> None:
    out = run_jobs("--help")
    assert out.returncode == 0
    for word in ("submit", "status", "cancel"):
        assert word in out.stdout


def test_dry_run_prints_the_batch_script_and_queues_nothing(demo_data: Path, tmp_path: Path) -> None:
    out_root = tmp_path / "out"
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "ci", "--dry-run",
                   *set_args(data_overrides(demo_data, out_root)))
    assert out.returncode == 0, out.stderr
    run = out_root / "demo"
    text = out.stdout
    assert "preflight: OK: 24 training and 8 validation samples" in text
    for line in ("#SBATCH --partition=debug", "#SBATCH --time=10", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --signal=USR2@30", "#SBATCH --requeue", "#SBATCH --mem=1GB",
                 f"#SBATCH --output={run}/jobs/%j_0_log.out", f"#SBATCH --comment={run}",
                 "#SBATCH --job-name=demo", 'echo "edgeflow job on $(hostname)"',
                 "-u -m submitit.core._submit " + str(run / "jobs")):
        assert line in text, line
    assert "--array" not in text
    trainer = (f"apptainer exec --bind /tmp --env PYTHONSAFEPATH=1 /tmp/edgeflow-ci.sif python -m edgeflow train "
               f"--config {run}/jobs/submitted_config.yaml")
    assert trainer in text
    assert not out_root.exists(), "a dry run must not write anything"


def test_dry_run_of_a_gpu_profile(demo_data: Path, tmp_path: Path) -> None:
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "genius", "--dry-run",
                   "--profile-set", "slurm.additional={mail_type: END}",
                   *set_args(data_overrides(demo_data, tmp_path / "out")))
    assert out.returncode == 0, out.stderr
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --account=lp_my_project", "#SBATCH --mem=40GB",
                 "#SBATCH --time=1440", "#SBATCH --signal=USR2@300", "#SBATCH --partition=gpu_p100",
                 "#SBATCH --mail-type=END", "module purge"):
        assert line in out.stdout, line
    # --nv, the profile's binds, then the run's own folders that no bind covers (they are under /tmp).
    assert "apptainer exec --nv --bind /scratch --bind /data --bind " in out.stdout
    assert f"--bind {tmp_path / 'out'}" in out.stdout and f"--bind {demo_data / 'train'}" in out.stdout


def test_dry_run_of_a_two_node_profile_and_the_setups_it_refuses(demo_data: Path, tmp_path: Path) -> None:
    nodes = ["--profile-set", "slurm.nodes=2", "--profile-set", "slurm.gpus_per_node=4"]
    common = ["submit", "--config", str(DEMO), "--cluster", "genius", "--dry-run", *nodes,
              *set_args(data_overrides(demo_data, tmp_path / "out"))]
    out = run_jobs(*common, *set_args(["train.distribute=multi_worker", "train.distribute_mode=data_parallel"]))
    assert out.returncode == 0, out.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4"):
        assert line in out.stdout, line
    assert "apptainer exec --nv" in out.stdout  # every task's trainer runs in the image
    # 2 trainers that would each train alone into one run directory
    alone = run_jobs(*common)
    assert alone.returncode == rundir.EXIT_BAD_INPUT
    assert "starts 2 trainers per job (slurm.nodes x slurm.tasks_per_node)" in alone.stderr
    assert "set train.distribute: multi_worker" in alone.stderr
    # 8 replicas (2 nodes x 4 GPUs) cannot be 3 archs each
    eight = run_jobs(*common, *set_args(["train.distribute=multi_worker"]))
    assert eight.returncode == rundir.EXIT_BAD_INPUT
    assert "(2 node(s) x 1 task(s), 4 GPU(s) per node)" in eight.stderr
    assert "arch_parallel needs 3 replicas or a multiple of 3" in eight.stderr and "got 8" in eight.stderr
    # GPUs that the tasks of a node cannot share evenly
    odd = run_jobs(*common, "--profile-set", "slurm.tasks_per_node=3",
                   *set_args(["train.distribute=multi_worker"]))
    assert odd.returncode == rundir.EXIT_BAD_INPUT
    assert "slurm.gpus_per_node: 4 GPUs cannot be split evenly between 3 tasks per node" in odd.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_of_a_seed_sweep_is_one_array(demo_data: Path, tmp_path: Path) -> None:
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "ci", "--dry-run", "--seeds", "0", "1", "2",
                   "--array-parallelism", "2", *set_args(data_overrides(demo_data, tmp_path / "out")))
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --array=0-2%2" in out.stdout
    assert "%A_%a_0_log.out" in out.stdout
    for seed in (0, 1, 2):
        assert f"demo_s{seed}: apptainer exec" in out.stdout
        assert f"/demo_s{seed}/jobs/submitted_config.yaml" in out.stdout
    assert out.stdout.count("== preflight: demo_s") == 3


def test_local_profile_dry_run_runs_the_trainer_directly(demo_data: Path, tmp_path: Path) -> None:
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "local", "--dry-run",
                   *set_args(data_overrides(demo_data, tmp_path / "out")))
    assert out.returncode == 0, out.stderr
    assert "local executor" in out.stdout and "apptainer" not in out.stdout
    assert f"{sys.executable} -m edgeflow train --config" in out.stdout


def test_empty_val_folder_is_refused_and_nothing_is_written(demo_data: Path, workdir: Path) -> None:
    tmp_path = workdir
    data = tmp_path / "data"
    shutil.copytree(demo_data / "train", data / "train")
    (data / "val").mkdir()
    out_root = tmp_path / "out"
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "local",
                   *set_args(data_overrides(data, out_root)))
    assert out.returncode == cli.EXIT_REFUSED
    assert "preflight: FAILED" in out.stdout
    assert "nothing was queued" in out.stderr and str(data / "val") in out.stdout + out.stderr
    assert not out_root.exists()


def test_bad_profile_and_bad_config_are_bad_input(demo_data: Path, tmp_path: Path) -> None:
    args = ["submit", "--config", str(DEMO), "--dry-run", *set_args(data_overrides(demo_data, tmp_path))]
    out = run_jobs(*args, "--cluster", "ci", "--profile-set", "slurm.partion=gpu")
    assert out.returncode == rundir.EXIT_BAD_INPUT
    assert "slurm.partion: unknown key (did you mean slurm.partition?)" in out.stderr
    out = run_jobs(*args, "--cluster", "ci", "--set", "train.bach_size=2")
    assert out.returncode == rundir.EXIT_BAD_INPUT and "train.bach_size: unknown key" in out.stderr
    out = run_jobs(*args, "--cluster", "nosuchcluster")
    assert out.returncode == rundir.EXIT_BAD_INPUT and "known profiles:" in out.stderr
    out = run_jobs(*args, "--cluster", "ci", "--seeds", "1", "1")
    assert out.returncode == rundir.EXIT_BAD_INPUT and "--seeds: a seed is listed twice" in out.stderr
    out = run_jobs(*args, "--cluster", "ci", "--array-parallelism", "0")
    assert out.returncode == rundir.EXIT_BAD_INPUT and "--array-parallelism" in out.stderr


def test_sweep_names_seeds_and_absolute_paths(demo_data: Path, tmp_path: Path) -> None:
    els = sweep.expand([str(DEMO)], [3, 7], data_overrides(demo_data, Path("rel_out")), base=tmp_path)
    assert [e.experiment for e in els] == ["demo_s3", "demo_s7"]
    assert [e.cfg.runtime.seed for e in els] == [3, 7]
    assert els[0].run_dir == tmp_path / "rel_out" / "demo_s3"
    assert Path(els[0].cfg.data.train_dir).is_absolute()
    single = sweep.expand([str(DEMO)], None, data_overrides(demo_data, tmp_path))
    assert [e.experiment for e in single] == ["demo"] and single[0].seed is None


def test_sweep_refuses_two_elements_in_one_run_directory(demo_data: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(DEMO.read_text())
    with pytest.raises(ConfigError, match="would both write to .*/demo"):
        sweep.expand([str(DEMO), str(other)], None, data_overrides(demo_data, tmp_path))
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(DEMO.read_text().replace("experiment_name: demo", "experiment_name: demo_b"))
    els = sweep.expand([str(DEMO), str(renamed)], [0], data_overrides(demo_data, tmp_path))
    assert [e.experiment for e in els] == ["demo_s0", "demo_b_s0"]


def test_node_refuses_to_start_the_trainer_when_its_preflight_fails(demo_data: Path, workdir: Path) -> None:
    """The node re-checks the data: val emptied after submission -> run_end data_error, no trainer."""
    tmp_path = workdir
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    out_root = tmp_path / "out"
    (el,) = sweep.expand([str(DEMO)], None, data_overrides(data, out_root))
    cfg_path = el.run_dir / "jobs" / "submitted_config.yaml"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text(efconfig.dump(el.cfg))
    for f in (data / "val").iterdir():
        f.unlink()
    image = tmp_path / "img.sif"
    image.touch()
    log = tmp_path / "apptainer.log"
    prof = profile.load("ci", [f"container.image={image}"])
    spec = NodeSpec(str(cfg_path), str(el.run_dir), el.experiment, prof, str(REPO))
    os.environ["APPTAINER_STANDIN_LOG"] = str(log)
    try:
        with pytest.raises(JobFailed, match="preflight on node .* failed"):
            NodeJob(spec)()
    finally:
        del os.environ["APPTAINER_STANDIN_LOG"]
    assert not log.exists(), "the trainer must not start"
    events = list(rundir.read_events(el.run_dir / "events.jsonl"))
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "data_error"
    assert "preflight on node" in events[-1]["reason"]
    run = json.loads((el.run_dir / "run.json").read_text())
    assert run["status"] == "data_error" and "preflight" in run["reason"]


def test_node_records_a_trainer_that_cannot_start(demo_data: Path, workdir: Path) -> None:
    """A missing apptainer on the node ends the run visibly, and an earlier status is kept."""
    (el,) = sweep.expand([str(DEMO)], None, data_overrides(demo_data, workdir / "out"))
    cfg_path = el.run_dir / "jobs" / "submitted_config.yaml"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text(efconfig.dump(el.cfg))
    rundir.atomic_write_json(el.run_dir / "run.json", {"experiment": "demo", "status": "completed"})
    prof = profile.load("ci", ["container.apptainer=/nonexistent/apptainer", f"container.image={cfg_path}"])
    spec = NodeSpec(str(cfg_path), str(el.run_dir), el.experiment, prof, str(REPO))
    with pytest.raises(JobFailed, match="cannot start the trainer .*/nonexistent/apptainer"):
        NodeJob(spec)()
    end = list(rundir.read_events(el.run_dir / "events.jsonl"))[-1]
    assert end["event"] == "run_end" and end["status"] == "failed" and end["source"] == "launcher"
    run = json.loads((el.run_dir / "run.json").read_text())
    assert run["status"] == "failed" and run["previous_status"] == "completed"


def test_container_command_binds_uncovered_run_folders(demo_data: Path, tmp_path: Path) -> None:
    (el,) = sweep.expand([str(DEMO)], None, data_overrides(demo_data, tmp_path / "out"))
    prof = profile.load("ci", ["container.binds=[/nonexistent_scratch]", "container.nv=true"])
    spec = NodeSpec("/x/cfg.yaml", str(el.run_dir), el.experiment, prof, str(REPO))
    cmd = trainer_command(spec, el.cfg)
    assert cmd[:3] == ["apptainer", "exec", "--nv"]
    # The image's own edgeflow runs, not a checkout in the bound working directory.
    assert cmd[cmd.index("--env") + 1] == "PYTHONSAFEPATH=1" and cmd.index("--env") < cmd.index(prof.container.image)
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"]
    assert binds[0] == "/nonexistent_scratch"
    assert str(tmp_path / "out") in binds and str(demo_data / "train") in binds
    assert cmd[-6:] == ["python", "-m", "edgeflow", "train", "--config", "/x/cfg.yaml"]
    covered = profile.load("ci", [f"container.binds=[{tmp_path}, {demo_data}]"])
    cmd = trainer_command(NodeSpec("/x/c.yaml", str(el.run_dir), el.experiment, covered, str(REPO)), el.cfg)
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"] == [str(tmp_path), str(demo_data)]



def test_every_folder_the_data_is_read_from_is_made_absolute_and_bound(demo_data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # An FT3D config (data.root), a Sintel evaluation split with its own root, an exclude list and a pack:
    # a relative path is made absolute at submission, and each is bound into the image.
    (tmp_path / "ft3d").mkdir()
    (tmp_path / "sintel").mkdir()
    (tmp_path / "bad.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    overrides = ["data.dataset=ft3d", "data.root=ft3d", "data.exclude_list=bad.txt", "data.format=packed",
                 "data.packed_dir=packs", f"runtime.output_root={tmp_path / 'out'}",
                 "eval.splits={sintel-final: {dataset: sintel, subset: final, root: sintel}}",
                 "eval.select_on=sintel-final"]
    (el,) = sweep.expand([str(DEMO)], None, overrides, base=tmp_path)
    assert el.cfg.data.root == str(tmp_path / "ft3d") and el.cfg.data.packed_dir == str(tmp_path / "packs")
    assert el.cfg.eval.splits["sintel-final"].root == str(tmp_path / "sintel")
    prof = profile.load("ci", ["container.binds=[/nonexistent_scratch]"])
    cmd = trainer_command(NodeSpec("/x/cfg.yaml", str(el.run_dir), el.experiment, prof, str(REPO)), el.cfg)
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--bind"]
    for path in ("ft3d", "sintel", "bad.txt", "packs"):
        assert str(tmp_path / path) in binds, (path, binds)

def test_status_of_unknown_targets(tmp_path: Path) -> None:
    out = run_jobs("status", str(tmp_path / "nothing"), env={"EDGEFLOW_JOBS_INDEX": str(tmp_path / "i.jsonl")})
    assert out.returncode == rundir.EXIT_BAD_INPUT and "neither a run directory" in out.stderr
    out = run_jobs("status", "987654", env={"EDGEFLOW_JOBS_INDEX": str(tmp_path / "i.jsonl")})
    assert out.returncode == rundir.EXIT_BAD_INPUT and "job 987654: no run directory records it" in out.stderr


def test_a_grid_is_one_array_with_named_elements(demo_data: Path, tmp_path: Path) -> None:
    out_root = tmp_path / "out"
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "ci", "--dry-run",
                   "--grid", "train.lr=1e-4,3e-4", "--grid", "train.batch_size=4,8", "--seeds", "0", "1",
                   *set_args(data_overrides(demo_data, out_root)))
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --array=0-7" in out.stdout  # 2 x 2 x 2 elements, one array
    for lr in ("1e-4", "3e-4"):
        for bs in (4, 8):
            for seed in (0, 1):
                name = f"demo_lr{lr}_bs{bs}_s{seed}"
                assert f"] {name}: apptainer exec" in out.stdout, name
                assert f"/{name}/jobs/submitted_config.yaml" in out.stdout
                assert f"overrides: train.lr={lr} train.batch_size={bs} runtime.seed={seed}" in out.stdout
    assert out.stdout.count("== preflight: demo_lr") == 8
    assert not out_root.exists()
    # Each element's config holds its values, parsed like --set.
    els = sweep.expand([str(DEMO)], None, data_overrides(demo_data, out_root), grid=["train.lr=3e-4,1e-3"])
    assert [(e.experiment, e.cfg.train.lr) for e in els] == [("demo_lr3e-4", 3e-4), ("demo_lr1e-3", 1e-3)]


def test_a_bad_grid_is_refused_before_anything_else(demo_data: Path, tmp_path: Path) -> None:
    common = ["submit", "--config", str(DEMO), "--dry-run", *set_args(data_overrides(demo_data, tmp_path / "o"))]
    # a typo in a key: named, before the profile (here unknown too) and before any preflight
    typo = run_jobs(*common, "--cluster", "nosuchcluster", "--grid", "train.lrr=1e-4,3e-4")
    assert typo.returncode == rundir.EXIT_BAD_INPUT
    assert "train.lrr: unknown key (did you mean train.lr?)" in typo.stderr and "preflight" not in typo.stdout
    bad_value = run_jobs(*common, "--cluster", "ci", "--grid", "train.batch_size=4,many")
    assert bad_value.returncode == rundir.EXIT_BAD_INPUT and "train.batch_size: expected an integer" in bad_value.stderr
    for grid, message in ((["train.lr"], "expected KEY=VALUE1,VALUE2"), (["train.lr=1e-4,"], "no empty values"),
                          (["train.lr=1e-4", "train.lr=3e-4"], "--grid train.lr: given twice"),
                          (["train.lr=1e-4,1e-4"], "value '1e-4' is listed twice"),
                          (["runtime.experiment_name=a,b"], "cannot be swept")):
        out = run_jobs(*common, "--cluster", "ci", *[a for g in grid for a in ("--grid", g)])
        assert out.returncode == rundir.EXIT_BAD_INPUT and message in out.stderr, (grid, out.stderr)
    # two values that would give one name
    clash = run_jobs(*common, "--cluster", "ci", "--grid", "data.packed_dir=a/b,a-b")
    assert clash.returncode == rundir.EXIT_BAD_INPUT, clash.stderr
    assert "would both be named demo_pda-b" in clash.stderr
    long = run_jobs(*common, "--cluster", "ci", "--grid", f"data.packed_dir={'x' * 130},y")
    assert long.returncode == rundir.EXIT_BAD_INPUT and "not a usable name" in long.stderr
    assert not (tmp_path / "o").exists()


def test_a_folder_edgeflow_did_not_make_is_refused_as_a_run_directory(demo_data: Path, tmp_path: Path) -> None:
    out_root = tmp_path / "out"
    mine = out_root / "demo"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("chapter 1")
    out = run_jobs("submit", "--config", str(DEMO), "--cluster", "local",
                   *set_args(data_overrides(demo_data, out_root)))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "is not an edgeflow run directory" in out.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


# -- rank and search jobs take the edgeflow commands' own options ------------------------------------------

def _subcommand(name: str) -> argparse.ArgumentParser:
    (subs,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return subs.choices[name]


def test_jobs_rank_and_search_take_every_option_of_the_edgeflow_commands() -> None:
    from edgeflow.commands import rank as rank_cmd
    from edgeflow.commands import search as search_cmd

    for name, command in (("rank", rank_cmd), ("search", search_cmd)):
        theirs = {s for a in command.build_parser()._actions for s in a.option_strings}
        ours = {s for a in _subcommand(name)._actions for s in a.option_strings}
        assert theirs <= ours, f"jobs {name} lacks {sorted(theirs - ours)}"


def test_the_rank_and_search_commands_pass_their_options_to_the_job_as_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow.commands import rank as rank_cmd
    from edgeflow.commands import search as search_cmd
    from jobs import kinds

    args = cli.build_parser().parse_args(["rank", "--cluster", "ci", "--run", "r", "--archs", "000000000", "--json",
                                          "--set", "eval.batch_size=2", "--set", "eval.pool=['000000000']",
                                          "--shards", "2"])
    # --json, an option `jobs rank` has no code for; the selection and --run/--name/--shard the launcher sets.
    assert kinds.passthrough(rank_cmd.build_parser(), args, kinds.RANK_OWN) == [
        "--set", "eval.batch_size=2", "--set", "eval.pool=['000000000']", "--json"]
    args = cli.build_parser().parse_args(["search", "--run", "r", "--evaluations", "20", "--max-flops", "1e9"])
    assert kinds.passthrough(search_cmd.build_parser(), args, kinds.SEARCH_OWN) == [
        "--objectives", "epe,flops", "--evaluations", "20", "--population", "50", "--seed", "0",
        "--max-flops", "1000000000.0"]

    # An option the command gains later reaches the job with no change to the launcher.
    original = rank_cmd.build_parser

    def grown() -> argparse.ArgumentParser:
        parser = original()
        parser.add_argument("--board", help="an option the command learnt")
        parser.add_argument("--warm-cache", action="store_true", help="a flag it learnt")
        return parser

    monkeypatch.setattr(rank_cmd, "build_parser", grown)
    args = cli.build_parser().parse_args(["rank", "--run", "r", "--all", "--board", "b1", "--warm-cache"])
    assert kinds.passthrough(rank_cmd.build_parser(), args, kinds.RANK_OWN) == ["--board", "b1", "--warm-cache"]


def test_jobs_rank_refuses_the_options_the_launcher_owns(tmp_path: Path) -> None:
    for extra, message in ((["--shard", "0/2"], "--shard: the launcher gives each array element its shard"),
                           (["--compare", "a.csv", "b.csv"], "--compare: compares two rankings on this machine")):
        out = run_jobs("rank", "--cluster", "local", "--run", str(tmp_path), "--all", *extra)
        assert out.returncode == rundir.EXIT_BAD_INPUT and message in out.stderr, out.stderr
