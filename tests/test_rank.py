"""`edgeflow rank`: the evaluation protocol per arch, a results file shared safely, bad input, SLURM arrays."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import require_service

from edgeflow.commands import eval as eval_cmd
from edgeflow.commands import rank as rank_cmd
from edgeflow.nas import rank, results
from edgeflow.rundir import read_events
from edgeflow.space.cost import arch_info
from tests.helpers import REPO
from tests.nas_helpers import ARCHS, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    return make_run(tmp_path_factory.mktemp("rank"), demo_data)


def rows_of(path: Path) -> dict[str, dict]:
    return {r["code"]: r for r in results.read_rows(path)}


@pytest.mark.slow
def test_rank_is_deterministic_equals_eval_and_reports_progress(run_dir: Path, capsys) -> None:
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *ARCHS[:3], "--name", "one"]) == 0
    one = rows_of(run_dir / "rank/one/results.csv")
    assert sorted(one) == sorted(ARCHS[:3])
    capsys.readouterr()
    assert eval_cmd.main(["--run", str(run_dir), "--archs", *ARCHS[:3], "--json"]) == 0
    by_eval = json.loads(capsys.readouterr().out)["arch_epe"]
    for code in ARCHS[:3]:
        a = one[code]
        assert a["epe_mean"] == by_eval[code]  # exactly the protocol's number
        assert a["eval_batches"] == 2 and a["epe_median"] <= a["epe_p90"]
        info = arch_info(code, 32, 48)
        assert (a["params"], a["flops"]) == (info["params_active"], info["flops"]) and a["latency_ms"] > 0
    summary = json.loads((run_dir / "rank/one/results.json").read_text())
    assert [r["epe_mean"] for r in summary["results"]] == sorted(r["epe_mean"] for r in one.values())
    assert summary["checkpoint"]["prefix"] == "best-000001" and summary["protocol"]["bn_mode"] == "recalibrate"

    # the folder is a run directory for the monitor: progress and the end, exported as metrics
    from monitor.metrics import run_families
    from monitor.runstate import RunState

    state = RunState()
    for event in read_events(run_dir / "rank/one/events.jsonl"):
        state.apply(event)
    assert (state.status, state.value("search_evaluations"), state.value("search_target")) == ("completed", 3, 3)
    assert state.value("search_best_epe") == min(r["epe_mean"] for r in one.values())
    exported = {f.name: f.samples for f in run_families([state])}
    assert exported["edgeflow_search_evaluations"][0].value == 3
    assert exported["edgeflow_search_front_size"][0].value >= 1


@pytest.mark.slow
def test_rerun_skips_done_archs_and_sigterm_stops_after_the_current_arch(run_dir: Path, capsys) -> None:
    codes = ["111111111", ARCHS[0], ARCHS[1], "001000000"]
    folder = run_dir / "rank/stop"
    csv_path = folder / "results.csv"

    def stop_after_first_result() -> None:
        while not (csv_path.exists() and len(results.read_rows(csv_path)) >= 1):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_after_first_result, daemon=True)
    killer.start()
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *codes, "--name", "stop"]) == 75
    killer.join(5)
    first = rows_of(csv_path)
    assert 1 <= len(first) < len(codes)
    ends = [e for e in read_events(folder / "events.jsonl") if e["event"] == "run_end"]
    assert ends[-1]["status"] == "preempted"
    capsys.readouterr()
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *codes, "--name", "stop"]) == 0
    out = capsys.readouterr().out
    assert f"{len(first)} already done" in out and f"{len(codes) - len(first)} to evaluate" in out
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(codes)  # header + one line per arch: nothing evaluated twice
    after = rows_of(csv_path)
    assert all(after[c] == first[c] for c in first)
    # ranked twice (another evaluator, another folder): the same numbers
    one = rows_of(run_dir / "rank/one/results.csv")
    for code in ARCHS[:2]:
        a, b = after[code], one[code]
        assert (a["epe_mean"], a["epe_median"], a["epe_p90"]) == (b["epe_mean"], b["epe_median"], b["epe_p90"])


PER_WRITER = 1000  # enough that, unlocked, a line's half-visible copy is caught now and then (CI saw it)


def _append_many(path: str, worker: int) -> None:
    for i in range(PER_WRITER):
        code = f"{worker % 3}" + "".join(str(i // 3**k % 3) for k in range(7)) + "0"  # distinct per line
        row = {c: 0 for c in results.COLUMNS}
        row.update(code=code, epe_mean=float(i), epe_median=1.0, epe_p90=2.0, latency_ms=0.5, recal_seconds=0.1,
                   eval_seconds=0.1, time=1.0, checkpoint="best-000001", checkpoint_digest="d" * 16,
                   protocol="p" * 12, writer=f"w{worker}")
        results.append(Path(path), row)


def test_concurrent_writers_share_one_file_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    key = results.Key("best-000001", "d" * 16, "p" * 12)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_text().splitlines()
    assert "" not in lines  # no writer mistook another's line in flight for a killed writer's fragment
    assert lines[0].startswith("code,") and len(lines) == 1 + 3 * PER_WRITER
    assert len(results.read_rows(path, key)) == 3 * PER_WRITER  # every line intact, one header
    # a writer killed mid-line: the fragment is skipped, and the next append ends it first
    with open(path, "a") as fh:
        fh.write("222222222,1.5,1.5,1.5,2,1,1,0.1")
    assert len(results.read_rows(path, key)) == 3 * PER_WRITER
    _append_many(str(path), 2)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 3 * PER_WRITER + 1 + PER_WRITER
    assert any(line.startswith("222222222,1.5,") for line in lines)
    rows = results.read_rows(path, key)
    assert len(rows) == 3 * PER_WRITER and "222222222" not in {r["code"] for r in rows}
    # a line changed after it was written fails its CRC
    tampered = lines[1].replace(",1.0,", ",1.25,", 1)
    assert tampered != lines[1]
    assert results.parse_line(next(csv.reader([tampered]))) is None
    assert results.parse_line(next(csv.reader([lines[1]]))) is not None
    # another checkpoint's rows are never returned for this key
    assert results.read_rows(path, results.Key("best-000002", "e" * 16, "p" * 12)) == []


def test_selection_sample_all_files_and_shards(tmp_path: Path) -> None:
    a = rank.select_codes(rank.Selection(sample=100, seed=3))
    assert a == rank.select_codes(rank.Selection(sample=100, seed=3)) and len(set(a)) == 100
    assert a != rank.select_codes(rank.Selection(sample=100, seed=4))
    every = rank.select_codes(rank.Selection(all=True))
    assert len(every) == 3 ** 9 == len(set(every))
    shards = [rank.shard_of(a, k, 7) for k in range(7)]
    assert sorted(c for s in shards for c in s) == sorted(a)
    f = tmp_path / "archs.txt"
    f.write_text("# pool\n000021222\n0 0 0 0 2 1 2 2 2  # the same again\n\n111111111\n")
    assert rank.select_codes(rank.Selection(archs_file=str(f))) == ["000021222", "111111111"]
    f.write_text("000021222\n00002122x\n")
    with pytest.raises(rank.RankError, match="line 2"):
        rank.select_codes(rank.Selection(archs_file=str(f)))
    for bad in ("1/1", "x", "2/-1"):
        with pytest.raises(rank.RankError, match="--shard"):
            rank.parse_shard(bad)


@pytest.fixture
def scratch_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run without rank results (its config points at the same data)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("rank", "search"))
    return copy


@pytest.mark.parametrize("case, code, message", [
    ("malformed code", 2, "has 8 digits"),
    ("unknown option", 2, "outside 0..2"),
    ("no latest checkpoint", 2, "no 'latest' checkpoint"),
    ("other signature", 2, "checkpoint of another supernet"),
    ("empty eval split", 4, "val"),
    ("folder of another checkpoint", 2, "never mixed"),
])
def test_bad_input_is_one_clear_error_and_writes_nothing(scratch_run: Path, tmp_path: Path, capsys,
                                                         case: str, code: int, message: str) -> None:
    args = ["--run", str(scratch_run), "--archs", "000021222", "--name", "x"]
    if case == "malformed code":
        args[3] = "00002122"
    elif case == "unknown option":
        args[3] = "000021223"
    elif case == "no latest checkpoint":
        args += ["--checkpoint", "latest"]
    elif case == "other signature":
        info = json.loads((scratch_run / "run.json").read_text())
        info["signature"]["model"] = "another-supernet-v9"
        (scratch_run / "run.json").write_text(json.dumps(info))
    elif case == "empty eval split":
        (tmp_path / "empty_val").mkdir()
        args += ["--set", f"data.val_dir={tmp_path / 'empty_val'}"]
    elif case == "folder of another checkpoint":
        folder = scratch_run / "rank" / "x"
        folder.mkdir(parents=True)
        (folder / "key.json").write_text(json.dumps({"checkpoint": {"prefix": "best-000009", "digest": "0" * 16},
                                                     "protocol_id": "1" * 12}))
    before = sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*"))
    assert rank_cmd.main(args) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*")) == before


def test_weights_of_another_model_are_refused_before_writing(scratch_run: Path, capsys) -> None:
    import tensorflow as tf

    from edgeflow.train.checkpoint import CheckpointStore

    other = tf.Module()
    other.kernel = tf.Variable(tf.zeros([3, 3, 6, 32]))
    CheckpointStore(scratch_run / "checkpoints").save("best", tf.train.Checkpoint(model=other).write, {"epoch": 1})
    assert rank_cmd.main(["--run", str(scratch_run), "--archs", "000021222"]) == 2
    assert "does not hold this supernet's weights" in capsys.readouterr().err
    assert not (scratch_run / "rank").exists()


def test_compare_gives_kendall_and_spearman(run_dir: Path, tmp_path: Path, capsys) -> None:
    supernet = rank.read_ranking(run_dir / "rank/one/results.csv")
    standalone = tmp_path / "standalone.csv"
    # stand-alone EPEs in the same order as the supernet's: perfect agreement
    standalone.write_text("arch,standalone_epe\n" + "".join(f"{c},{v * 2 + 1}\n" for c, v in supernet.items()))
    assert rank_cmd.main(["--compare", str(run_dir / "rank/one/results.csv"), str(standalone), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["archs"] == 3 and same["kendall_tau"] == pytest.approx(1.0) and same["spearman_rho"] == 1.0
    reverse = {c: -v for c, v in supernet.items()}
    assert rank.compare(supernet, reverse)["kendall_tau"] == pytest.approx(-1.0)
    with pytest.raises(rank.RankError, match="share 0"):
        rank.compare({"000000000": 1.0}, {"111111111": 1.0})


# -- the array path on the real single-node SLURM -----------------------------------------------------

@pytest.mark.slurm
@pytest.mark.slow
def test_rank_array_on_slurm_shares_the_results_file(run_dir: Path, tmp_path: Path) -> None:
    from tests.test_jobs_slurm import slurm_up

    require_service(slurm_up(), "no single-node SLURM (sbatch + sinfo with an idle node); run scripts/slurm-up.sh")
    image = tmp_path / "edgeflow.sif"
    image.touch()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", APPTAINER_STANDIN_LOG=str(tmp_path / "apptainer.log"),
               EDGEFLOW_JOBS_INDEX=str(tmp_path / "index.jsonl"))
    env["PATH"] = os.pathsep.join([str(REPO / "tests" / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    codes = ["000000000", "111111111", "222222222", "120120120"]
    out = subprocess.run([sys.executable, "-m", "jobs", "rank", "--cluster", "ci", "--run", str(run_dir),
                          "--profile-set", f"container.image={image}", "--profile-set", "slurm.cpus_per_task=1",
                          "--archs", *codes, "--shards", "2", "--name", "array", "--wait"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    folder = run_dir / "rank/array"
    rows = results.read_rows(folder / "results.csv")
    assert sorted(r["code"] for r in rows) == sorted(codes)
    assert len((folder / "results.csv").read_text().splitlines()) == 1 + len(codes)
    writers = {r["writer"] for r in rows}
    assert len(writers) == 2 and all("_" in w for w in writers)  # two array elements, JOB_TASK ids
    # the same numbers as ranking in-process (the first test's folder), whatever element wrote them
    one = rows_of(run_dir / "rank/one/results.csv")
    assert all(r["epe_mean"] == one[r["code"]]["epe_mean"] for r in rows if r["code"] in one)
    events = list(read_events(folder / "events.jsonl"))
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "completed"
    assert {e["element"] for e in events if e["event"] == "search"} == writers
    assert len((tmp_path / "apptainer.log").read_text().splitlines()) == 2  # each ran inside the "image"


def test_jobs_rank_refuses_bad_input_on_the_login_node_and_queues_nothing(scratch_run: Path) -> None:
    from tests.helpers import run_cli

    before = sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*"))
    bad = run_cli("jobs", "rank", "--cluster", "ci", "--run", str(scratch_run), "--archs", "00002122x", timeout=120)
    assert bad.returncode == 2 and "--archs" in bad.stderr, bad.stderr
    many = run_cli("jobs", "rank", "--cluster", "ci", "--run", str(scratch_run), "--archs", "000021222",
                   "111111111", "--shards", "3", timeout=120)
    assert many.returncode == 2 and "more shards than" in many.stderr, many.stderr
    assert sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*")) == before


def test_jobs_rank_and_search_dry_runs_go_through_the_submission_pipeline(scratch_run: Path) -> None:
    from tests.helpers import run_cli

    before = sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*"))
    # --json: an option of `edgeflow rank` the launcher has no code for, passed to the job as given.
    out = run_cli("jobs", "rank", "--cluster", "ci", "--run", str(scratch_run), "--archs", "000021222",
                  "111111111", "--shards", "2", "--name", "dry", "--json", "--dry-run", timeout=300)
    assert out.returncode == 0, out.stderr
    folder = scratch_run / "rank" / "dry"
    assert "== preflight: tiny/rank/dry" in out.stdout and "preflight: OK" in out.stdout
    assert "#SBATCH --array=0-1" in out.stdout and f"#SBATCH --comment={folder}" in out.stdout
    for k in range(2):
        assert f"[{k}] tiny/rank/dry: apptainer exec" in out.stdout
        assert f"--archs 000021222 111111111 --json --shard {k}/2" in out.stdout
    search = run_cli("jobs", "search", "--cluster", "local", "--run", str(scratch_run), "--evaluations", "20",
                     "--population", "4", "--dry-run", timeout=300)
    assert search.returncode == 0, search.stderr
    assert "local executor" in search.stdout and "-m edgeflow search --run" in search.stdout
    assert "--evaluations 20 --population 4" in search.stdout
    # A job of several tasks would run the same command on every task: refused before anything else.
    tasks = run_cli("jobs", "rank", "--cluster", "ci", "--run", str(scratch_run), "--archs", "000021222",
                    "--profile-set", "slurm.tasks_per_node=2", "--dry-run", timeout=300)
    assert tasks.returncode == 2 and "a rank job runs one process" in tasks.stderr, tasks.stderr
    assert sorted(str(p.relative_to(scratch_run)) for p in scratch_run.rglob("*")) == before
