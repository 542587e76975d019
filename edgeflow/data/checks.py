"""Checks of single files that any data source uses: PNG frames, `.flo` flow, file types.

Light module. The header checks read a few bytes per file (a PNG's signature, IHDR and its last 12
bytes, which must be the IEND chunk, so a PNG cut short is found without decoding it; a `.flo`'s
header and size), so a whole FC2 tree takes seconds. The deep checks decode (Pillow, else OpenCV)
and read every flow value. A FIFO or device is reported by its type and never opened.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from collections.abc import Callable

from edgeflow.data import flo
from edgeflow.data.samples import DataError, Problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sII")  # chunk length, chunk type, width, height (big-endian)
# Every PNG ends with an empty IEND chunk: length 0, type, and its fixed CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def detail_of(path: str, message: str) -> str:
    """A message without the path it starts with: the report prints `path: detail` itself."""
    return message.removeprefix(f"{path}: ")


class FileProblem(Exception):
    """What is wrong with one file: a problem kind (samples.PROBLEM_KINDS) and the detail."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def irregular(path: str) -> Problem | None:
    """A problem when `path` is there but not a regular file (a FIFO blocks every open() forever)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem("unreadable", path, f"cannot stat: {exc.strerror or exc}")
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None  # a folder opens without blocking; reading it fails as `unreadable`
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return Problem("not_a_file", path, f"is {kind}, not a regular file")


def png_size(path: str) -> tuple[int, int]:
    """(height, width) from the PNG signature and IHDR chunk, after checking the file ends with IEND."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            head = os.read(fd, 24)
            tail = os.pread(fd, len(PNG_END), max(size - len(PNG_END), 0))
        finally:
            os.close(fd)
    except OSError as exc:
        raise FileProblem("unreadable", f"cannot read: {exc.strerror or exc}") from None
    if head[:8] != PNG_SIGNATURE:
        raise FileProblem("bad_png_signature", f"not a PNG file (first bytes {head[:8]!r})")
    if len(head) < 24:
        raise FileProblem("bad_png_signature", f"truncated PNG header ({len(head)} bytes)")
    length, ctype, width, height = _IHDR.unpack(head[8:24])
    if ctype != b"IHDR" or length != 13 or width == 0 or height == 0:
        raise FileProblem("bad_png_signature", f"PNG without a valid IHDR chunk (type {ctype!r}, {width}x{height})")
    if tail != PNG_END:
        raise FileProblem("truncated_png", f"PNG of {size} bytes does not end with its IEND chunk: truncated or "
                                           f"cut short while copying")
    return height, width


def flo_size(path: str) -> tuple[int, int]:
    """(height, width) of a `.flo` file after checking its header and its exact size."""
    try:
        width, height, size = flo.read_header(path)
    except OSError as exc:
        raise FileProblem("unreadable", f"cannot read: {exc.strerror or exc}") from None
    except flo.FloError as exc:
        kind = "bad_flo_magic" if "magic" in str(exc) else "bad_flo_header"
        raise FileProblem(kind, detail_of(path, str(exc))) from None
    try:
        flo.check_size(path, width, height, size)
    except flo.FloError as exc:
        raise FileProblem("flo_file_size", detail_of(path, str(exc))) from None
    return height, width


def pair_problems(img0: str, img1: str, flow: str, flow_size: Callable[[str], tuple[int, int]],
                  min_size: tuple[int, int] | None) -> list[Problem]:
    """Header-level problems of two frames and their flow (empty: fine); `flow_size` reads the flow's
    (height, width) or raises FileProblem."""
    problems: list[Problem] = []
    sizes: dict[str, tuple[int, int]] = {}
    for path in (img0, img1):
        try:
            sizes[path] = png_size(path)
        except FileProblem as bad:
            problems.append(Problem(bad.kind, path, bad.detail))
    flow_hw = None
    try:
        flow_hw = flow_size(flow)
    except FileProblem as bad:
        problems.append(Problem(bad.kind, flow, bad.detail))
    size0, size1 = sizes.get(img0), sizes.get(img1)
    if size0 and size1 and size0 != size1:
        problems.append(Problem("png_size_mismatch", img1,
                                f"img_1 is {size1[0]}x{size1[1]} but img_0 is {size0[0]}x{size0[1]} (HxW)"))
    if size0 and min_size and (size0[0] < min_size[0] or size0[1] < min_size[1]):
        problems.append(Problem("png_too_small", img0,
                                f"image is {size0[0]}x{size0[1]}, smaller than the {min_size[0]}x{min_size[1]} crop"))
    if size0 and flow_hw and flow_hw != size0:
        problems.append(Problem("flo_dims_mismatch", flow,
                                f"flow is {flow_hw[0]}x{flow_hw[1]} but img_0 is {size0[0]}x{size0[1]} (HxW)"))
    return problems


def _decodes_cv2(path: str) -> bool:
    import cv2

    return cv2.imread(path, cv2.IMREAD_COLOR) is not None


def _decodes_pillow(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # the whole zlib stream, every chunk CRC
        return True
    except (OSError, SyntaxError, ValueError):
        return False


@functools.cache
def png_decoder() -> Callable[[str], bool] | None:
    """A function telling whether a PNG decodes; None when neither Pillow nor OpenCV imports."""
    # Pillow (the `jobs` extra) first: a login node must not even try to import OpenCV; the trainer's
    # image has OpenCV. Both run libpng/zlib over the whole file, so they refuse the same files.
    try:
        import PIL.Image  # noqa: F401

        return _decodes_pillow
    except ImportError:
        pass
    try:
        import cv2  # noqa: F401

        return _decodes_cv2
    except ImportError:
        return None


def require_decoder() -> Callable[[str], bool]:
    decoder = png_decoder()
    if decoder is None:
        raise DataError("the deep check decodes images and needs OpenCV (cv2) or Pillow, neither of which can "
                        "be imported here; install the train or jobs extra, or set data.preflight_deep: headers")
    return decoder


def png_deep_problems(*paths: str) -> list[Problem]:
    decodes = require_decoder()
    return [Problem("undecodable_png", p, "PNG data cannot be decoded (corrupt or truncated)")
            for p in paths if not decodes(p)]


def flo_deep_problems(path: str) -> list[Problem]:
    """Problems found by reading every value of a `.flo` file."""
    import numpy as np

    try:
        data = flo.read_flo(path)
    except flo.FloError as exc:  # changed since the header pass
        return [Problem("flo_file_size", path, detail_of(path, str(exc)))]
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    return [Problem("nonfinite_flow", path, f"{bad} non-finite flow values")] if bad else []
