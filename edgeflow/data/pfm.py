"""Portable Float Map (`.pfm`) files, the flow format of FlyingThings3D. NumPy only (light).

Layout: a text header of three lines, each ended by one whitespace character: ``PF`` (3 channels) or
``Pf`` (1 channel); ``width height``; a scale whose sign is the byte order (negative: little-endian,
positive: big-endian). Then width*height*channels float32 values, rows stored **bottom to top**. The
header's length varies with the numbers in it, so a reader needs it to find the data: `parse_header`
returns it with the byte order, and the TensorFlow reader (edgeflow/data/readers.py) slices the data
after it with native ops. The magnitude of the scale is not applied (FlyingThings3D writes 1.0).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Enough for any header this module accepts: 2 + 1 + 6 + 1 + 6 + 1 + a scale of up to 32 characters + 1.
MAX_HEADER_BYTES = 64
MAX_SIDE = 1 << 15  # as for .flo: a larger header is garbage, not a huge image
_WS = rb"[ \t\r\n]"
_HEADER = re.compile(rb"\A(P[Ff])" + _WS + rb"(\d{1,6})[ \t]+(\d{1,6})" + _WS
                     + rb"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)" + _WS)


class PfmError(ValueError):
    """A `.pfm` file that cannot be read or written; `kind` says how (header, size); the message starts
    with the path."""

    def __init__(self, message: str, kind: str = "header") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PfmHeader:
    channels: int        # 3 (PF) or 1 (Pf)
    width: int
    height: int
    little_endian: bool  # the scale's sign: negative
    scale: float
    text: str            # the header exactly as stored (ASCII), data starts right after it

    @property
    def bytes(self) -> int:
        return len(self.text)

    @property
    def data_bytes(self) -> int:
        return 4 * self.channels * self.width * self.height

    @property
    def file_bytes(self) -> int:
        return self.bytes + self.data_bytes


def parse_header(path: str | os.PathLike[str], head: bytes) -> PfmHeader:
    """The header at the start of `head` (the file's first MAX_HEADER_BYTES bytes, or all of a shorter
    file); PfmError naming `path` when it is not a valid PFM header."""
    m = _HEADER.match(head)
    if m is None:
        shown = head[:24]
        if not head.startswith(b"P"):
            raise PfmError(f"{path}: not a PFM file (first bytes {shown!r}, expected 'PF' or 'Pf')")
        raise PfmError(f"{path}: malformed or truncated PFM header (starts {shown!r}; expected 'PF', 'width "
                       f"height' and a non-zero scale, each line ended by one whitespace character)")
    kind, width, height, scale_text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    scale = float(scale_text)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PfmError(f"{path}: absurd PFM dimensions {width}x{height} (width x height; each must be 1..{MAX_SIDE})")
    if scale == 0.0 or not np.isfinite(scale):
        raise PfmError(f"{path}: PFM scale {scale_text.decode()!r} is zero or not finite: its sign must give the "
                       f"byte order")
    return PfmHeader(channels=3 if kind == b"PF" else 1, width=width, height=height, little_endian=scale < 0,
                     scale=scale, text=head[:m.end()].decode("ascii"))


def read_header(path: str | os.PathLike[str]) -> tuple[PfmHeader, int]:
    """Read only the header and the file size: (header, file_size). Raises PfmError or OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = os.read(fd, MAX_HEADER_BYTES)
    finally:
        os.close(fd)
    return parse_header(path, head), size


def check_size(path: str | os.PathLike[str], header: PfmHeader, size: int) -> None:
    """PfmError (kind "size") unless the file is exactly the header plus its data."""
    want = header.file_bytes
    what = f"a {header.width}x{header.height} {header.channels}-channel PFM"
    if size < want:
        raise PfmError(f"{path}: truncated PFM: {size} bytes, {what} needs {want}", kind="size")
    if size > want:
        raise PfmError(f"{path}: {size - want} trailing bytes after {what} ({size} bytes, expected {want}): the "
                       f"header does not match the data", kind="size")


def _values(path: str | os.PathLike[str], header: PfmHeader, little_endian: bool) -> np.ndarray:
    dtype = np.dtype("<f4" if little_endian else ">f4")
    with open(path, "rb") as fh:
        fh.seek(header.bytes)
        data = np.fromfile(fh, dtype=dtype, count=header.channels * header.width * header.height)
    if data.size != header.channels * header.width * header.height:  # the file shrank after the header check
        raise PfmError(f"{path}: truncated PFM: {data.size} of {header.channels * header.width * header.height} "
                       f"values", kind="size")
    # Rows are stored bottom to top: flip them so row 0 is the top of the image.
    return data.astype(np.float32).reshape(header.height, header.width, header.channels)[::-1]


def read_pfm(path: str | os.PathLike[str], *, byte_order: str = "header") -> np.ndarray:
    """Read a PFM as float32 (H, W, C), row 0 at the top. `byte_order` "header" follows the scale's sign;
    "other" reads the opposite order (what the deep check compares against). Raises PfmError."""
    try:
        header, size = read_header(path)
        check_size(path, header, size)
        little = header.little_endian if byte_order == "header" else not header.little_endian
        return _values(path, header, little)
    except OSError as exc:
        raise PfmError(f"{path}: cannot read: {exc.strerror or exc}", kind="unreadable") from None


def write_pfm(path: str | os.PathLike[str], data: np.ndarray, *, little_endian: bool = True) -> None:
    """Write float (H, W, 3) or (H, W) data as a PFM (rows bottom to top, scale -1.0 or 1.0)."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] not in (1, 3):
        raise PfmError(f"{path}: PFM data must have shape (H, W, 3) or (H, W), got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating):
        raise PfmError(f"{path}: PFM data must be floating point, got {data.dtype}")
    height, width, channels = data.shape
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PfmError(f"{path}: cannot write a {width}x{height} PFM (each side must be 1..{MAX_SIDE})")
    header = f"{'PF' if channels == 3 else 'Pf'}\n{width} {height}\n{-1.0 if little_endian else 1.0}\n"
    values = np.ascontiguousarray(data[::-1], dtype="<f4" if little_endian else ">f4")
    try:
        Path(path).write_bytes(header.encode("ascii") + values.tobytes())
    except OSError as exc:
        raise PfmError(f"{path}: cannot write: {exc.strerror or exc}", kind="unreadable") from None


def flow_to_pfm(flow: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow as FlyingThings3D stores it: u, v and an unused third channel of zeros."""
    flow = np.asarray(flow, dtype=np.float32)
    return np.concatenate([flow, np.zeros(flow.shape[:2] + (1,), np.float32)], axis=-1)


# Values a flow field never holds in the byte order it was written in: what a byte-swapped read gives.
PLAUSIBLE_FLOW = 1e5   # px: far beyond any image's size
_SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)


def implausible(values: np.ndarray) -> int:
    """How many values no real flow holds: non-finite, beyond PLAUSIBLE_FLOW px, or subnormal (the
    tiny numbers small floats turn into when their bytes are read in the wrong order)."""
    magnitude = np.abs(values)
    finite = np.isfinite(values)
    return int(np.size(values) - np.count_nonzero(finite)
               + np.count_nonzero(finite & (magnitude > PLAUSIBLE_FLOW))
               + np.count_nonzero((magnitude > 0) & (magnitude < _SMALLEST_NORMAL)))
