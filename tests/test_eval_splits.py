"""Evaluation on any split: `eval.splits`, `--split NAME` on eval, rank and search, every result keyed by
its split; and a training schedule of two stages (FC2, then FlyingThings3D from its best weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeflow import config as config_mod
from edgeflow.commands import eval as eval_cmd
from edgeflow.commands import rank as rank_cmd
from edgeflow.commands import search as search_cmd
from edgeflow.nas import results
from edgeflow.rundir import RunPaths, atomic_write_json, read_events, read_run
from tests.helpers import run_cli, tiny_config

H, W = 48, 64
ARCHS = ["000000000", "222222222"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("split_layouts")
    for args in (["--layout", "sintel", "--out", str(out / "sintel"), "--scenes", "2", "--frames", "5"],
                 ["--layout", "ft3d", "--out", str(out / "ft3d"), "--scenes", "2", "--test-scenes", "1",
                  "--frames", "4"]):
        proc = run_cli("edgeflow", "demo-data", *args, "--height", str(H), "--width", str(W))
        assert proc.returncode == 0, proc.stderr
    return {"sintel": out / "sintel", "ft3d": out / "ft3d"}


def sintel_split(root: Path, **more: object) -> dict:
    return {"dataset": "sintel", "subset": "clean", "root": str(root), "height": 32, "width": 48, **more}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, demo_data: Path, layouts: dict[str, Path]) -> Path:
    """A run with a freshly initialised checkpoint (as tests/nas_helpers.py) and a Sintel evaluation split."""
    import tensorflow as tf

    from edgeflow.train.checkpoint import CheckpointStore
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.signature import signature

    tmp = tmp_path_factory.mktemp("splits_run")
    cfg_path = tiny_config(tmp, demo_data, name="splits", eval={
        "bn_recal_batches": 2, "eval_batches_per_arch": 2,
        "splits": {"sintel-clean": sintel_split(layouts["sintel"], batches=2)}})
    cfg = config_mod.load(cfg_path)
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True)
    paths.config.write_text(config_mod.dump(cfg))
    atomic_write_json(paths.run, {"experiment": "splits", "status": "completed", "signature": signature(cfg)})
    CheckpointStore(paths.checkpoints).save("best", tf.train.Checkpoint(model=build_supernet(cfg)).write,
                                            {"epoch": 1})
    return paths.root


def key_of(folder: Path) -> dict:
    return json.loads((folder / "key.json").read_text())


@pytest.mark.slow
def test_rank_eval_and_search_on_two_splits_write_two_keyed_results(run_dir: Path, capsys) -> None:
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *ARCHS]) == 0
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *ARCHS, "--split", "sintel-clean"]) == 0
    own, other = run_dir / "rank/best-000001", run_dir / "rank/best-000001_sintel-clean"
    a, b = key_of(own), key_of(other)
    assert a["split"] == "val" and b["split"] == "sintel-clean" and a["protocol_id"] != b["protocol_id"]
    assert "split" not in a["protocol"]  # the run's own FC2 split keeps the protocol results always had
    assert b["protocol"]["split"] == {"name": "sintel-clean", "eval_size": [32, 48], "dataset": "sintel",
                                      "subset": "clean"}
    rows_a = {r["code"]: r for r in results.read_rows(own / "results.csv")}
    rows_b = {r["code"]: r for r in results.read_rows(other / "results.csv")}
    assert {r["protocol"] for r in rows_a.values()} == {a["protocol_id"]}
    assert {r["protocol"] for r in rows_b.values()} == {b["protocol_id"]}
    assert all(rows_a[c]["epe_mean"] != rows_b[c]["epe_mean"] for c in ARCHS)

    # the same folder never takes another split's results
    capsys.readouterr()
    assert rank_cmd.main(["--run", str(run_dir), "--archs", *ARCHS, "--split", "sintel-clean",
                          "--name", "best-000001"]) == 2
    assert "another evaluation split" in capsys.readouterr().err

    # eval --split gives exactly the numbers rank keyed by that split
    assert eval_cmd.main(["--run", str(run_dir), "--archs", *ARCHS, "--split", "sintel-clean", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "sintel-clean" and out["eval_size"] == [32, 48] and out["val_samples"] == 8
    assert out["arch_epe"] == {c: rows_b[c]["epe_mean"] for c in ARCHS}

    # a search on a split reuses that split's results only
    assert search_cmd.main(["--run", str(run_dir), "--split", "sintel-clean", "--evaluations", "2",
                            "--population", "2", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "split sintel-clean; 2 results" in printed
    folder = run_dir / "search/best-000001_epe_flops_s1_sintel-clean"
    assert key_of(folder)["protocol_id"] == b["protocol_id"]

    assert eval_cmd.main(["--run", str(run_dir), "--split", "nope"]) == 2
    assert "--split nope: not an evaluation split" in capsys.readouterr().err


# ---------------------------------------------------------------- two stages

def stage_config(tmp: Path, name: str, data: dict, evals: dict, checkpoint: dict | None = None) -> Path:
    raw = {"runtime": {"experiment_name": name, "output_root": str(tmp / "out"), "seed": 0, "heartbeat_seconds": 1},
           "data": {"input_height": 32, "input_width": 48, **data},
           "train": {"num_epochs": 1, "batch_size": 4, "lr": 1e-3},
           "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1, "pool": ["000000000"],
                    "min_epochs_before_early_stop": 0, **evals},
           "checkpoint": checkpoint or {}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_ft3d_stage_starts_from_the_fc2_stages_best_weights(tmp_path: Path, demo_data: Path,
                                                          layouts: dict[str, Path]) -> None:
    splits = {"splits": {"sintel-clean": sintel_split(layouts["sintel"])}}
    first = stage_config(tmp_path, "fc2", {"train_dir": str(demo_data / "train"), "val_dir": str(demo_data / "val")},
                         splits)
    proc = run_cli("edgeflow", "train", "--config", str(first), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fc2_run = tmp_path / "out/fc2"
    (ev,) = [e for e in read_events(fc2_run / "events.jsonl") if e["event"] == "eval"]
    # the pool is evaluated on both splits; the run's own split decides, the other is reported beside it
    assert ev["split"] == "val" and set(ev["splits"]) == {"sintel-clean"}
    assert ev["splits"]["sintel-clean"]["mean_epe"] > 0 and ev["splits"]["sintel-clean"]["mean_epe"] != ev["mean_epe"]
    best = json.loads((fc2_run / "checkpoints/best.json").read_text())["prefix"]

    second = stage_config(tmp_path, "ft3d", {"dataset": "ft3d", "root": str(layouts["ft3d"])},
                          {**splits, "select_on": "sintel-clean"},
                          {"init_from": str(fc2_run), "resume_checkpoint": "best"})
    proc = run_cli("edgeflow", "train", "--config", str(second), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ft3d_run = tmp_path / "out/ft3d"
    start = next(e for e in read_events(ft3d_run / "events.jsonl") if e["event"] == "run_start")
    assert start["init_from"]["run"] == str(fc2_run.resolve()) and start["init_from"]["checkpoint"] == "best"
    assert start["resumed_from"] == str(fc2_run / "checkpoints" / best)
    assert f"weights from {fc2_run / 'checkpoints' / best}" in proc.stdout
    run = read_run(ft3d_run / "run.json")
    assert run["data_source"]["dataset"] == "ft3d" and run["data_source"]["flow_divisor"] == 12.5
    assert run["val_source"] == "sintel-clean" and run["eval_splits"]["select_on"] == "sintel-clean"
    assert start["train_samples"] == 24  # 2 scenes x 1 camera x 2 passes x 2 directions x 3 frames
    (ev,) = [e for e in read_events(ft3d_run / "events.jsonl") if e["event"] == "eval"]
    assert ev["split"] == "sintel-clean" and "splits" not in ev and ev["best_epoch"] == 1
