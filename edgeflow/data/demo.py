"""Render the demo data set: real image pairs with exact flow, in FlyingChairs2 layout.

Each sample is a textured background and a few textured shapes, every layer moved by its own affine
map A_k. Frame 0 is the layers composited as drawn; frame 1 inverse-maps every layer through its A_k
(cv2.warpAffine) and composites them in the same order. The flow of pixel p of frame 0 is
A_k(p) - p for the top layer k at p, background included, so the label is exact by construction.

Motions are modest (shapes: up to ~15 px, background: a few px) and the background always pans by a
non-zero mean (`BG_PAN_MEAN`), so a zero-flow prediction has a clear EPE that a small network beats
after a few CPU epochs; the demo and the tests rely on that. Deterministic for a seed: sample i of a
split draws from its own generator seeded by (seed, split, i). It is only ever used when asked for.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgeflow.data import flo
from edgeflow.data.fc2 import FLOW_SUFFIX, IMG0_SUFFIX, IMG1_SUFFIX, SAMPLE_FILE
from edgeflow.data.samples import DataError
from edgeflow.progress import Reporter

HEIGHT, WIDTH = 384, 512
MARGIN = 48  # canvas border: what the background and shapes bring into view in frame 1
BG_PAN_MEAN = (4.0, 2.0)  # px (u, v): the dominant, non-zero mean pan of the background
BG_PAN_STD = 1.5
BG_MAX_ROTATION_DEG = 1.5
BG_MAX_SCALE = 0.02
SHAPE_MAX_SHIFT = 10.0
SHAPE_MAX_ROTATION_DEG = 5.0
SHAPE_MAX_SCALE = 0.05
SHAPES_PER_SAMPLE = (4, 8)
SHAPE_RADIUS = (25, 80)
SPLITS = {"train": 0, "val": 1}
DEMO_VERSION = 1


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # the trainer image has it; a bare login node may not
        raise DataError(f"demo-data renders with OpenCV (cv2), which cannot be imported: {exc}") from None
    return cv2


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Colour noise over several octaves plus a stripe pattern: structure at every scale to match on."""
    cv2 = _cv2()
    out = np.zeros((height, width, 3), np.float32)
    # Octaves by feature size in pixels, so a small shape and the background look alike up close.
    for feature_px, weight in ((160.0, 1.0), (60.0, 0.8), (20.0, 0.6), (7.0, 0.45), (2.5, 0.35)):
        grid = (max(2, round(height / feature_px)), max(2, round(width / feature_px)), 3)
        small = rng.standard_normal(grid).astype(np.float32)
        out += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi))
    out += rng.uniform(0.0, 0.8) * stripes[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    out = (out - out.mean()) / (out.std() + 1e-6)
    base = rng.uniform(60, 196, 3).astype(np.float32)
    return np.clip(base + out * rng.uniform(25, 50), 0, 255)


def _shape_mask(rng: np.random.Generator, height: int, width: int, scale: float = 1.0) -> np.ndarray:
    """A random shape on a canvas of height x width; `scale` sizes it for frames other than 384x512."""
    cv2 = _cv2()
    mask = np.zeros((height, width), np.uint8)
    cx, cy = rng.uniform(MARGIN, width - MARGIN), rng.uniform(MARGIN, height - MARGIN)
    radius = rng.uniform(*SHAPE_RADIUS) * scale
    kind = rng.integers(3)
    if kind == 0:
        axes = (int(radius), int(radius * rng.uniform(0.4, 1.0)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1, cv2.LINE_8)
    else:
        n = int(rng.integers(3, 9)) if kind == 1 else 4
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if kind == 1 else \
            rng.uniform(0, np.pi) + np.array([0.0, 0.5, 1.0, 1.5]) * np.pi + rng.uniform(-0.3, 0.3, 4)
        radii = radius * (rng.uniform(0.5, 1.0, n) if kind == 1 else np.ones(n))
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, cv2.LINE_8)
    return mask


def _affine(rng: np.random.Generator, centre: tuple[float, float], shift: np.ndarray, max_rot_deg: float,
            max_scale: float) -> np.ndarray:
    """A 2x3 map p -> L p + b in frame coordinates: rotation, anisotropic scale and shear about `centre`."""
    theta = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shear = rng.uniform(-max_scale, max_scale)
    scale_x, scale_y = 1 + rng.uniform(-max_scale, max_scale), 1 + rng.uniform(-max_scale, max_scale)
    lin = rot @ np.array([[scale_x, shear], [0.0, scale_y]])
    c = np.asarray(centre, np.float64)
    return np.concatenate([lin, (c + shift - lin @ c)[:, None]], axis=1)


def inverse_canvas_map(affine: np.ndarray) -> np.ndarray:
    """Frame-1 pixel q -> canvas position of its source: A^-1(q) + MARGIN (for WARP_INVERSE_MAP)."""
    inv = np.linalg.inv(affine[:, :2])
    return np.concatenate([inv, (MARGIN - inv @ affine[:, 2])[:, None]], axis=1)


def render_sample(rng: np.random.Generator, shapes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(img0, img1, flow): uint8 (384, 512, 3) BGR frames and the float32 (384, 512, 2) flow of img0.

    `shapes` fixes the number of shapes (tests use 0: background only); by default it is random.
    """
    cv2 = _cv2()
    ch, cw = HEIGHT + 2 * MARGIN, WIDTH + 2 * MARGIN
    frame = (slice(MARGIN, MARGIN + HEIGHT), slice(MARGIN, MARGIN + WIDTH))
    xx, yy = np.meshgrid(np.arange(WIDTH, dtype=np.float64), np.arange(HEIGHT, dtype=np.float64))

    def layer_flow(a: np.ndarray) -> np.ndarray:
        u = a[0, 0] * xx + a[0, 1] * yy + a[0, 2] - xx
        v = a[1, 0] * xx + a[1, 1] * yy + a[1, 2] - yy
        return np.stack([u, v], axis=-1)

    def warp(src: np.ndarray, a: np.ndarray, border: int) -> np.ndarray:
        return cv2.warpAffine(src, inverse_canvas_map(a), (WIDTH, HEIGHT),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)

    background = _texture(rng, ch, cw)
    pan = np.asarray(BG_PAN_MEAN) + rng.normal(0.0, BG_PAN_STD, 2)
    bg_affine = _affine(rng, ((WIDTH - 1) / 2, (HEIGHT - 1) / 2), pan, BG_MAX_ROTATION_DEG, BG_MAX_SCALE)
    img0 = background[frame].copy()
    flow = layer_flow(bg_affine)
    img1 = warp(background, bg_affine, cv2.BORDER_REFLECT101)
    if shapes is None:
        shapes = int(rng.integers(SHAPES_PER_SAMPLE[0], SHAPES_PER_SAMPLE[1] + 1))
    for _ in range(shapes):
        mask = _shape_mask(rng, ch, cw)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        # Texture only the shape's bounding box: the mask is zero elsewhere, so nothing else is seen.
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        texture = np.zeros((ch, cw, 3), np.float32)
        texture[y0:y1, x0:x1] = _texture(rng, y1 - y0, x1 - x0)
        centre = (xs.mean() - MARGIN, ys.mean() - MARGIN)
        affine = _affine(rng, centre, rng.uniform(-SHAPE_MAX_SHIFT, SHAPE_MAX_SHIFT, 2), SHAPE_MAX_ROTATION_DEG,
                         SHAPE_MAX_SCALE)
        top = mask[frame].astype(bool)
        img0[top] = texture[frame][top]
        flow[top] = layer_flow(affine)[top]
        alpha = warp(mask.astype(np.float32), affine, cv2.BORDER_CONSTANT)[..., None]
        img1 = img1 * (1.0 - alpha) + warp(texture, affine, cv2.BORDER_CONSTANT) * alpha
    to_u8 = lambda x: np.clip(np.rint(x), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(img0), to_u8(img1), flow.astype(np.float32)


def _prepare_split_dir(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {f"{i:07d}" for i in range(count)}
    stale = sorted(name for name in os.listdir(directory)
                   if (m := SAMPLE_FILE.match(name)) and m.group(1) not in wanted)
    if stale:
        raise DataError(f"{directory} already holds {len(stale)} sample files that this render would not "
                        f"overwrite (e.g. {stale[0]}); remove the folder or choose another --out")


def write_sample(directory: str | os.PathLike, sample_id: int | str, img0: np.ndarray, img1: np.ndarray,
                 flow: np.ndarray) -> None:
    """Write one sample in FC2 layout: BGR uint8 frames as PNG, (H, W, 2) flow as .flo."""
    cv2 = _cv2()
    stem = os.path.join(os.fspath(directory), f"{int(sample_id):07d}")
    for path, image in ((stem + IMG0_SUFFIX, img0), (stem + IMG1_SUFFIX, img1)):
        if not cv2.imwrite(path, image):
            raise DataError(f"{path}: cannot write PNG")
    flo.write_flo(stem + FLOW_SUFFIX, flow)


def _write_sample(directory: Path, split_index: int, seed: int, index: int) -> None:
    rng = np.random.default_rng([seed, split_index, index])
    write_sample(directory, index, *render_sample(rng))


def render_demo_dataset(out_dir: str | os.PathLike, n_train: int, n_val: int, seed: int) -> None:
    """Write `out_dir/train` (n_train samples) and `out_dir/val` (n_val) in FlyingChairs2 layout."""
    if n_train < 0 or n_val < 0 or seed < 0:
        raise ValueError(f"sample counts and seed must be >= 0, got train={n_train} val={n_val} seed={seed}")
    _cv2()
    out = Path(out_dir)
    counts = {"train": n_train, "val": n_val}
    for split, count in counts.items():
        _prepare_split_dir(out / split, count)
    jobs = [(out / split, SPLITS[split], i) for split, count in counts.items() for i in range(count)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            Reporter(f"rendering {n_train} train + {n_val} val samples", len(jobs), unit="sample",
                     every_seconds=10.0) as bar:
        for _ in pool.map(lambda job: _write_sample(job[0], job[1], seed, job[2]), jobs):
            bar.update()
    meta = {"generator": "edgeflow demo-data", "version": DEMO_VERSION, "seed": seed, "train": n_train,
            "val": n_val, "height": HEIGHT, "width": WIDTH, "background_pan_mean_uv": list(BG_PAN_MEAN)}
    (out / "demo.json").write_text(json.dumps(meta, indent=2) + "\n")
