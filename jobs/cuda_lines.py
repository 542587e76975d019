"""NVIDIA's driver rules for the CUDA lines a TensorFlow GPU image can be built on (standard library only).

Two ways a node's driver can run an image built with CUDA toolkit X.Y:

- minor-version compatibility: any driver at or above the line's minimum runs every X.y toolkit
  (a few features that need the newer driver itself, such as JIT-compiling newer PTX, excepted);
- forward compatibility: an older driver of a branch NVIDIA supports for it runs the toolkit when
  NVIDIA's `cuda-compat-X-Y` libraries (a newer user-mode libcuda) are loaded in front of the node's.
  It works on datacenter GPUs only (and a few server-ready RTX cards), never on GeForce/TITAN cards.

Sources: NVIDIA's CUDA toolkit release notes (minimum driver per line) and the CUDA Compatibility
guide (forward-compatible branches). docs/container.md explains the table for admins.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CudaLine:
    major: str
    min_driver: str                       # minor-version compatibility floor on Linux
    # (driver branch, first driver of that branch) that the line's cuda-compat package supports,
    # limited to branches below min_driver: on the others the image runs without it.
    compat_branches: tuple[tuple[int, str], ...] = ()
    supported: bool = True                # False: a line this kit does not build images for

    @property
    def compat_floor(self) -> str:
        """The lowest driver that can run the line at all (through cuda-compat), or min_driver."""
        return min((floor for _, floor in self.compat_branches), key=parse_version, default=self.min_driver)


LINES: dict[str, CudaLine] = {
    "12": CudaLine("12", "525.60.13", compat_branches=((470, "470.57.02"),)),
    # TensorFlow's last CUDA 11 build is 2.14 (CUDA 11.8); this kit's code needs a newer TensorFlow.
    "11": CudaLine("11", "450.80.02", supported=False),
}

# Substrings of GPU names (nvidia-smi --query-gpu=name) of consumer cards: no forward compatibility.
CONSUMER_GPU_MARKERS = ("GeForce", "TITAN")


def parse_version(text: str) -> tuple[int, ...]:
    """'535.54.03' -> (535, 54, 3); ValueError for anything that is not a dotted number."""
    text = text.strip()
    parts = text.split(".")
    if not text or len(parts) > 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a driver version: {text!r}")
    return tuple(int(p) for p in parts)


def line_of(cuda: str) -> CudaLine | None:
    """The line of a CUDA major.minor ('12.5' -> LINES['12']); None when unknown or empty."""
    return LINES.get(cuda.split(".")[0]) if cuda else None


def compat_branch_floor(line: CudaLine, driver: str) -> str | None:
    """The first driver of `driver`'s branch that cuda-compat supports, when the branch is supported."""
    branch = parse_version(driver)[0]
    for b, floor in line.compat_branches:
        if b == branch:
            return floor
    return None


def is_consumer_gpu(name: str) -> bool:
    return any(m.lower() in name.lower() for m in CONSUMER_GPU_MARKERS)
