"""TensorBoard scalars and flow pictures of a run: `tensorboard --logdir outputs` shows every run by name.

Written with tf.summary into `<run>/tensorboard/`, one point per epoch with the epoch as the step, so
a requeued or resumed run continues the same curves (each start adds an event file; TensorBoard
reads them all). Which figures, under which group (`train/`, `eval/`), is the figure table's call
(edgeflow/rundir/figures.py); the pool's per-arch EPE goes under `eval_arch/<code>`.

After each evaluation, one image per picture sample (`flow/<sample id>`, see `picture_grid`) and a
text (`flow/legend`) that names the archs shown, their EPE and the colour scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.progress import significant
from edgeflow.rundir.figures import tensorboard_figures
from edgeflow.rundir.flow_samples_file import FlowSamples

GRID_COLUMNS = 4
GAP = 2  # white pixels between the tiles of a picture

PICTURE_LAYOUT = ("Top row: frame 1, frame 2, the ground-truth flow, the colour key (direction is the hue, "
                  "length the saturation, full at the ground truth's longest vector). Each further row: an "
                  "arch's predicted flow and its end-point-error map (dark 0 px, bright at its top in flow/legend), "
                  "twice: best arch left, worst right. flow/legend names the archs.")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def tag(group: str, name: str) -> str:
    """`train/loss` for train_loss (the group already says it), `eval/mean_epe`, ..."""
    return f"{group}/{name.removeprefix(group + '_')}"


class Summaries:
    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        # TensorFlow would make the folder 0755 whatever the umask; made here, it gets the umask's mode.
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.writer = tf.summary.create_file_writer(str(self.logdir))

    def write(self, event: str, fields: Mapping[str, Any]) -> None:
        """The figures of one `epoch` or `eval` event (missing or non-finite ones are left out)."""
        values = {tag(f.tensorboard, f.name): _finite(fields.get(f.name)) for f in tensorboard_figures(event)}
        arch_epe = fields.get("arch_epe") if event == "eval" else None
        if isinstance(arch_epe, Mapping):
            values.update({f"eval_arch/{code}": _finite(v) for code, v in arch_epe.items()})
        with self.writer.as_default(step=int(fields["epoch"])):
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, value)
        self.writer.flush()

    def write_pictures(self, samples: FlowSamples) -> None:
        """The flow pictures of one evaluation (the step is its epoch)."""
        grids = [picture_grid(samples, i) for i in range(len(samples.sample_ids))]
        with self.writer.as_default(step=int(samples.epoch)):
            for sample_id, grid in zip(samples.sample_ids, grids, strict=True):
                tf.summary.image(f"flow/{sample_id}", grid[None], max_outputs=1, description=PICTURE_LAYOUT)
            tf.summary.text("flow/legend", picture_legend(samples))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tile(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` on a white tile of height x width, centred (cut when larger)."""
    tile = np.full((height, width, 3), 255, np.uint8)
    h, w = min(image.shape[0], height), min(image.shape[1], width)
    top, left = (height - h) // 2, (width - w) // 2
    tile[top:top + h, left:left + w] = image[:h, :w]
    return tile


def picture_grid(samples: FlowSamples, index: int) -> np.ndarray:
    """uint8 RGB picture of one sample: frames, ground truth and colour key, then flow and EPE map of
    each arch (two archs per row), tiles the size of the flow with white gaps (PICTURE_LAYOUT)."""
    from edgeflow.data.flow_colour import colour_wheel, epe_map, epe_rgb, epe_scale, flow_rgb, flow_scale

    truth = samples.truth[index]
    height, width = truth.shape[:2]
    scale = flow_scale(truth)
    maps = [epe_map(p[index], truth) for p in samples.predicted]
    frames = samples.frames[index]
    tiles = [_tile(frames[..., :3], height, width), _tile(frames[..., 3:], height, width),
             flow_rgb(truth, scale), _tile(colour_wheel(min(height, width)), height, width)]
    for predicted, m in zip(samples.predicted, maps, strict=True):
        tiles += [flow_rgb(predicted[index], scale), epe_rgb(m, epe_scale(m))]
    tiles += [np.full((height, width, 3), 255, np.uint8)] * (-len(tiles) % GRID_COLUMNS)
    rows = len(tiles) // GRID_COLUMNS
    grid = np.full((rows * height + (rows - 1) * GAP, GRID_COLUMNS * width + (GRID_COLUMNS - 1) * GAP, 3), 255,
                   np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, GRID_COLUMNS)
        grid[r * (height + GAP):r * (height + GAP) + height, c * (width + GAP):c * (width + GAP) + width] = tile
    return grid


def picture_legend(samples: FlowSamples) -> str:
    """What the pictures of this evaluation show, in words (a TensorBoard text)."""
    from edgeflow.data.flow_colour import epe_map, epe_scale, flow_scale

    roles = ["best", "worst"] if len(samples.archs) == 2 else [f"arch {i + 1}" for i in range(len(samples.archs))]
    archs = ", ".join(f"{role} {code} (pool EPE {significant(epe)})"
                      for role, code, epe in zip(roles, samples.archs, samples.arch_epe, strict=True))
    lines = [f"epoch {samples.epoch}, BN {samples.bn_mode}: {archs}", ""]
    for i, sample_id in enumerate(samples.sample_ids):
        truth = samples.truth[i]
        maps = [epe_map(p[i], truth) for p in samples.predicted]
        epes = "; ".join(f"{code}: EPE {significant(float(np.nanmean(m)))} px, map bright at "
                         f"{significant(epe_scale(m))} px" for code, m in zip(samples.archs, maps, strict=True))
        lines.append(f"- sample {sample_id}: longest true vector {significant(flow_scale(truth))} px; {epes}")
    return "\n".join(lines)
