"""Progress lines off a terminal, and the TensorBoard scalars the trainer writes (read back with
TensorBoard's own event reader)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from edgeflow import rundir
from edgeflow.progress import Reporter, human_duration
from tests.helpers import run_cli, tiny_config

LINE = re.compile(r"^epoch 1/1: step \d+/6 \d+% \| [\d.?]+ step/s(, [\d.]+ samples/s)? \| left \S+ "
                  r"\| loss \d+\.\d{4}$", re.M)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_n_seconds_with_rate_and_time_left() -> None:
    out, clock = io.StringIO(), FakeClock()
    bar = Reporter("epoch 2/5", 100, every_seconds=10, stream=out, tty=False, clock=clock, later_units=300)
    for _ in range(41):  # one unit per second after the first
        clock.now += 1.0
        bar.update(samples=8, loss=1.5)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 10, 20, 30 and 40 s, never per step
    last = lines[-1]
    # the 40th unit, 39 s after the first: 1 step/s, 8 samples/s, 60 steps left, 360 for the run.
    assert last == ("epoch 2/5: step 40/100 40% | 1.00 step/s, 8.0 samples/s | left 1m00s (run 6m00s) | "
                    "loss 1.5000"), last


def test_human_duration() -> None:
    assert [human_duration(s) for s in (None, 5.4, 250, 3720, 2 * 86400 + 7200)] == \
        ["?", "5s", "4m10s", "1h02m", "2d02h"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("progress")
    cfg = tiny_config(tmp, demo_data, name="prog", runtime={"progress_seconds": 1e-6},
                      train={"num_epochs": 1, "batch_size": 4, "lr": 1e-3})
    proc = run_cli("edgeflow", "train", "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp / "out" / "prog", proc.stdout


@pytest.mark.slow
def test_trainer_log_has_progress_lines_off_a_terminal(trained: tuple[Path, str]) -> None:
    _, log = trained
    assert LINE.search(log), log


@pytest.mark.slow
def test_tensorboard_reads_the_scalars_back(trained: tuple[Path, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    run_dir, _ = trained
    acc = EventAccumulator(str(run_dir / rundir.TENSORBOARD_DIR), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"train/loss", "train/grad_norm", "train/lr", "eval/mean_epe", "eval_arch/000000000"} <= tags, tags

    def points(tag: str) -> dict[int, float]:
        return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}

    events = list(rundir.read_events(run_dir / rundir.EVENTS_FILE))
    epochs = {e["epoch"]: e for e in events if e["event"] == "epoch"}
    evals = {e["epoch"]: e for e in events if e["event"] == "eval"}
    assert points("train/loss") == pytest.approx({k: v["train_loss"] for k, v in epochs.items()}, rel=1e-6)
    assert points("eval/mean_epe") == pytest.approx({k: v["mean_epe"] for k, v in evals.items()}, rel=1e-6)
    assert points("eval_arch/222222222") == pytest.approx(
        {k: v["arch_epe"]["222222222"] for k, v in evals.items()}, rel=1e-6)
