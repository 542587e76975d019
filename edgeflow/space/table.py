"""The supernet's layer table (protocol §2) as plain data, shared by the model and the cost model.

Light module (no TensorFlow), so `arch-info` arithmetic and the model are built from one table.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_CHANNELS = 6
OUTPUT_CHANNELS = 4  # flow (u, v) then two uncertainty channels
KERNEL_OPTIONS = (3, 5, 7)
DEPTH_OPTIONS = (1, 2, 3)  # residual blocks per depth-choice option


@dataclass(frozen=True)
class Layer:
    """One row of the table.

    kind: "conv" (fixed conv + shared BN + ReLU), "depth" (depth choice of residual blocks),
    "head" (kernel-choice conv, linear output, a scale's 4 channels) or "kconv" (kernel-choice conv
    followed by one shared BN + ReLU). `source` names the layer whose output is this layer's input
    (None = the previous feature layer). `block` is the index of the layer's digit in the arch code.
    """

    name: str
    kind: str
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    upsample: bool = False
    block: int | None = None


LAYERS: tuple[Layer, ...] = (
    Layer("E0", "conv", INPUT_CHANNELS, 32, kernel=7, stride=2),
    Layer("E1", "conv", 32, 64, kernel=5, stride=2),
    Layer("EB0", "depth", 64, 64, block=0),
    Layer("Down1", "conv", 64, 128, kernel=3, stride=2),
    Layer("EB1", "depth", 128, 128, block=1),
    Layer("Down2", "conv", 128, 256, kernel=3, stride=2),
    Layer("DB0", "depth", 256, 256, block=2),
    Layer("Up1", "conv", 256, 128, kernel=3, upsample=True),
    Layer("DB1", "depth", 128, 128, block=3),
    Layer("Up2", "conv", 128, 64, kernel=3, upsample=True),
    Layer("H0Out", "head", 64, OUTPUT_CHANNELS, block=4),
    Layer("H1", "kconv", 64, 32, upsample=True, block=5),
    Layer("H1Out", "head", 32, OUTPUT_CHANNELS, block=6),
    Layer("H2", "kconv", 32, 16, upsample=True, block=7),
    Layer("H2Out", "head", 16, OUTPUT_CHANNELS, block=8),
)
