"""The demo data set: real PNG pairs in FC2 layout whose flow is exact by construction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeflow.data import demo
from edgeflow.data.fc2 import scan_split
from edgeflow.data.flo import read_flo
from edgeflow.data.samples import ScanOptions
from tests.helpers import REPO


def warp_back(img1: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """img1 sampled at p + flow(p): equals img0 wherever p stays visible."""
    h, w = flow.shape[:2]
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img1, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_layout_and_formats(demo_data: Path) -> None:
    full = ScanOptions(deep="full")
    train, val = scan_split(demo_data / "train", full), scan_split(demo_data / "val", full)
    assert (train.found, len(train.valid), val.found, len(val.valid)) == (24, 24, 8, 8)
    assert train.problems == {} and val.problems == {}
    assert [s.sample_id for s in val.valid] == [f"{i:07d}" for i in range(8)]
    sample = train.valid[5]
    assert Path(sample.img0).name == "0000005-img_0.png" and Path(sample.flow).name == "0000005-flow_01.flo"
    img = cv2.imread(sample.img0, cv2.IMREAD_UNCHANGED)
    assert img.shape == (384, 512, 3) and img.dtype == np.uint8
    assert Path(sample.flow).stat().st_size == 1_572_876
    meta = json.loads((demo_data / "demo.json").read_text())
    assert (meta["seed"], meta["train"], meta["val"]) == (0, 24, 8)


def test_flow_explains_the_second_frame(demo_data: Path) -> None:
    """Warping img_1 back by the flow reproduces img_0 except at occlusions; zero flow does not."""
    errors, zero_errors = [], []
    for i in range(4):
        stem = demo_data / "train" / f"{i:07d}"
        img0 = cv2.imread(f"{stem}-img_0.png").astype(np.float32)
        img1 = cv2.imread(f"{stem}-img_1.png")
        flow = read_flo(f"{stem}-flow_01.flo")
        errors.append(np.median(np.abs(warp_back(img1, flow).astype(np.float32) - img0)))
        zero_errors.append(np.median(np.abs(img1.astype(np.float32) - img0)))
    assert max(errors) < 3.0
    assert min(zero_errors) > 4 * max(errors)


def test_background_only_flow_is_exactly_affine() -> None:
    img0, img1, flow = demo.render_sample(np.random.default_rng(5), shapes=0)
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    design = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], 1).astype(np.float64)
    for c in range(2):
        coef, *_ = np.linalg.lstsq(design, flow[..., c].ravel().astype(np.float64), rcond=None)
        assert np.abs(design @ coef - flow[..., c].ravel()).max() < 1e-3
    # Away from the border (where content enters the view), img_1 at p + flow(p) is img_0 at p.
    diff = np.abs(warp_back(img1, flow).astype(np.float32) - img0.astype(np.float32))[32:-32, 32:-32]
    assert np.median(diff) <= 2.0 and diff.mean() < 3.0


def test_motion_is_modest_with_a_nonzero_mean_pan(demo_data: Path) -> None:
    flows = np.stack([read_flo(demo_data / "train" / f"{i:07d}-flow_01.flo") for i in range(24)])
    magnitude = np.linalg.norm(flows, axis=-1)
    assert magnitude.max() < 30.0
    assert 1.0 < np.median(magnitude) < 15.0
    mean_u, mean_v = flows[..., 0].mean(), flows[..., 1].mean()
    assert mean_u > 2.0 and mean_v > 0.5  # BG_PAN_MEAN = (4, 2) px
    # Every sample has moving shapes: more than one distinct motion (the flow is not one affine field).
    assert all(np.unique(np.round(f[..., 0], 2)).size > 1000 for f in flows[:3])


def test_deterministic_for_a_seed(tmp_path_factory: pytest.TempPathFactory) -> None:
    a, b, c = (tmp_path_factory.mktemp(n) for n in ("a", "b", "c"))
    demo.render_demo_dataset(a, 2, 1, seed=3)
    demo.render_demo_dataset(b, 2, 1, seed=3)
    demo.render_demo_dataset(c, 2, 1, seed=4)
    names = sorted(p.relative_to(a) for p in a.rglob("*-*"))
    assert len(names) == 9
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / names[0]).read_bytes() != (c / names[0]).read_bytes()
    # Train and val are drawn from different streams: val 0 is not train 0.
    assert (a / "val/0000000-img_0.png").read_bytes() != (a / "train/0000000-img_0.png").read_bytes()


def test_cli_renders_and_refuses_to_mix_with_stale_samples(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "edgeflow", "demo-data", "--out", str(out), "--train", "2", "--val", "1",
           "--seed", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"wrote 2 train and 1 val samples (seed 1, 384x512) to {out / 'train'} and {out / 'val'}" in first.stdout
    assert len(list((out / "train").iterdir())) == 6
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)  # same set: rewritten
    assert again.returncode == 0
    fewer = subprocess.run(cmd[:-5] + ["1", "--val", "1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert fewer.returncode == 2
    message = f"demo-data: {out / 'train'} already holds 3 sample files that this render would not overwrite"
    assert message in fewer.stderr
