"""The tf.data pipeline on real files: values, order, crops, resume, and unreadable samples.

Every image encodes where a pixel came from (B = 4*x, G = 5*y, R = sample index) so a batch reveals
which sample it holds and where it was cropped.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from edgeflow import config
from edgeflow.data import pipeline
from edgeflow.data.demo import write_sample
from edgeflow.data.fc2 import scan_split
from edgeflow.data.flo import read_flo

IMG_H, IMG_W = 40, 56
CROP_H, CROP_W = 16, 24
N = 10


def image(index: int, second: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:IMG_H, 0:IMG_W]
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    img[..., 0], img[..., 1] = 4 * xx, 5 * yy
    img[..., 2] = 255 - 10 * index if second else 10 * index
    return img


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pipe")
    for i in range(N):
        flow = np.empty((IMG_H, IMG_W, 2), np.float32)
        flow[..., 0] = i + 0.5
        flow[..., 1] = 100.0 if i % 2 == 0 else -100.0  # beyond the clip
        write_sample(directory, i, image(i, False), image(i, True), flow)
    return directory


def make_cfg(**data) -> config.Config:
    return config.from_dict({"runtime": {"seed": 5}, "data": {"input_height": CROP_H, "input_width": CROP_W, **data},
                             "train": {"batch_size": 4}})


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.rint((x / 2.0 + 0.5) * 255.0).astype(np.int64)


def decode(batches) -> list[tuple[int, int, int]]:
    """(sample index, crop top, crop left) of every element."""
    out = []
    for x, _ in batches:
        u8 = to_u8(x)
        out += [(int(e[0, 0, 2]) // 10, int(e[0, 0, 1]) // 5, int(e[0, 0, 0]) // 4) for e in u8]
    return out


def run(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), f.numpy()) for x, f in ds]


def test_steps_per_epoch_is_ceil() -> None:
    assert [pipeline.steps_per_epoch(n, 4) for n in (1, 4, 5, 8, 10)] == [1, 1, 2, 2, 3]


def test_train_batches_match_a_numpy_reference(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    cfg = make_cfg()
    batches = run(pipeline.train_dataset(samples, cfg, epoch=0))
    assert [b[0].shape for b in batches] == [(4, CROP_H, CROP_W, 6)] * 2 + [(2, CROP_H, CROP_W, 6)]
    assert all(b[0].dtype == np.float32 and b[1].shape == b[0].shape[:3] + (2,) for b in batches)
    elements = decode(batches)
    order = [e[0] for e in elements]
    assert sorted(order) == list(range(N)) and order == list(pipeline.epoch_order(N, 5, 0))
    for k, (index, top, left) in enumerate(elements):
        x, flow = batches[k // 4][0][k % 4], batches[k // 4][1][k % 4]
        s = samples[index]
        pair = np.concatenate([cv2.imread(s.img0), cv2.imread(s.img1)], axis=-1)[top:top + CROP_H, left:left + CROP_W]
        assert np.array_equal(x, (pair.astype(np.float32) / 255.0 - 0.5) * 2.0)  # BGR, both frames, same crop
        ref = np.clip(read_flo(s.flow)[top:top + CROP_H, left:left + CROP_W], -50, 50)
        assert np.array_equal(flow, ref) and np.abs(flow[..., 1]).max() == 50.0
    tops, lefts = {e[1] for e in elements}, {e[2] for e in elements}
    assert len(tops) > 2 and len(lefts) > 2
    assert max(tops) <= IMG_H - CROP_H and max(lefts) <= IMG_W - CROP_W


def test_order_and_crops_are_seeded_by_seed_and_epoch(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    cfg = make_cfg()
    e0, e0_again, e1 = (decode(run(pipeline.train_dataset(samples, cfg, epoch=e))) for e in (0, 0, 1))
    assert e0 == e0_again and e0 != e1
    assert sorted(i for i, _, _ in e1) == list(range(N))
    cfg.runtime.seed = 6
    assert decode(run(pipeline.train_dataset(samples, cfg, epoch=0))) != e0


def test_skip_batches_reproduces_the_rest_of_the_epoch(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    cfg = make_cfg()
    full = run(pipeline.train_dataset(samples, cfg, epoch=3))
    for k in (1, 2, 3):
        rest = run(pipeline.train_dataset(samples, cfg, epoch=3, skip_batches=k))
        assert len(rest) == len(full) - k
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                   for a, b in zip(rest, full[k:], strict=True))
    with pytest.raises(ValueError, match="skip_batches=4 outside 0..3"):
        pipeline.train_dataset(samples, cfg, epoch=3, skip_batches=4)


def test_eval_is_sorted_centre_cropped_and_deterministic(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    shuffled = [samples[i] for i in (7, 2, 9, 0, 5, 1, 3, 8, 4, 6)]
    cfg = make_cfg(flow_clip=2.0)
    a = run(pipeline.eval_dataset(shuffled, cfg, batch_size=3, num_batches=2))
    b = run(pipeline.eval_dataset(samples, cfg, batch_size=3, num_batches=2))
    assert len(a) == 2 and all(x.shape == (3, CROP_H, CROP_W, 6) for x, _ in a)
    top, left = (IMG_H - CROP_H) // 2, (IMG_W - CROP_W) // 2
    assert decode(a) == [(i, top, left) for i in range(6)]
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    assert np.abs(a[0][1]).max() == 2.0  # cfg.data.flow_clip
    # More batches asked than there are samples: all of them, last batch smaller.
    c = run(pipeline.eval_dataset(samples, cfg, batch_size=4, num_batches=5))
    assert [x.shape[0] for x, _ in c] == [4, 4, 2]


def test_parallelism_does_not_change_the_result(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    one = run(pipeline.train_dataset(samples, make_cfg(num_parallel_calls=1, prefetch_batches=1), epoch=2))
    auto = run(pipeline.train_dataset(samples, make_cfg(), epoch=2))
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(one, auto, strict=True))


def _iterate_until_error(ds) -> tuple[int, tf.errors.OpError]:
    seen = 0
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for x, _ in ds:
            seen += int(x.shape[0])
    return seen, info.value


def test_file_removed_after_the_scan_is_an_error_naming_it(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    os.remove(samples[3].flow)
    seen, err = _iterate_until_error(pipeline.train_dataset(samples, make_cfg(), epoch=0))
    assert "training sample 0000003 (position 3) cannot be read" in str(err)
    assert f"{samples[3].flow}: cannot read: No such file or directory" in str(err)
    assert pipeline.is_data_error(err) and seen < N
    # What the run, `jobs status` and `jobs list` show: one line, without TensorFlow's wrapping.
    assert pipeline.data_error_message(err) == (f"training sample 0000003 (position 3) cannot be read: "
                                                f"{samples[3].flow}: cannot read: No such file or directory")


def test_corrupt_png_in_the_last_position_is_not_skipped(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    last = samples[int(pipeline.epoch_order(N, 5, 0)[-1])]
    data = Path(last.img1).read_bytes()
    Path(last.img1).write_bytes(data[:33] + b"\x00\xff" * ((len(data) - 45) // 2) + data[-12:])
    seen, err = _iterate_until_error(pipeline.train_dataset(samples, make_cfg(), epoch=0))
    assert f"(position {N - 1}) cannot be read" in str(err)
    assert f"{last.img1}: PNG data cannot be decoded" in str(err)
    assert seen == 8  # the first two full batches; the last batch never arrives short


def test_flo_replaced_after_the_scan_is_an_error_naming_it(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    flow = Path(samples[0].flow)
    flow.write_bytes(b"XXXX" + flow.read_bytes()[4:])  # same size, wrong magic: would be read silently
    _, err = _iterate_until_error(pipeline.eval_dataset(samples, make_cfg(), batch_size=2, num_batches=1))
    assert "evaluation sample 0000000 (position 0) cannot be read" in str(err)
    assert f"{flow}: not a .flo file" in str(err) and f"{flow}: {flow}" not in str(err)


def test_image_resized_after_the_scan_is_an_error_naming_it(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    cv2.imwrite(samples[2].img1, np.zeros((IMG_H, IMG_W + 8, 3), np.uint8))  # would crop silently
    _, err = _iterate_until_error(pipeline.eval_dataset(samples, make_cfg(), batch_size=4, num_batches=1))
    assert "evaluation sample 0000002 (position 2) cannot be read" in str(err)
    assert f"{samples[2].img1}: img_1 is 40x64 but img_0 is 40x56" in str(err)


def test_unit_range_is_exactly_the_spec_formula() -> None:
    v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    got = pipeline.to_unit_range(tf.constant(v)).numpy()
    assert np.array_equal(got, (v.astype(np.float32) / 255.0 - 0.5) * 2.0)
    assert got.min() == -1.0 and got.max() == 1.0


def test_cached_eval_gives_the_same_batches_without_reading_again(data_dir: Path) -> None:
    samples = scan_split(data_dir).valid
    ds = pipeline.eval_dataset(samples, make_cfg(), batch_size=4, num_batches=2, cache=True)
    first = run(ds)
    os.remove(samples[0].img0)  # a second pass that read the files again would fail
    second = run(ds)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(first, second, strict=True))
    assert decode(second) == decode(first) and len(second) == 2
