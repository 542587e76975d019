"""Checks of single files that any data source uses: PNG frames, `.flo` and `.pfm` flow, file types.

Light module. The header checks read a few bytes per file (a PNG's signature, IHDR and its last 12
bytes, which must be the IEND chunk, so a PNG cut short is found without decoding it; a `.flo`'s or a
`.pfm`'s header and size), so a whole FC2 tree takes seconds. The deep checks decode (Pillow, else
OpenCV) and read every flow value. A FIFO or device is reported by its type and never opened.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable

from edgeflow.data import flo, pfm
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


def pfm_size(path: str) -> tuple[int, int]:
    """(height, width) of a 3-channel `.pfm` flow file after checking its header and its exact size."""
    header = pfm_header(path)
    return header.height, header.width


def pfm_header(path: str) -> pfm.PfmHeader:
    """The header of a 3-channel `.pfm` flow file, after checking it and the file's exact size."""
    try:
        header, size = pfm.read_header(path)
    except OSError as exc:
        raise FileProblem("unreadable", f"cannot read: {exc.strerror or exc}") from None
    except pfm.PfmError as exc:
        raise FileProblem("bad_pfm_header", detail_of(path, str(exc))) from None
    if header.channels != 3:
        raise FileProblem("bad_pfm_header", f"a 1-channel 'Pf' PFM ({header.width}x{header.height}); flow needs "
                                            f"the 3-channel 'PF' (u, v, unused)")
    try:
        pfm.check_size(path, header, size)
    except pfm.PfmError as exc:
        raise FileProblem("pfm_file_size", detail_of(path, str(exc))) from None
    return header


def pair_problems(img0: str, img1: str, flow: str, flow_size: Callable[[str], tuple[int, int]],
                  min_size: tuple[int, int] | None, *, dims_kind: str = "flo_dims_mismatch",
                  frame_size: Callable[[str], tuple[int, int]] | None = None) -> list[Problem]:
    """Header-level problems of two frames and their flow (empty: fine); `flow_size` reads the flow's
    (height, width) or raises FileProblem, as `frame_size` (default png_size) reads a frame's."""
    problems: list[Problem] = []
    sizes: dict[str, tuple[int, int]] = {}
    read_frame = frame_size or png_size
    for path in (img0, img1):
        try:
            sizes[path] = read_frame(path)
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
        problems.append(Problem(dims_kind, flow,
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


def pfm_deep_problems(path: str) -> list[Problem]:
    """Problems found by reading every value of a `.pfm` flow file (all channels): non-finite values, or
    values that only make sense read in the other byte order (the scale's sign is wrong)."""
    import numpy as np

    try:
        header, _ = pfm.read_header(path)
        values = pfm.read_pfm(path)
        bad = pfm.implausible(values)
        if bad and pfm.implausible(pfm.read_pfm(path, byte_order="other")) == 0:
            said = "little-endian (negative)" if header.little_endian else "big-endian (positive)"
            return [Problem("pfm_byte_order", path,
                            f"its scale's sign says {said}, but {bad} values read that way are garbage "
                            f"(non-finite, subnormal or beyond {pfm.PLAUSIBLE_FLOW:g} px) while the other byte "
                            f"order reads plausible flow: the scale's sign is wrong")]
    except OSError as exc:
        return [Problem("unreadable", path, f"cannot read: {exc.strerror or exc}")]
    except pfm.PfmError as exc:  # changed since the header pass
        kind = {"unreadable": "unreadable", "size": "pfm_file_size"}.get(exc.kind, "bad_pfm_header")
        return [Problem(kind, path, detail_of(path, str(exc)))]
    nonfinite = int(values.size - np.count_nonzero(np.isfinite(values)))
    return [Problem("nonfinite_flow", path, f"{nonfinite} non-finite flow values")] if nonfinite else []


class FileMemo:
    """Each file checked once per scan, however many samples share it (a frame of a sequence is img_1
    of one sample and img_0 of the next; FT3D's flow serves both passes). Threads may race to check a
    file twice; both get the same answer."""

    def __init__(self) -> None:
        self._sizes: dict[tuple[str, str], tuple[int, int]] = {}
        self._bad: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, detail) of a file that failed
        self._deep: dict[tuple[str, str], list[Problem]] = {}

    def size(self, fn: Callable[[str], tuple[int, int]]) -> Callable[[str], tuple[int, int]]:
        """`fn` (a header check returning (height, width) or raising FileProblem), remembered per path."""
        name = fn.__name__

        def checked(path: str) -> tuple[int, int]:
            key = (name, path)
            if key not in self._sizes and key not in self._bad:
                try:
                    self._sizes[key] = fn(path)
                except FileProblem as bad:
                    self._bad[key] = (bad.kind, bad.detail)
            if key in self._bad:
                raise FileProblem(*self._bad[key])
            return self._sizes[key]

        return checked

    def deep(self, fn: Callable[[str], list[Problem]], path: str) -> list[Problem]:
        """The deep problems of one file, remembered."""
        key = (fn.__name__, path)
        if key not in self._deep:
            self._deep[key] = fn(path)
        return self._deep[key]


def numbered_files(directory: str, pattern: re.Pattern[str]) -> tuple[dict[int, str], list[Problem]]:
    """The files of `directory` whose name `pattern` matches, by the number of its first group, and a
    problem for each that is not a regular file; a missing folder holds nothing (its files are reported
    missing by the samples that need them)."""
    found: dict[int, str] = {}
    problems: list[Problem] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                m = pattern.match(entry.name)
                if not m:
                    continue
                found[int(m.group(1))] = entry.path
                if not entry.is_file():
                    problem = irregular(entry.path)
                    if problem is not None:
                        problems.append(problem)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        problems.append(Problem("not_a_file", directory, "is not a folder"))
    except OSError as exc:
        raise DataError(f"data folder {directory} cannot be listed: {exc.strerror or exc}") from None
    return found, problems


def subfolders(directory: str, pattern: re.Pattern[str] | None = None) -> list[str]:
    """Names of the folders in `directory` (matching `pattern`), sorted; none when it is missing."""
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if e.is_dir() and (pattern is None or pattern.match(e.name)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise DataError(f"data folder {directory} cannot be listed: {exc.strerror or exc}") from None


def file_stamps(root: str, folders: Iterable[tuple[str, re.Pattern[str]]]) -> dict[str, list[int]]:
    """Path relative to `root` -> [size, mtime_ns] of the numbered files of each (folder, pattern): what a
    pack compares to tell it is stale."""
    out: dict[str, list[int]] = {}
    for folder, pattern in folders:
        files, _ = numbered_files(folder, pattern)
        for path in files.values():
            st = os.stat(path)
            out[os.path.relpath(path, root)] = [st.st_size, st.st_mtime_ns]
    return out
