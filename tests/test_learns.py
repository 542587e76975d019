"""Proof that training learns: on the demo data the pool's mean EPE ends well below the EPE of
predicting zero flow on the same eval batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeflow.rundir import read_events
from tests.helpers import REPO


@pytest.mark.slow
def test_pool_mean_epe_ends_well_below_zero_flow(tmp_path: Path, demo_data: Path) -> None:
    # configs/demo.yaml, shrunk to the 24-sample test set: 64x96 crops (tiny crops give noisy BN
    # statistics), batch 4 -> 6 steps per epoch, the full 12-arch pool evaluated twice.
    sets = [f"data.train_dir={demo_data / 'train'}", f"data.val_dir={demo_data / 'val'}",
            f"runtime.output_root={tmp_path}", "data.input_height=64", "data.input_width=96",
            "train.batch_size=4", "train.num_epochs=6", "eval.batch_size=4", "eval.bn_recal_batches=6",
            "eval.eval_batches_per_arch=2", "eval.every_epochs=3"]
    args = [sys.executable, "-m", "edgeflow", "train", "--config", str(REPO / "configs" / "demo.yaml")]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "demo"
    events = list(read_events(run / "events.jsonl"))
    zero = events[0]["zero_flow_epe"]
    evals = [e for e in events if e["event"] == "eval"]
    assert len(evals) == 2 and len(evals[-1]["arch_epe"]) == 12
    final = evals[-1]["mean_epe"]
    print(f"zero-flow EPE {zero:.3f}, pool mean EPE {[round(e['mean_epe'], 3) for e in evals]}")
    assert final < 0.75 * zero, (final, zero)
    losses = [e["train_loss"] for e in events if e["event"] == "epoch"]
    assert losses[-1] < losses[0]
    assert json.loads((run / "state.json").read_text())["fairness_gap"] == 0

    # The baseline itself, computed independently of the trainer on the same eval batches.
    from edgeflow import config
    from edgeflow.data.splits import resolve_splits
    from edgeflow.model.supernet import Supernet
    from edgeflow.train.evaluate import datasets, zero_flow_epe

    cfg = config.load(run / "config.yaml")
    splits = resolve_splits(cfg)
    _, eval_batches = datasets(cfg, splits.train, splits.val)
    assert zero_flow_epe(Supernet(seed=1), eval_batches) == pytest.approx(zero, rel=1e-6)
