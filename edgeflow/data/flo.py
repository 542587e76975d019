"""Middlebury `.flo` optical-flow files (protocol §1), NumPy only.

Layout: the 4 bytes ``PIEH`` (float32 202021.25, little-endian), int32 width, int32 height, then
width*height*2 float32 (u, v interleaved, row-major). Every value is little-endian whatever the host.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"PIEH"  # the bytes of float32 202021.25 in little-endian order
MAGIC_FLOAT = 202021.25
HEADER_BYTES = 12
# Far above any real flow field (FC2 is 384x512); a larger header is garbage, not a huge image,
# and must not make a reader try to allocate terabytes.
MAX_SIDE = 1 << 15

_HEADER = struct.Struct("<4sii")
_DTYPE = np.dtype("<f4")


class FloError(ValueError):
    """A `.flo` file that cannot be read or written; the message starts with the path."""


def expected_size(width: int, height: int) -> int:
    """The exact byte size of a `.flo` file of this size (384x512: 1,572,876)."""
    return HEADER_BYTES + 8 * width * height


def parse_header(path: str | os.PathLike, header: bytes) -> tuple[int, int]:
    """Check a 12-byte header; returns (width, height) or raises FloError naming `path`."""
    if len(header) < HEADER_BYTES:
        raise FloError(f"{path}: truncated .flo header ({len(header)} of {HEADER_BYTES} bytes)")
    magic, width, height = _HEADER.unpack(header[:HEADER_BYTES])
    if magic != MAGIC:
        raise FloError(f"{path}: not a .flo file (magic {magic!r}, expected {MAGIC!r} = float32 {MAGIC_FLOAT})")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise FloError(f"{path}: absurd .flo dimensions {width}x{height} (width x height; each must be 1..{MAX_SIDE})")
    return width, height


def read_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """Read only the header and the file size: (width, height, file_size). Raises FloError or OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        header = os.read(fd, HEADER_BYTES)
    finally:
        os.close(fd)
    width, height = parse_header(path, header)
    return width, height, size


def check_size(path: str | os.PathLike, width: int, height: int, size: int) -> None:
    want = expected_size(width, height)
    if size < want:
        raise FloError(f"{path}: truncated .flo: {size} bytes, a {width}x{height} flow needs {want}")
    if size > want:
        raise FloError(f"{path}: {size - want} trailing bytes after a {width}x{height} flow "
                       f"({size} bytes, expected {want}): the header does not match the data")


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a `.flo` file as float32 (H, W, 2) with u in [..., 0] and v in [..., 1]."""
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_BYTES)
            width, height = parse_header(path, header)
            check_size(path, width, height, os.fstat(f.fileno()).st_size)
            data = np.fromfile(f, dtype=_DTYPE, count=2 * width * height)
    except OSError as exc:
        raise FloError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.size != 2 * width * height:  # the file shrank between stat and read
        raise FloError(f"{path}: truncated .flo: {data.size} of {2 * width * height} values")
    return data.astype(np.float32, copy=False).reshape(height, width, 2)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write float (H, W, 2) flow as a `.flo` file (values converted to float32)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise FloError(f"{path}: flow must have shape (H, W, 2), got {flow.shape}")
    height, width = flow.shape[:2]
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise FloError(f"{path}: cannot write a {width}x{height} flow (each side must be 1..{MAX_SIDE})")
    if not np.issubdtype(flow.dtype, np.floating):
        raise FloError(f"{path}: flow must be floating point, got {flow.dtype}")
    payload = _HEADER.pack(MAGIC, width, height) + np.ascontiguousarray(flow, dtype=_DTYPE).tobytes()
    try:
        Path(path).write_bytes(payload)
    except OSError as exc:
        raise FloError(f"{path}: cannot write: {exc.strerror or exc}") from None
