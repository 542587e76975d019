"""The flow pictures of a run's latest evaluation, drawn from flow_samples.npz (design §2).

Per eval sample one row: frame 1, frame 2, the ground truth, then each picture arch's predicted flow
and its end-point-error map (best arch first, each map with its own colour bar in px), and the colour key. Flow
in the standard colour coding (edgeflow/data/flow_colour.py), one scale per sample: the ground truth's
longest vector, so a prediction's colours compare with the truth's. matplotlib, no TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeflow.data.flow_colour import EPE_COLOURMAP, colour_wheel, epe_map, epe_scale, flow_rgb, flow_scale
from edgeflow.progress import significant
from edgeflow.rundir.flow_samples_file import FlowSamples

TILE_INCHES = 1.75


def roles(samples: FlowSamples) -> list[str]:
    """What each picture arch is: best and worst of the pool, or the one arch."""
    if len(samples.archs) == 2:
        return ["best", "worst"]
    if len(samples.archs) == 1:
        return ["arch"]
    return [f"arch {i + 1}" for i in range(len(samples.archs))]


def height_inches(samples: FlowSamples) -> float:
    n, (h, w) = len(samples.sample_ids), samples.truth.shape[1:3]
    return n * TILE_INCHES * h / w + 0.9 + 0.35 * n


def draw(subfig: Any, name: str, samples: FlowSamples) -> None:
    """The pictures of one run into a matplotlib SubFigure."""
    n, a = len(samples.sample_ids), len(samples.archs)
    columns = 3 + 2 * a
    axes = subfig.subplots(n, columns + 1, squeeze=False, gridspec_kw={"width_ratios": [1.0] * columns + [0.6]})
    subfig.suptitle(f"{name}: flow of {n} eval samples at the epoch-{samples.epoch} evaluation (BN "
                    f"{samples.bn_mode}); hue = direction, saturation = length (full at the ground truth's "
                    f"longest vector)", fontsize=10)
    titles = ["frame 1", "frame 2", "ground truth"]
    for role, code, epe in zip(roles(samples), samples.archs, samples.arch_epe, strict=True):
        titles += [f"{role}: {code}\n(pool EPE {significant(epe)})", "its end-point error (px)"]
    for r in range(n):
        truth = samples.truth[r]
        scale = flow_scale(truth)
        maps = [epe_map(p[r], truth) for p in samples.predicted]
        row = axes[r]
        frames = samples.frames[r]
        row[0].imshow(frames[..., :3])
        row[1].imshow(frames[..., 3:])
        row[2].imshow(flow_rgb(truth, scale))
        row[2].set_xlabel(f"longest {significant(scale, 3)} px", fontsize=8)
        for k, (predicted, m) in enumerate(zip(samples.predicted, maps, strict=True)):
            row[3 + 2 * k].imshow(flow_rgb(predicted[r], scale))
            # Each map on its own scale, so the best arch's errors stay visible next to a far worse arch.
            top = epe_scale(m)
            image = row[4 + 2 * k].imshow(np.where(np.isfinite(m), m, top), cmap=EPE_COLOURMAP, vmin=0, vmax=top)
            row[4 + 2 * k].set_xlabel(f"EPE {significant(float(np.nanmean(m)))} px", fontsize=8)
            bar = subfig.colorbar(image, ax=row[4 + 2 * k], fraction=0.05, pad=0.02)
            bar.ax.tick_params(labelsize=6)
        for c, ax in enumerate(row[:columns]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        row[0].set_ylabel(f"sample {samples.sample_ids[r]}", fontsize=8)
        key = row[columns]
        key.axis("off")
        if r == 0:
            key.imshow(colour_wheel(101))
            key.set_title("flow colours", fontsize=8)
