"""Analytic cost of an arch: parameters, output shapes and forward FLOPs (CLI `arch-info`).

Computed from the layer table alone (no TensorFlow), so it runs on a login node; tests cross-check
it against the real Supernet variables and a real forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgeflow.space.arch import BLOCK_NAMES, format_arch, parse_arch, validate_arch
from edgeflow.space.table import DEPTH_OPTIONS, INPUT_CHANNELS, KERNEL_OPTIONS, LAYERS, Layer

FLOPS_CONVENTION = ("flops = 2 x multiply-accumulates of the convolutions of the active path, "
                    "for one sample at the given input size (padding 'same', no bias)")
ELEMENTWISE_CONVENTION = ("elementwise_ops, per sample, counted apart from flops: BN 2 ops per output "
                          "element (scale and shift), ReLU 1, residual add 1, bilinear x2 upsampling "
                          "7 per output element (4 multiplies, 3 adds)")
PARAMS_CONVENTION = "trainable parameters: conv kernels (no bias) and BN gamma/beta; BN moving statistics excluded"
OUTPUT_SCALES = ("1/4", "1/2", "1/1")

_BN_OPS, _RELU_OPS, _ADD_OPS, _RESIZE_OPS = 2, 1, 1, 7


def _conv_params(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout


def _bn_params(c: int) -> int:
    return 2 * c


def _residual_params(c: int) -> int:
    return 2 * (_conv_params(3, c, c) + _bn_params(c))


def _option_params(layer: Layer, option: int | None) -> int:
    """Trainable parameters of one layer with one option (None for fixed layers)."""
    if layer.kind == "conv":
        return _conv_params(layer.kernel, layer.cin, layer.cout) + _bn_params(layer.cout)
    if option is None:
        raise ValueError(f"layer {layer.name} is a choice block and needs an option")
    if layer.kind == "depth":
        return DEPTH_OPTIONS[option] * _residual_params(layer.cin)
    if layer.kind == "head":
        return _conv_params(KERNEL_OPTIONS[option], layer.cin, layer.cout)
    if layer.kind == "kconv":
        # the BN after a kernel choice is shared by the three kernels
        return _conv_params(KERNEL_OPTIONS[option], layer.cin, layer.cout) + _bn_params(layer.cout)
    raise AssertionError(f"unknown layer kind {layer.kind!r}")


def supernet_params() -> int:
    """Trainable parameters of the whole supernet (every branch of every choice block)."""
    total = 0
    for layer in LAYERS:
        if layer.block is None:
            total += _option_params(layer, None)
        elif layer.kind == "kconv":
            total += sum(_conv_params(k, layer.cin, layer.cout) for k in KERNEL_OPTIONS) + _bn_params(layer.cout)
        else:
            total += sum(_option_params(layer, o) for o in range(3))
    return total


def _option_label(layer: Layer, option: int) -> str:
    if layer.kind == "depth":
        n = DEPTH_OPTIONS[option]
        return f"{n} residual block{'s' if n > 1 else ''}"
    k = KERNEL_OPTIONS[option]
    return f"{k}x{k} conv"


def arch_info(arch: Sequence[int] | str, height: int, width: int) -> dict[str, Any]:
    """Parameters, output shapes and forward FLOPs of `arch` for one [height, width, 6] input."""
    values = parse_arch(arch) if isinstance(arch, str) else validate_arch(arch)
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    h, w, c = int(height), int(width), INPUT_CHANNELS
    macs = elementwise = params = 0
    rows: list[dict[str, Any]] = []
    outputs: dict[str, list[int]] = {}
    for layer in LAYERS:
        option = None if layer.block is None else values[layer.block]
        if layer.cin != c:  # the table must chain; guards edits to it
            raise AssertionError(f"layer table: {layer.name} takes {layer.cin} channels, gets {c}")
        in_h, in_w = h, w
        layer_ew = 0
        if layer.upsample:
            in_h, in_w = 2 * h, 2 * w
            layer_ew += _RESIZE_OPS * in_h * in_w * layer.cin
        out_h, out_w = math.ceil(in_h / layer.stride), math.ceil(in_w / layer.stride)
        if layer.kind == "depth" and option is not None:
            blocks = DEPTH_OPTIONS[option]
            pixels = out_h * out_w * layer.cout
            layer_macs = blocks * 2 * out_h * out_w * 9 * layer.cin * layer.cout
            # per residual block: 2 BN, 2 ReLU, 1 add
            layer_ew += blocks * pixels * (2 * _BN_OPS + 2 * _RELU_OPS + _ADD_OPS)
        else:
            k = layer.kernel if option is None else KERNEL_OPTIONS[option]
            layer_macs = out_h * out_w * k * k * layer.cin * layer.cout
            if layer.kind != "head":
                layer_ew += out_h * out_w * layer.cout * (_BN_OPS + _RELU_OPS)
        layer_params = _option_params(layer, option)
        macs += layer_macs
        elementwise += layer_ew
        params += layer_params
        row = {"name": layer.name, "out_shape": [out_h, out_w, layer.cout], "params": layer_params,
               "macs": layer_macs}
        if option is not None:
            row["option"] = option
            row["choice"] = _option_label(layer, option)
        rows.append(row)
        if layer.kind == "head":
            outputs[OUTPUT_SCALES[len(outputs)]] = [out_h, out_w, layer.cout]
        else:
            h, w, c = out_h, out_w, layer.cout
    return {
        "arch": format_arch(values),
        "blocks": {name: values[i] for i, name in enumerate(BLOCK_NAMES)},
        "input_shape": [int(height), int(width), INPUT_CHANNELS],
        "params_active": params,
        "params_supernet": supernet_params(),
        "params_convention": PARAMS_CONVENTION,
        "output_shapes": outputs,
        "macs": macs,
        "flops": 2 * macs,
        "flops_convention": FLOPS_CONVENTION,
        "elementwise_ops": elementwise,
        "elementwise_convention": ELEMENTWISE_CONVENTION,
        "layers": rows,
    }
