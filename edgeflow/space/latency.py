"""A latency figure for the search: a roofline estimate from the analytic cost model (no measurement).

Per layer of the active path, time = max(FLOPs / peak FLOP/s, bytes moved / memory bandwidth); the
arch's figure is the sum over layers, in milliseconds for one sample. Bytes moved per layer count the
weights once, the input feature map read by each convolution, its output written, the bilinear
upsampling's read and write and, in a residual block, the skip read and the add's write. Values are
`BYTES_PER_VALUE` wide (float32). The device is a reference edge GPU, not a real one: the figure ranks
archs by what dominates on small devices (memory traffic at high resolution, compute in the deep
blocks); it is not a prediction of milliseconds on any product.

Light module (no TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgeflow.space.arch import parse_arch, validate_arch
from edgeflow.space.table import DEPTH_OPTIONS, INPUT_CHANNELS, KERNEL_OPTIONS, LAYERS

BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float       # sustained convolution FLOP/s
    bandwidth: float        # sustained memory bandwidth, bytes/s


REFERENCE_EDGE = Device("reference-edge-gpu", peak_flops=1.0e12, bandwidth=50.0e9)
LATENCY_CONVENTION = (f"latency_ms: roofline estimate on {REFERENCE_EDGE.name} "
                      f"({REFERENCE_EDGE.peak_flops / 1e12:g} TFLOP/s, {REFERENCE_EDGE.bandwidth / 1e9:g} GB/s, "
                      f"{BYTES_PER_VALUE}-byte values), sum over layers of max(compute, memory) time, one sample")


def latency_ms(arch: Sequence[int] | str, height: int, width: int, device: Device = REFERENCE_EDGE) -> float:
    """The roofline latency figure of `arch` for one [height, width, 6] input, in milliseconds."""
    values = parse_arch(arch) if isinstance(arch, str) else validate_arch(arch)
    h, w, c = int(height), int(width), INPUT_CHANNELS
    total = 0.0
    for layer in LAYERS:
        option = None if layer.block is None else values[layer.block]
        in_h, in_w = h, w
        moved = 0  # values read or written
        if layer.upsample:
            in_h, in_w = 2 * h, 2 * w
            moved += h * w * c + in_h * in_w * c
        out_h, out_w = math.ceil(in_h / layer.stride), math.ceil(in_w / layer.stride)
        in_elems, out_elems = in_h * in_w * layer.cin, out_h * out_w * layer.cout
        if layer.kind == "depth" and option is not None:
            blocks = DEPTH_OPTIONS[option]
            macs = blocks * 2 * out_h * out_w * 9 * layer.cin * layer.cout
            weights = blocks * 2 * 9 * layer.cin * layer.cout
            # two convs (read + write each), then the skip read and the sum written
            moved += blocks * (2 * (in_elems + out_elems) + 2 * out_elems)
        else:
            k = layer.kernel if option is None else KERNEL_OPTIONS[option]
            macs = out_h * out_w * k * k * layer.cin * layer.cout
            weights = k * k * layer.cin * layer.cout
            moved += in_elems + out_elems
        moved += weights
        total += max(2.0 * macs / device.peak_flops, moved * BYTES_PER_VALUE / device.bandwidth)
        if layer.kind != "head":
            h, w, c = out_h, out_w, layer.cout
    return total * 1e3
