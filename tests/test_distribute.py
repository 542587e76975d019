"""tf.distribute on 3 logical CPU devices (train.distribute, train.distribute_mode).

The devices must be configured before TensorFlow initialises its devices, so the real work runs in
a fresh process (tests/scripts/distribute_check.py) and prints its figures as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeflow import config as config_mod
from edgeflow.train.distribute import make_strategy
from edgeflow.train.layout import DistributeError, Layout, check_layout

SCRIPT = Path(__file__).parent / "scripts" / "distribute_check.py"


def run_check(mode: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_arch_parallel_on_3_replicas_equals_the_single_device_step() -> None:
    out = run_check("arch_parallel")
    assert out["replicas"] == 3 and all(out["finite"])
    # Each step from the same state as the single-device step (tests/scripts/distribute_check.py): the
    # first is bit-identical (same weights, same batch); later ones differ by rounding only.
    assert out["loss"][0] == out["ref_loss"][0] and out["grad_norm"][0] == out["ref_grad_norm"][0]
    assert out["loss"] == pytest.approx(out["ref_loss"], rel=1e-5)
    assert out["grad_norm"] == pytest.approx(out["ref_grad_norm"], rel=1e-4)
    assert any(out["clipped"])  # clipping at 5 took part
    # Weights after 2 Adam steps: Adam moves every weight by about lr whatever the size of its gradient,
    # so entries whose gradient is at rounding level (the all-reduce sums in another order) may differ
    # by up to lr; a missing or misweighted arch would put a third of the branch weights off.
    assert out["weight_max_change"] > 1e-3
    assert out["weight_frac_off"] < 0.05 and out["weight_max_diff"] <= out["weight_max_change"]
    # BN moving statistics: each replica's arch update applied in arch order, like one device
    assert out["bn_max_change"] > 1e-3 and out["bn_max_diff"] < 1e-3 * out["bn_max_change"]
    assert out["bn_copies_equal"]


@pytest.mark.slow
def test_data_parallel_runs_on_3_replicas_and_keeps_bn_copies_equal() -> None:
    out = run_check("data_parallel")
    assert out["replicas"] == 3 and all(out["finite"])
    # BN normalises each replica's third of the batch with its own statistics: the loss and gradient are
    # those of the three shards weighted by size, not those of the whole batch.
    assert out["loss"][0] == pytest.approx(out["ref_loss0"], rel=1e-5)
    assert out["grad_norm"][0] == pytest.approx(out["ref_grad_norm0"], rel=1e-4)
    assert abs(out["loss"][0] - out["whole_batch_loss0"]) > 1e-4 * out["whole_batch_loss0"]
    assert out["bn_copies_equal"]


@pytest.mark.slow
def test_sync_batch_norm_makes_data_parallel_the_single_device_step() -> None:
    out = run_check("data_parallel_sync")
    assert out["replicas"] == 3 and all(out["finite"]) and out["bn_copies_equal"]
    # BN statistics over all 3 shards are the whole batch's: the first step's loss, gradient norm and BN
    # moving statistics are the single-device step's, to the rounding of an unfused batch norm (its
    # gradient differs from the fused kernel's by ~2e-4). Per-replica statistics are 3 % off in the loss
    # and 25 % in the gradient norm on this batch (test above), so these bounds tell the two apart.
    assert out["loss"][0] == pytest.approx(out["ref_loss"][0], rel=1e-6)
    assert out["grad_norm"][0] == pytest.approx(out["ref_grad_norm"][0], rel=1e-3)
    assert out["bn_max_change"] > 1e-3 and out["bn_max_diff"] < 1e-4 * out["bn_max_change"]
    # The second step follows Adam's first update, which moves every weight by about lr whatever the
    # size of its gradient, so rounding-level gradient entries move weights too: a looser bound.
    assert out["loss"][1] == pytest.approx(out["ref_loss"][1], rel=2e-3)


def test_sync_batch_norm_refuses_an_epoch_that_leaves_a_replica_without_samples() -> None:
    from edgeflow.train.distribute import check_last_batch

    layout = check_layout("data_parallel", 4, 8)
    check_last_batch(layout, 20, 8, sync_batch_norm=True)  # last batch of 4: one sample each
    check_last_batch(layout, 18, 8, sync_batch_norm=False)  # per-replica statistics skip an empty shard
    with pytest.raises(DistributeError, match="last batch of an epoch has 2 of 18 samples, fewer than the 4"):
        check_last_batch(layout, 18, 8, sync_batch_norm=True)


def test_layouts_and_refusals() -> None:
    assert check_layout("arch_parallel", 3, 32) == Layout("arch_parallel", 3)
    six = check_layout("arch_parallel", 6, 32)
    assert six.shards == 2 and [six.shard_of(r) for r in range(6)] == [0, 0, 0, 1, 1, 1]
    assert six.bounds(32, 1) == (16, 32) and six.bounds(5, 0) == (0, 2)  # an uneven last batch
    assert check_layout("data_parallel", 4, 32).shards == 4
    with pytest.raises(DistributeError, match="arch_parallel needs 3 replicas or a multiple of 3.*got 4"):
        check_layout("arch_parallel", 4, 32)
    with pytest.raises(DistributeError, match="train.batch_size: 30 is not divisible by the 4 batch shards"):
        check_layout("data_parallel", 4, 30)
    cfg = config_mod.from_dict({"data": {"train_dir": "t", "val_dir": "v"}, "train": {"distribute": "multi_worker"}})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SLURM_PROCID", raising=False)
        with pytest.raises(DistributeError, match="multi_worker needs the SLURM task environment"):
            make_strategy(cfg)


def test_config_keys_are_validated() -> None:
    base = {"data": {"train_dir": "t", "val_dir": "v"}}
    for train, message in (({"distribute": "horovod"}, "train.distribute: must be none, mirrored"),
                           ({"distribute_mode": "model"}, "train.distribute_mode: must be arch_parallel"),
                           ({"sync_batch_norm": True}, "train.sync_batch_norm: only applies to")):
        with pytest.raises(config_mod.ConfigError, match=message):
            config_mod.from_dict({**base, "train": train})
    cfg = config_mod.from_dict({**base, "train": {"distribute": "auto", "distribute_mode": "data_parallel"}})
    assert (cfg.train.distribute, cfg.train.distribute_mode, cfg.train.sync_batch_norm) == (
        "auto", "data_parallel", False)


@pytest.mark.slow
def test_trainer_runs_arch_parallel_on_3_replicas_and_reports_them(demo_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "runtime": {"experiment_name": "dist", "output_root": str(tmp_path / "out"), "seed": 0,
                    "heartbeat_seconds": 0.001},
        "data": {"train_dir": str(demo_data / "train"), "val_dir": str(demo_data / "val"),
                 "input_height": 32, "input_width": 48},
        "train": {"num_epochs": 1, "batch_size": 12, "distribute": "mirrored", "distribute_mode": "arch_parallel"},
        "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1, "pool": ["000000000"]}}))
    proc = subprocess.run([sys.executable, str(SCRIPT.parent / "train_replicas.py"), "3", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "out" / "dist" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "checkpoint" in kinds
    assert events[0]["replicas"] == 3 and events[-1]["status"] == "completed"
    beats = [e for e in events if e["event"] == "heartbeat"]
    assert beats and all(b["replicas"] == 3 for b in beats)


def test_a_replica_count_arch_parallel_cannot_use_is_refused_before_training() -> None:
    import tensorflow as tf

    from edgeflow.train.distribute import DistributedTrainStep, build_model

    cfg = config_mod.from_dict({"data": {"train_dir": "t", "val_dir": "v", "input_height": 32, "input_width": 48},
                                "train": {"distribute": "mirrored"}})
    strategy = tf.distribute.MirroredStrategy(devices=["/cpu:0"])  # 1 replica
    with pytest.raises(DistributeError, match="arch_parallel needs 3 replicas or a multiple of 3.*got 1"):
        DistributedTrainStep(build_model(cfg, strategy), cfg, strategy)
