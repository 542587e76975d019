"""Training augmentation (data.augment): off by default, each kind does what it says to frames and flow,
and every draw comes from the run's seeded per-epoch generators, so a resume mid-epoch is bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow import config
from edgeflow.data import pipeline
from edgeflow.data.demo import write_sample
from edgeflow.data.fc2 import scan_split

IMG_H, IMG_W = 40, 56
CROP_H, CROP_W = 16, 24
N = 10


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    directory = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(0)
    for i in range(N):
        flow = np.empty((IMG_H, IMG_W, 2), np.float32)
        flow[..., 0], flow[..., 1] = i + 0.5, -(i + 1.0)
        img0 = rng.integers(0, 256, (IMG_H, IMG_W, 3), dtype=np.uint8)
        write_sample(directory, i, img0, np.roll(img0, 1, axis=1), flow)
    return scan_split(directory).valid


def make_cfg(seed: int = 5, **augment: object) -> config.Config:
    return config.from_dict({"runtime": {"seed": seed},
                             "data": {"input_height": CROP_H, "input_width": CROP_W, "augment": augment},
                             "train": {"batch_size": 4}})


def epoch(samples: list, cfg: config.Config, number: int = 0, skip: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), f.numpy()) for x, f in pipeline.train_dataset(samples, cfg, number, skip_batches=skip)]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for p, q in zip(a, b, strict=True)
                                    for x, y in zip(p, q, strict=True))


ALL = {"photometric": True, "spatial": True, "eraser": True, "vflip": 0.5, "eraser_prob": 0.8}


def test_off_by_default() -> None:
    assert not config.Config().data.augment.enabled


def test_augmented_epochs_are_deterministic_and_resume_bit_exact(samples: list) -> None:
    cfg = make_cfg(**ALL)
    full = epoch(samples, cfg, 3)
    assert same(full, epoch(samples, cfg, 3))                   # the same seed: the same batches
    assert same(full[1:], epoch(samples, cfg, 3, skip=1))       # a resume after batch 1 of the epoch
    assert same(full[2:], epoch(samples, cfg, 3, skip=2))
    assert not same(full, epoch(samples, cfg, 4))               # another epoch draws anew
    assert not same(full, epoch(samples, make_cfg(seed=6, **ALL), 3))
    plain = epoch(samples, make_cfg(), 3)
    assert not same(full, plain)
    assert all(np.all(np.abs(f) <= 50.0) for _, f in full)


def test_flips_mirror_frames_and_negate_the_flow(samples: list) -> None:
    plain = epoch(samples, make_cfg(), 0)
    for key, axis, sign in (("hflip", 2, [-1.0, 1.0]), ("vflip", 1, [1.0, -1.0])):
        other = "vflip" if key == "hflip" else "hflip"
        flipped = epoch(samples, make_cfg(spatial=True, max_zoom=1.0, **{key: 1.0, other: 0.0}), 0)
        for (x, f), (xf, ff) in zip(plain, flipped, strict=True):
            np.testing.assert_array_equal(xf, np.flip(x, axis))
            np.testing.assert_array_equal(ff, np.flip(f, axis) * np.float32(sign))


def test_zoom_scales_the_flow_with_the_image(samples: list) -> None:
    plain = epoch(samples, make_cfg(), 0)
    zoomed = epoch(samples, make_cfg(spatial=True, max_zoom=2.0, hflip=0.0), 0)
    ratios = []
    for (_, f), (_, fz) in zip(plain, zoomed, strict=True):
        for a, b in zip(f, fz, strict=True):
            # constant flow per sample: the zoom multiplies u by W / window width and v by H / window height
            u, v = b[..., 0] / a[..., 0], b[..., 1] / a[..., 1]
            assert np.allclose(u, u.flat[0], rtol=1e-5) and np.allclose(v, v.flat[0], rtol=1e-5)
            assert 1.0 <= u.flat[0] <= 2.0 + 1e-5 and 1.0 <= v.flat[0] <= 2.0 + 1e-5
            ratios.append(u.flat[0])
    assert max(ratios) > 1.2  # some samples were zoomed into


def test_photometric_and_eraser_leave_the_flow_and_img0_as_they_are(samples: list) -> None:
    plain = epoch(samples, make_cfg(), 0)
    photo = epoch(samples, make_cfg(photometric=True), 0)
    erased = epoch(samples, make_cfg(eraser=True, eraser_prob=1.0, eraser_min=0.3, eraser_max=0.5), 0)
    for (x, f), (xp, fp), (xe, fe) in zip(plain, photo, erased, strict=True):
        np.testing.assert_array_equal(fp, f)
        np.testing.assert_array_equal(fe, f)
        assert not np.array_equal(xp, x)
        np.testing.assert_array_equal(xe[..., :3], x[..., :3])  # img_0 untouched: an occlusion in img_1
        for sample, erased_sample in zip(x, xe, strict=True):
            changed = np.any(sample[..., 3:] != erased_sample[..., 3:], axis=-1)
            assert changed.any()
            colours = {tuple(c) for c in erased_sample[..., 3:][changed]}
            assert len(colours) == 1  # the boxes are painted with one colour, img_1's mean
