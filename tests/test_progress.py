"""Progress lines off a terminal (their run time left measured, evaluations included), and the TensorBoard
scalars and flow pictures the trainer writes (read back with TensorBoard's own event reader)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from edgeflow import rundir
from edgeflow.progress import Reporter, human_duration, significant
from edgeflow.train.epoch_clock import EpochClock
from tests.helpers import run_cli, tiny_config

LINE = re.compile(r"^epoch 1/1: step \d+/6 \d+% \| [\d.?]+ step/s(, [\d.]+ samples/s)? \| left \S+ "
                  r"\(run >\S+\) \| loss [\d.]{5,6}$", re.M)


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
                    "loss 1.500"), last


def test_run_time_left_adds_the_measured_seconds_outside_the_steps() -> None:
    out, clock = io.StringIO(), FakeClock()
    # 3 later epochs of 100 steps at 1 step/s, plus 4 measured evaluations of 30 s: 6m00s + 2m00s.
    bar = Reporter("epoch 2/5", 100, every_seconds=10, stream=out, tty=False, clock=clock, later_units=300,
                   later_seconds=120)
    unmeasured = Reporter("epoch 1/5", 100, every_seconds=10, stream=out, tty=False, clock=clock, later_units=400,
                          later_measured=False)
    for _ in range(41):
        clock.now += 1.0
        bar.update()
        unmeasured.update()
    lines = out.getvalue().splitlines()
    assert "left 1m00s (run 8m00s)" in lines[-2], lines[-2]
    assert "left 1m00s (run >7m40s)" in lines[-1], lines[-1]  # no evaluation timed yet: a lower bound


def test_epoch_clock_measures_what_each_kind_of_epoch_spends_outside_its_steps() -> None:
    clock = FakeClock()
    timer = EpochClock(every_epochs=2, num_epochs=5, clock=clock)
    assert timer.later_seconds(1) == (0.0, False)
    timer.steps_start(1)
    clock.now += 50  # steps of epoch 1 (the trace included)
    assert timer.steps_end(1) == 50
    clock.now += 5   # epoch 1 is not evaluated: checkpoint and events only
    timer.steps_start(2)
    assert timer.later_seconds(2) == (5.0, False)  # epoch 3's 5 s; evaluations after 2, 4, 5 not measured
    clock.now += 20
    assert timer.steps_end(2) == 25  # from the end of epoch 1's steps: its checkpoint and epoch 2's steps
    clock.now += 40  # epoch 2 is evaluated
    timer.steps_start(3)
    # after epochs 3 (5 s), 4 and 5 (40 s each, the last one evaluates too)
    assert timer.later_seconds(3) == (85.0, True)


def test_significant_digits_for_people() -> None:
    assert [significant(v) for v in (2.8995, 5.14789, 2.9, 0.0123, 218.34, None, "x", float("nan"))] == \
        ["2.900", "5.148", "2.900", "0.01230", "218.3", "-", "-", "nan"]


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
    assert {"train/loss", "train/grad_norm", "train/lr", "train/epoch_wall_seconds", "eval/mean_epe",
            "eval_arch/000000000"} <= tags, tags

    def points(tag: str) -> dict[int, float]:
        return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}

    events = list(rundir.read_events(run_dir / rundir.EVENTS_FILE))
    epochs = {e["epoch"]: e for e in events if e["event"] == "epoch"}
    evals = {e["epoch"]: e for e in events if e["event"] == "eval"}
    assert points("train/loss") == pytest.approx({k: v["train_loss"] for k, v in epochs.items()}, rel=1e-6)
    assert points("eval/mean_epe") == pytest.approx({k: v["mean_epe"] for k, v in evals.items()}, rel=1e-6)
    assert points("eval_arch/222222222") == pytest.approx(
        {k: v["arch_epe"]["222222222"] for k, v in evals.items()}, rel=1e-6)


@pytest.mark.slow
def test_tensorboard_shows_the_flow_pictures_of_the_evaluation(trained: tuple[Path, str]) -> None:
    import numpy as np
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    from edgeflow.rundir.flow_samples_file import read_flow_samples
    from edgeflow.train.summaries import picture_grid

    run_dir, _ = trained
    samples = read_flow_samples(run_dir / rundir.FLOW_SAMPLES_FILE)
    evaluation = [e for e in rundir.read_events(run_dir / rundir.EVENTS_FILE) if e["event"] == "eval"][-1]
    ranked = sorted(evaluation["arch_epe"], key=evaluation["arch_epe"].get)
    assert samples.epoch == 1 and samples.archs == [ranked[0], ranked[-1]] and len(samples.sample_ids) == 3
    acc = EventAccumulator(str(run_dir / rundir.TENSORBOARD_DIR), size_guidance={"tensors": 0})
    acc.Reload()
    for i, sample_id in enumerate(samples.sample_ids):
        (event,) = acc.Tensors(f"flow/{sample_id}")
        assert event.step == 1
        width, height, png = tensor_util.make_ndarray(event.tensor_proto)
        pixels = (imread(io.BytesIO(png), format="png")[..., :3] * 255).round().astype(np.uint8)
        grid = picture_grid(samples, i)
        assert (int(width), int(height)) == (grid.shape[1], grid.shape[0])
        assert np.array_equal(pixels, grid)
    (legend,) = acc.Tensors("flow/legend")
    text = tensor_util.make_ndarray(legend.tensor_proto).item().decode()
    assert f"best {ranked[0]}" in text and f"worst {ranked[-1]}" in text, text
