"""`edgeflow fidelity`: choosing the pool, bad input before anything trains, the report end to end.

The end-to-end test trains real stand-alone subnets (`train.arch`) at 32x48 for three epochs on the demo
data; the supernet is the rank tests' tiny run (a freshly initialised supernet checkpoint with one pool
evaluation in its events), which is enough: the tests check the plumbing and the numbers' provenance,
never a level of agreement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeflow import config as efconfig
from edgeflow.commands import fidelity as fidelity_cmd
from edgeflow.nas import fidelity, rank, results
from edgeflow.rundir import EXIT_BAD_INPUT, read_events
from edgeflow.space.arch import BASELINE_ARCH
from edgeflow.space.cost import arch_info
from tests.helpers import PYTHON, REPO, SparseEventLog
from tests.nas_helpers import make_run

FORCED = fidelity.forced(32, 48)


def test_forced_archs_are_the_cost_extremes_and_the_baseline() -> None:
    codes = [c for c, _ in FORCED]
    assert codes[2] == BASELINE_ARCH and len(set(codes)) == 3
    flops = {c: arch_info(c, 32, 48)["flops"] for c in rank.all_codes()[::97]}
    cheapest, dearest = codes[0], codes[1]
    assert all(arch_info(cheapest, 32, 48)["flops"] <= f <= arch_info(dearest, 32, 48)["flops"]
               for f in flops.values())
    assert "cheapest" in FORCED[0][1] and "most expensive" in FORCED[1][1] and "baseline" in FORCED[2][1]


def _candidates(n: int, seed: int = 0) -> tuple[dict[str, float], dict[str, int]]:
    codes = rank.sample_codes(n, seed)
    flops = {c: int(arch_info(c, 32, 48)["flops"]) for c in codes}
    # an EPE that falls with FLOPs, with a twist, so the two rankings differ
    epe = {c: 5.0 - flops[c] / max(flops.values()) + 0.3 * ((i * 7) % 5) for i, c in enumerate(codes)}
    return epe, flops


def test_selection_is_a_latin_hypercube_over_epe_and_flops_and_deterministic() -> None:
    epe, flops = _candidates(60)
    pool = fidelity.select(epe, flops, 11, seed=3, must=FORCED, repeats=2)
    assert [m.code for m in pool[:3]] == [c for c, _ in FORCED] and all(m.repeats == 2 for m in pool[:3])
    rest = pool[3:]
    assert len(rest) == 8 and len({m.code for m in pool}) == 11 and all(m.repeats == 1 for m in rest)
    # every EPE stratum once and every FLOPs stratum once: the strata named in `why`
    epe_strata = sorted(int(m.why.split("stratum ")[1].split("/")[0]) for m in rest)
    flops_strata = sorted(int(m.why.split(" and ")[1].split("/")[0]) for m in rest)
    assert epe_strata == list(range(1, 9)) and flops_strata == list(range(1, 9))
    # the chosen archs spread over the supernet's ranking: best and worst eighth both represented
    ordered = sorted(epe, key=lambda c: (epe[c], c))
    positions = sorted(ordered.index(m.code) for m in rest)
    assert positions[0] < 60 / 8 and positions[-1] >= 60 - 60 / 8
    again = fidelity.select(epe, flops, 11, seed=3, must=FORCED, repeats=2)
    assert again == pool
    assert [m.code for m in fidelity.select(epe, flops, 11, seed=4, must=FORCED)] != [m.code for m in pool]


def test_selection_with_k_of_the_forced_archs_only_and_too_few_candidates() -> None:
    epe, flops = _candidates(10)
    assert [m.code for m in fidelity.select(epe, flops, 3, 0, FORCED)] == [c for c, _ in FORCED]
    with pytest.raises(fidelity.FidelityError, match="raise --candidates"):
        fidelity.select(dict(list(epe.items())[:2]), flops, 6, 0, FORCED)


def test_settings_are_checked() -> None:
    for settings, message in ((fidelity.Settings(k=2), "--k: must be in 3..19683"),
                              (fidelity.Settings(k=19684), "--k: must be in 3..19683"),
                              (fidelity.Settings(k=4, seeds=0), "--seeds: must be >= 1"),
                              (fidelity.Settings(k=4, candidates=0), "--candidates"),
                              (fidelity.Settings(k=4, overrides=("train.arch=000000000",)), "sets this key")):
        with pytest.raises(fidelity.FidelityError, match=message):
            fidelity.check_settings(settings)
    assert fidelity.Settings(k=4).candidate_count == 32 and fidelity.Settings(k=20).candidate_count == 160


def test_the_eval_set_check_compares_folders_not_spellings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = efconfig.Config(), efconfig.Config()
    a.data.val_dir, b.data.val_dir = "data/val", str(tmp_path / "data" / "val")
    a.eval.splits = {"s": efconfig.SplitConfig(dataset="sintel", root="sintel")}
    b.eval.splits = {"s": efconfig.SplitConfig(dataset="sintel", root=str(tmp_path / "sintel"))}
    fidelity.check_eval_set(a, b, "x.yaml")  # the same folders
    b.data.val_dir = str(tmp_path / "other")
    with pytest.raises(fidelity.FidelityError, match="x.yaml: data.val_dir: .*same eval set"):
        fidelity.check_eval_set(a, b, "x.yaml")
    b.data.val_dir, b.eval.batch_size = a.data.val_dir, 8
    with pytest.raises(fidelity.FidelityError, match="eval.batch_size"):
        fidelity.check_eval_set(a, b, "x.yaml")


# -- a supernet run --------------------------------------------------------------------------------------

def add_pool_evaluation(run_dir: Path) -> None:
    SparseEventLog(run_dir / "events.jsonl", "tiny").emit(
        "eval", epoch=1, mean_epe=3.0, arch_epe={"000000000": 3.1, "222222222": 2.9}, best_epe=3.0, best_epoch=1)


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    run = make_run(tmp_path_factory.mktemp("fidelity"), demo_data)
    add_pool_evaluation(run)
    return run


def test_bad_input_is_refused_before_anything_is_written(tmp_path: Path, demo_data: Path, capsys) -> None:
    bare = make_run(tmp_path, demo_data, name="bare")  # a checkpoint, but never evaluated
    before = sorted(p.relative_to(bare) for p in bare.rglob("*"))
    cases = [
        (["--run", str(bare), "--k", "4"], "no pool evaluation"),
        (["--run", str(tmp_path / "nothing"), "--k", "4"], "not a run directory"),
        (["--run", str(bare), "--k", "2"], "--k: must be in 3..19683"),
        (["--run", str(bare), "--k", "20000"], "--k: must be in 3..19683"),
        (["--run", str(bare), "--k", "4", "--set", "train.arch=00002122x"], "sets this key"),
    ]
    for argv, message in cases:
        assert fidelity_cmd.main(argv) == EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(bare) for p in bare.rglob("*")) == before
    # evaluated, but its best checkpoint is gone
    add_pool_evaluation(bare)
    for path in (bare / "checkpoints").iterdir():
        if path.name.startswith("best"):
            path.unlink()
    assert fidelity_cmd.main(["--run", str(bare), "--k", "4"]) == EXIT_BAD_INPUT
    assert "best" in capsys.readouterr().err
    assert not (bare / "fidelity").exists() and not (bare / "rank").exists()


def test_a_folder_edgeflow_did_not_make_is_left_alone(supernet: Path, capsys) -> None:
    folder = supernet / "fidelity" / "mine"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    assert fidelity_cmd.main(["--run", str(supernet), "--k", "4", "--name", "mine"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "not an edgeflow run directory" in err and "choose another --name" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_stand_alone_config_on_another_eval_set_is_refused(supernet: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other_val"
    other.mkdir()
    code = fidelity_cmd.main(["--run", str(supernet), "--k", "4", "--set", f"data.val_dir={other}"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "data.val_dir" in err and "same eval set" in err, err
    assert not (supernet / "fidelity" / "best-000001").exists() and not (supernet / "rank").exists()


def test_seeds_train_the_forced_archs_again_with_the_next_seeds(supernet: Path) -> None:
    plan = fidelity.prepare(supernet, fidelity.Settings(k=4, seeds=3, candidates=6, overrides=("train.num_epochs=1",)))
    epe = {c: float(i) for i, c in enumerate(plan.candidates)}
    flops = {c: int(arch_info(c, 32, 48)["flops"]) for c in epe}
    plan.pool = fidelity.select(epe, flops, 4, 0, plan.forced, repeats=3)
    runs = {t.experiment: t for t in plan.trainings()}
    forced = [c for c, _ in FORCED]
    assert sorted(runs) == sorted([f"sa-{c}{r}" for c in forced for r in ("", "-r1", "-r2")]
                                  + [f"sa-{plan.pool[3].code}"])
    seed = plan.standalone.runtime.seed
    for t in runs.values():
        cfg = efconfig.load(plan.source, list(t.overrides))
        assert cfg.train.arch == t.code and cfg.runtime.seed == seed + t.repeat and cfg.train.num_epochs == 1
        assert cfg.run_dir == plan.folder / "runs" / t.experiment and cfg.eval.bn_mode == "recalibrate"
        assert cfg.checkpoint.init_from == "" and cfg.train.distribute == "none"


# -- end to end ------------------------------------------------------------------------------------

TINY = ["--set", "train.num_epochs=3", "--candidates", "6"]


def wait_until(what: str, pred: Callable[[], bool], proc: subprocess.Popen, limit_s: float = 600) -> None:
    end = time.time() + limit_s
    while time.time() < end and proc.poll() is None:
        if pred():
            return
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what} (command exit {proc.poll()})")


@pytest.mark.slow
def test_fidelity_end_to_end_resumes_a_stopped_training_and_a_rerun_trains_nothing_new(supernet: Path, tmp_path: Path,
                                                                                         capsys) -> None:
    argv = ["--run", str(supernet), "--k", "4", *TINY]
    folder = supernet / "fidelity" / "best-000001"
    runs = folder / "runs"
    # SIGTERM while the second training runs: it is forwarded, the trainer checkpoints, exit 75
    out_file = tmp_path / "fidelity.log"
    with open(out_file, "w") as sink:  # a file, not a pipe nobody reads while the trainers write to it
        proc = subprocess.Popen([PYTHON, "-m", "edgeflow", "fidelity", *argv], cwd=REPO, stdout=sink,
                                stderr=subprocess.STDOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    second = runs / f"sa-{FORCED[1][0]}"
    wait_until("the second training's start", lambda: any(
        e["event"] == "run_start" for e in read_events(second / "events.jsonl")), proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
    log = out_file.read_text()
    assert proc.returncode == 75, log[-3000:]
    assert "stopped by SIGTERM" in log and "run the same command again" in log
    first = runs / f"sa-{FORCED[0][0]}"
    assert json.loads((first / "run.json").read_text())["status"] == "completed"
    assert not (runs / f"sa-{FORCED[2][0]}").exists()
    first_stamps = {p: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()}
    second_status = json.loads((second / "run.json").read_text())["status"]

    # run again: the finished one is reused, the stopped one resumed, the others trained
    assert fidelity_cmd.main(argv) == 0
    out = capsys.readouterr().out
    assert f"{1 if second_status == 'preempted' else 2} finished, " in out
    assert {p: p.stat().st_mtime_ns for p in (first / "checkpoints").iterdir()} == first_stamps
    starts = [e for e in read_events(second / "events.jsonl") if e["event"] == "run_start"]
    if second_status == "preempted":  # stopped mid-training (it had 3 epochs to go): continued, not restarted
        assert len(starts) == 2 and starts[1]["resumed_from"]
    pool = json.loads((folder / "pool.json").read_text())
    codes = [m["code"] for m in pool["pool"]]
    assert codes[:3] == [c for c, _ in FORCED] and len(codes) == 4 and len(set(codes)) == 4
    assert all(m["why"] for m in pool["pool"])
    report = json.loads((folder / "report.json").read_text())
    assert (folder / "report.png").stat().st_size > 10_000
    # what it was computed on
    key = json.loads((supernet / "rank" / "best-000001" / "key.json").read_text())
    assert report["checkpoint"]["digest"] == key["checkpoint"]["digest"] == pool["checkpoint"]["digest"]
    assert report["protocol_id"] == key["protocol_id"] and report["k"] == 4 and report["seeds"] == 1
    assert report["standalone"]["epochs"] == 3
    # every figure with an interval, for the supernet and each cost baseline
    for name in fidelity.PREDICTORS:
        for fig in ("kendall_tau", "spearman", "top_overlap", "regret"):
            v = report["figures"]["predictors"][name][fig]
            assert set(v) == {"value", "low", "high", "undefined"}
    assert report["verdict"] in ("better", "worse", "not distinguishable") and report["line"] in out
    # the supernet side is the rank machinery's numbers; the stand-alone side each run's best evaluation
    ranked = {r["code"]: r for r in results.read_rows(supernet / "rank" / "best-000001" / "results.csv")}
    for row in report["subnets"]:
        assert row["supernet_epe"] == ranked[row["code"]]["epe_mean"]
        best = [e for e in read_events(runs / f"sa-{row['code']}" / "events.jsonl") if e["event"] == "eval"][-1]
        assert row["standalone_epes"][0] == best["best_epe"]
        cfg = efconfig.load(runs / f"sa-{row['code']}" / "config.yaml")
        assert cfg.train.arch == row["code"] and cfg.train.num_epochs == 3
    events = list(read_events(folder / "events.jsonl"))
    assert events[-1]["event"] == "run_end" and events[-1]["status"] == "completed"

    # a rerun trains nothing new and gives the same report
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoints/*")}
    assert fidelity_cmd.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 finished, 0 to train" in out and "training" not in out.split("to train", 1)[1]
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoints/*")} == stamps
    again = json.loads((folder / "report.json").read_text())
    assert again["figures"] == report["figures"]

    # other settings in the same folder are refused; the report job's --no-train needs nothing to train
    assert fidelity_cmd.main(["--run", str(supernet), "--k", "5", *TINY]) == EXIT_BAD_INPUT
    assert "other settings" in capsys.readouterr().err
    assert fidelity_cmd.main([*argv, "--no-train"]) == 0
