"""Flow fields and error maps as colour images, for people (the report, TensorBoard images).

Flow uses the standard colour coding of optical-flow papers (the Middlebury colour wheel of Baker et
al., ICCV 2007), computed by the `flow_vis` package: the hue is the direction, the saturation the length
relative to a scale (white is no motion; a vector longer than the scale is darkened). Frames of one
sample share one scale (its ground truth's longest vector), so a prediction's colours compare with the
truth's. End-point-error maps use a perceptual colour map from 0 px to a given maximum.

Light module: NumPy, `flow_vis` and matplotlib's colour maps (the `report` extra), no TensorFlow.
"""

from __future__ import annotations

import flow_vis
import numpy as np

EPE_COLOURMAP = "magma"


def flow_scale(*flows: np.ndarray) -> float:
    """The longest finite vector among `flows` (1.0 when there is none or all are zero)."""
    longest = 0.0
    for flow in flows:
        f = np.asarray(flow, dtype=np.float64)
        radius = np.sqrt(np.sum(np.square(f), axis=-1))
        finite = radius[np.isfinite(radius)]
        if finite.size:
            longest = max(longest, float(finite.max()))
    return longest if longest > 0 else 1.0


def flow_rgb(flow: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a flow field [H, W, 2] (x then y, image y pointing down).

    `scale`: the length shown fully saturated (default: this field's longest vector). Pixels whose
    flow is not finite are black, which no flow colour is.
    """
    f = np.asarray(flow, dtype=np.float64)
    if f.ndim != 3 or f.shape[-1] != 2:
        raise ValueError(f"flow_rgb: expected a flow field [H, W, 2], got shape {f.shape}")
    finite: np.ndarray = np.asarray(np.isfinite(f).all(axis=-1))
    clean = np.where(finite[..., None], f, 0.0)
    s = flow_scale(clean) if scale is None else float(scale)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"flow_rgb: scale must be a positive number, got {scale}")
    rgb = flow_vis.flow_uv_to_colors(clean[..., 0] / s, clean[..., 1] / s)
    rgb[~finite] = 0
    return rgb


def colour_wheel(size: int) -> np.ndarray:
    """uint8 RGB [size, size, 3]: the key of the coding, each pixel coloured as the flow pointing from
    the centre to it, full length at the rim; white outside the disc."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    field = np.stack([x - c, y - c], axis=-1) / max(c, 1.0)
    rgb = flow_rgb(field, scale=1.0)
    rgb[np.sqrt(np.sum(np.square(field), axis=-1)) > 1.0] = 255
    return rgb


def epe_map(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel end-point error [..., H, W]: the length of predicted minus true flow."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return np.sqrt(np.sum(np.square(diff), axis=-1))


def epe_scale(*maps: np.ndarray) -> float:
    """A shared top for error maps: the largest 99th percentile of their finite values (one hot pixel
    does not wash the rest out); 1.0 when there is nothing above 0."""
    top = 0.0
    for m in maps:
        values = np.asarray(m, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            top = max(top, float(np.percentile(values, 99)))
    return top if top > 0 else 1.0


def epe_rgb(epe: np.ndarray, top: float) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an error map: 0 px dark, `top` px and above bright; not finite: the top."""
    from matplotlib import colormaps

    values = np.asarray(epe, dtype=np.float64)
    scaled = np.clip(np.where(np.isfinite(values), values, top) / top, 0.0, 1.0)
    return (colormaps[EPE_COLOURMAP](scaled)[..., :3] * 255).round().astype(np.uint8)
