"""Epoch statistics (protocol §7), the console line and metrics.csv derived from events."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from edgeflow.rundir import metrics_csv
from edgeflow.train.epoch_stats import EpochStats, epoch_line


def test_epoch_means_percentiles_clip_and_nonfinite() -> None:
    stats = EpochStats()
    norms = [1.0, 2.0, 3.0, 250.0]
    for i, n in enumerate(norms):
        stats.add_step(loss=float(i), grad_norm=n, clipped=n > 200, finite=True, samples=4, seconds=0.5)
    stats.add_step(loss=math.nan, grad_norm=math.nan, clipped=False, finite=False, samples=4, seconds=0.5)
    s = stats.summary()
    assert s["train_loss"] == 1.5  # the skipped step is counted, not averaged
    assert s["grad_norm"] == np.mean(norms)
    assert s["grad_norm_p50"] == 2.5 and s["grad_norm_p90"] == float(np.percentile(norms, 90))
    assert s["clip_count"] == 1 and s["clip_rate"] == 0.25
    assert s["nonfinite_steps"] == 1
    assert s["samples_per_second"] == 20 / 2.5
    assert EpochStats.from_dict(stats.to_dict()).summary() == s


def test_console_line_shows_loss_norm_epe_best_patience_and_speed() -> None:
    fields = {"train_loss": 1.23456, "grad_norm": 4.5, "grad_norm_p90": 6.0, "clip_rate": 0.0,
              "samples_per_second": 12.3, "nonfinite_steps": 0}
    ev = {"mean_epe": 3.2, "std_epe": 0.1, "best_epe": 3.1, "best_epoch": 2, "bad_epochs": 1, "patience": 15}
    line = epoch_line(3, 10, fields, ev)
    for part in ("epoch 3/10", "loss 1.2346", "grad_norm 4.500", "EPE 3.200 +- 0.1000", "best 3.100 @2",
                 "early-stop 1/15", "12.3 samples/s"):
        assert part in line


def test_metrics_csv_one_row_per_epoch_last_attempt_wins() -> None:
    events = [
        {"event": "run_start"},
        {"event": "epoch", "epoch": 1, "step": 5, "train_loss": 9.0},
        {"event": "eval", "epoch": 1, "mean_epe": 7.0, "arch_epe": {"000000000": 7.0}},
        {"event": "epoch", "epoch": 2, "step": 10, "train_loss": 8.0},  # killed before its eval
        {"event": "run_start"},
        {"event": "epoch", "epoch": 2, "step": 10, "train_loss": 7.5},
        {"event": "eval", "epoch": 2, "mean_epe": 6.0},
    ]
    rows = list(csv.DictReader(io.StringIO(metrics_csv(events))))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[1]["train_loss"] == "7.5" and rows[1]["mean_epe"] == "6.0"
    assert rows[0]["mean_epe"] == "7.0" and "arch_epe" not in rows[0]
