"""Render small real data sets in FlyingThings3D and MPI-Sintel layout: sequences with exact flow.

A scene is the demo's textured background and shapes (edgeflow/data/demo.py), each layer k moving by
its own affine step A_k from one frame to the next: frame t shows layer k through A_k^t. The into_future
flow of a pixel of frame t is A_k(p) - p and the into_past flow A_k^-1(p) - p, for the top layer k at p
in frame t, so the labels are exact by construction (the layer masks are warped with nearest-neighbour
sampling, so every pixel belongs to exactly one layer). FT3D's right camera sees every layer shifted by
its own disparity D_k: its flow is D_k A_k D_k^-1 (p) - p. The final pass is the clean frame blurred,
fogged and with noise, as Sintel's and FT3D's final passes add effects to the same motion.

FT3D flow is written as PFM (edgeflow/data/pfm.py: little-endian, rows bottom to top, u, v and a
third channel of zeros) and Sintel flow as Middlebury .flo. Deterministic for a seed: scene i of a part
draws from its own generator seeded by (seed, part, i). Only ever used when asked for.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeflow.data import demo, flo, ft3d, pfm, sintel
from edgeflow.data.samples import DataError
from edgeflow.progress import Reporter

FT3D_SIZE = (540, 960)
SINTEL_SIZE = (436, 1024)
FT3D_FIRST_FRAME = 6  # FlyingThings3D numbers a scene's frames 0006-0015
SINTEL_FIRST_FRAME = 1
FT3D_SETS = ("A", "B", "C")
LAYOUT_VERSION = 1


@dataclass
class Layer:
    texture: np.ndarray  # float32 canvas (h + 2 MARGIN, w + 2 MARGIN, 3)
    mask: np.ndarray | None  # uint8 canvas; None: the background (everywhere)
    step: np.ndarray  # 3x3 affine of one frame step, frame coordinates
    disparity: float  # px the right camera sees this layer shifted left by


def _h(a: np.ndarray) -> np.ndarray:
    return np.vstack([a, [0.0, 0.0, 1.0]])


def make_scene(rng: np.random.Generator, height: int, width: int) -> list[Layer]:
    """The layers of one scene: a background and 3-6 shapes, each with its motion and disparity."""
    scale = min(height / demo.HEIGHT, width / demo.WIDTH)
    ch, cw = height + 2 * demo.MARGIN, width + 2 * demo.MARGIN
    pan = (np.asarray(demo.BG_PAN_MEAN) + rng.normal(0.0, demo.BG_PAN_STD, 2)) * max(scale, 0.25)
    bg = demo._affine(rng, ((width - 1) / 2, (height - 1) / 2), pan, demo.BG_MAX_ROTATION_DEG, demo.BG_MAX_SCALE)
    layers = [Layer(demo._texture(rng, ch, cw), None, _h(bg), float(rng.uniform(1.0, 3.0)) * max(scale, 0.25))]
    for _ in range(int(rng.integers(3, 7))):
        mask = demo._shape_mask(rng, ch, cw, scale=max(scale, 0.2))
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        texture = np.zeros((ch, cw, 3), np.float32)
        texture[y0:y1, x0:x1] = demo._texture(rng, y1 - y0, x1 - x0)
        centre = (xs.mean() - demo.MARGIN, ys.mean() - demo.MARGIN)
        shift = rng.uniform(-demo.SHAPE_MAX_SHIFT, demo.SHAPE_MAX_SHIFT, 2) * max(scale, 0.25) / 2
        step = demo._affine(rng, centre, shift, demo.SHAPE_MAX_ROTATION_DEG / 2, demo.SHAPE_MAX_SCALE / 2)
        layers.append(Layer(texture, mask, _h(step), float(rng.uniform(3.0, 12.0)) * max(scale, 0.25)))
    return layers


def render_view(layers: list[Layer], frames: int, height: int, width: int,
                right: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(frames uint8 BGR, into_future flows, into_past flows) of `frames` frames seen by one camera."""
    cv2 = demo._cv2()
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    images, future, past = [], [], []
    for t in range(frames):
        image = np.zeros((height, width, 3), np.float32)
        fut = np.zeros((height, width, 2), np.float64)
        pst = np.zeros((height, width, 2), np.float64)
        for layer in layers:
            view = np.array([[1.0, 0.0, -layer.disparity if right else 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            position = view @ np.linalg.matrix_power(layer.step, t)  # layer -> frame t of this camera
            canvas_map = demo.inverse_canvas_map(position[:2])
            border = cv2.BORDER_REFLECT101 if layer.mask is None else cv2.BORDER_CONSTANT
            texture = cv2.warpAffine(layer.texture, canvas_map, (width, height),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border)
            if layer.mask is None:
                top = np.ones((height, width), bool)
            else:
                top = cv2.warpAffine(layer.mask, canvas_map, (width, height),
                                     flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_CONSTANT).astype(bool)
            image[top] = texture[top]
            inverse_view = np.linalg.inv(view)
            for target, motion in ((fut, view @ layer.step @ inverse_view),
                                   (pst, view @ np.linalg.inv(layer.step) @ inverse_view)):
                u = motion[0, 0] * xx + motion[0, 1] * yy + motion[0, 2] - xx
                v = motion[1, 0] * xx + motion[1, 1] * yy + motion[1, 2] - yy
                target[top] = np.stack([u, v], axis=-1)[top]
        images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
        future.append(fut.astype(np.float32))
        past.append(pst.astype(np.float32))
    return images, future, past


def final_pass(rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """The clean frame with the final pass's effects: blur, a coloured fog and sensor noise."""
    cv2 = demo._cv2()
    blurred = cv2.GaussianBlur(clean.astype(np.float32), (0, 0), 1.0)
    fog = rng.uniform(120, 200, 3).astype(np.float32)
    noisy = 0.85 * blurred + 0.15 * fog + rng.normal(0.0, 3.0, clean.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _write_png(path: str, image: np.ndarray) -> None:
    cv2 = demo._cv2()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, image):
        raise DataError(f"{path}: cannot write PNG")


def _prepare(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


def _run(jobs: Sequence[Callable[[], None]], label: str) -> None:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            Reporter(label, len(jobs), unit="scene", every_seconds=10.0) as bar:
        for _ in pool.map(lambda job: job(), jobs):
            bar.update()


def _ft3d_scene(out: Path, part: str, index: int, seed: int, frames: int, size: tuple[int, int],
                cameras: tuple[str, ...]) -> None:
    rng = np.random.default_rng([seed, 0 if part == "TRAIN" else 1, index])
    height, width = size
    layers = make_scene(rng, height, width)
    set_, scene = FT3D_SETS[index % len(FT3D_SETS)], f"{index // len(FT3D_SETS):04d}"
    root = str(out)
    for camera in cameras:
        images, future, past = render_view(layers, frames, height, width, right=camera == "right")
        for k in range(frames):
            t = FT3D_FIRST_FRAME + k
            _write_png(ft3d.frame_path(root, "clean", part, set_, scene, camera, t), images[k])
            _write_png(ft3d.frame_path(root, "final", part, set_, scene, camera, t), final_pass(rng, images[k]))
            for direction, flow in (("into_future", future[k]), ("into_past", past[k])):
                path = ft3d.flow_path(root, part, set_, scene, direction, camera, t)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                pfm.write_pfm(path, pfm.flow_to_pfm(flow))


def render_ft3d(out_dir: str | os.PathLike[str], *, scenes: int, test_scenes: int, frames: int, seed: int,
                size: tuple[int, int] = FT3D_SIZE, cameras: tuple[str, ...] = ("left",)) -> None:
    """FlyingThings3D layout under `out_dir`: `scenes` TRAIN and `test_scenes` TEST scenes (sets A, B, C
    in turn) of `frames` frames each (numbered from 0006), clean and final pass, the given cameras, PFM
    flow into the future and the past."""
    if scenes < 0 or test_scenes < 0 or frames < 2 or seed < 0:
        raise ValueError(f"need scenes, test scenes, seed >= 0 and frames >= 2, got scenes={scenes} "
                         f"test={test_scenes} frames={frames} seed={seed}")
    demo._cv2()
    out = Path(out_dir)
    _prepare(out)
    jobs = [functools.partial(_ft3d_scene, out, part, i, seed, frames, size, cameras)
            for part, count in (("TRAIN", scenes), ("TEST", test_scenes)) for i in range(count)]
    _run(jobs, f"rendering FlyingThings3D: {scenes} + {test_scenes} scenes of {frames} frames")
    _meta(out, "ft3d", seed=seed, scenes=scenes, test_scenes=test_scenes, frames=frames, height=size[0],
          width=size[1], cameras=list(cameras))


def _sintel_scene(out: Path, index: int, seed: int, frames: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng([seed, 2, index])
    height, width = size
    images, future, _ = render_view(make_scene(rng, height, width), frames, height, width)
    root, scene = str(out), f"scene_{index + 1}"
    for k in range(frames):
        n = SINTEL_FIRST_FRAME + k
        _write_png(sintel.frame_path(root, "clean", scene, n), images[k])
        _write_png(sintel.frame_path(root, "final", scene, n), final_pass(rng, images[k]))
        if k < frames - 1:  # Sintel has no flow for a scene's last frame
            path = sintel.flow_path(root, scene, n)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            flo.write_flo(path, future[k])


def render_sintel(out_dir: str | os.PathLike[str], *, scenes: int, frames: int, seed: int,
                  size: tuple[int, int] = SINTEL_SIZE) -> None:
    """MPI-Sintel's training layout under `out_dir`: `scenes` scenes of `frames` frames (frame_0001...),
    clean and final pass, .flo flow from each frame to the next."""
    if scenes < 0 or frames < 2 or seed < 0:
        raise ValueError(f"need scenes, seed >= 0 and frames >= 2, got scenes={scenes} frames={frames} seed={seed}")
    demo._cv2()
    out = Path(out_dir)
    _prepare(out)
    jobs = [functools.partial(_sintel_scene, out, i, seed, frames, size) for i in range(scenes)]
    _run(jobs, f"rendering MPI-Sintel: {scenes} scenes of {frames} frames")
    _meta(out, "sintel", seed=seed, scenes=scenes, frames=frames, height=size[0], width=size[1])


def _meta(out: Path, layout: str, **fields: object) -> None:
    meta = {"generator": "edgeflow demo-data", "layout": layout, "version": LAYOUT_VERSION, **fields}
    (out / "demo.json").write_text(json.dumps(meta, indent=2) + "\n")
