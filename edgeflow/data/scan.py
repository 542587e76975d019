"""Find the samples of a FlyingChairs2-layout folder and check them (protocol §1). Light: no TensorFlow.

A sample is ``NNNNNNN-img_0.png``, ``NNNNNNN-img_1.png`` and ``NNNNNNN-flow_01.flo`` in one folder;
other files (``flow_10``, occlusions, motion boundaries) are ignored. There are no list files: the
folder is the data set. The default check reads only file headers (PNG signature + IHDR, the 12-byte
``.flo`` header and the file size) so a full FC2 tree takes seconds; ``deep=True`` also decodes every
file (Pillow or OpenCV, in a thread pool), all or an even sample of them. A FIFO or device in place of
a sample file is reported by its type, never opened. Invalid samples are excluded and reported by path,
never replaced.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edgeflow import config as config_mod
from edgeflow.data import flo

IMG0_SUFFIX = "-img_0.png"
IMG1_SUFFIX = "-img_1.png"
FLOW_SUFFIX = "-flow_01.flo"
SAMPLE_FILE = re.compile(r"^(\d+)-(img_0\.png|img_1\.png|flow_01\.flo)$")
_PART = {"img_0.png": 0, "img_1.png": 1, "flow_01.flo": 2}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sII")  # chunk length, chunk type, width, height (big-endian)

# Every kind of problem, in report order, with the words the report uses for it.
PROBLEM_KINDS: dict[str, str] = {
    "missing_img0": "img_0 missing",
    "missing_img1": "img_1 missing",
    "missing_flow": "flow_01 missing",
    "not_a_file": "not a regular file (a FIFO, socket or device: opening it could hang)",
    "unreadable": "file cannot be opened or read",
    "bad_png_signature": "not a PNG (bad signature or IHDR header)",
    "png_size_mismatch": "img_1 size differs from img_0",
    "png_too_small": "image smaller than the input crop",
    "bad_flo_magic": ".flo magic is not PIEH",
    "bad_flo_header": ".flo header truncated or absurd dimensions",
    "flo_dims_mismatch": ".flo dimensions differ from img_0",
    "flo_file_size": ".flo file size != 12 + 8*w*h",
    "undecodable_png": "PNG cannot be decoded (--deep)",
    "nonfinite_flow": "flow has NaN or Inf values (--deep)",
}

# Threads only wait on the file system here (open/read/stat release the GIL); on a network file
# system, where one open costs a round trip, they are what keeps a 22k-sample scan in seconds.
HEADER_WORKERS = 16
_CHUNK = 512
_DEEP_CHUNK = 8


class DataError(Exception):
    """Data that cannot be used for training; the message names the folder or file and the counts."""


@dataclass(frozen=True)
class Sample:
    sample_id: str
    img0: str
    img1: str
    flow: str


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str


@dataclass
class SplitScan:
    directory: str
    found: int
    valid: list[Sample]
    problems: dict[str, list[str]] = field(default_factory=dict)
    # path -> what exactly is wrong with it (the first problem found for that path)
    details: dict[str, str] = field(default_factory=dict)
    deep_checked: int = 0  # samples decoded (all that passed the headers, or a sample of them)
    deep_candidates: int = 0  # samples that passed the headers (deep_checked < this: sampled)

    @property
    def invalid(self) -> int:
        return self.found - len(self.valid)


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    val_source: str  # "val_dir" or "holdout"
    holdout_seed: int | None  # set when val_source == "holdout"
    train_scan: SplitScan
    # None when the evaluation split is a holdout carved from train_scan
    val_scan: SplitScan | None


def sample_paths(directory: str | os.PathLike, sample_id: str) -> Sample:
    d = os.fspath(directory)
    return Sample(sample_id, os.path.join(d, sample_id + IMG0_SUFFIX), os.path.join(d, sample_id + IMG1_SUFFIX),
                  os.path.join(d, sample_id + FLOW_SUFFIX))


def sort_key(sample_id: str) -> tuple[int, str]:
    return int(sample_id), sample_id


class _Bad(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def png_size(path: str) -> tuple[int, int]:
    """(height, width) from the PNG signature and IHDR chunk; reads 24 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, 24)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _Bad("unreadable", f"cannot read: {exc.strerror or exc}") from None
    if head[:8] != PNG_SIGNATURE:
        raise _Bad("bad_png_signature", f"not a PNG file (first bytes {head[:8]!r})")
    if len(head) < 24:
        raise _Bad("bad_png_signature", f"truncated PNG header ({len(head)} bytes)")
    length, ctype, width, height = _IHDR.unpack(head[8:24])
    if ctype != b"IHDR" or length != 13 or width == 0 or height == 0:
        raise _Bad("bad_png_signature", f"PNG without a valid IHDR chunk (type {ctype!r}, {width}x{height})")
    return height, width


def check_headers(sample: Sample, min_size: tuple[int, int] | None) -> list[Problem]:
    """Header-level problems of a sample whose three files exist (empty list: fine)."""
    problems: list[Problem] = []
    sizes: dict[str, tuple[int, int]] = {}
    for path in (sample.img0, sample.img1):
        try:
            sizes[path] = png_size(path)
        except _Bad as bad:
            problems.append(Problem(bad.kind, path, bad.detail))
    flo_hw = None
    try:
        width, height, size = flo.read_header(sample.flow)
        try:
            flo.check_size(sample.flow, width, height, size)
        except flo.FloError as exc:
            problems.append(Problem("flo_file_size", sample.flow, str(exc)))
        flo_hw = (height, width)
    except OSError as exc:
        problems.append(Problem("unreadable", sample.flow, f"cannot read: {exc.strerror or exc}"))
    except flo.FloError as exc:
        kind = "bad_flo_magic" if "magic" in str(exc) else "bad_flo_header"
        problems.append(Problem(kind, sample.flow, str(exc)))

    size0 = sizes.get(sample.img0)
    size1 = sizes.get(sample.img1)
    if size0 and size1 and size0 != size1:
        problems.append(Problem("png_size_mismatch", sample.img1,
                                f"img_1 is {size1[0]}x{size1[1]} but img_0 is {size0[0]}x{size0[1]} (HxW)"))
    if size0 and min_size and (size0[0] < min_size[0] or size0[1] < min_size[1]):
        problems.append(Problem("png_too_small", sample.img0,
                                f"image is {size0[0]}x{size0[1]}, smaller than the {min_size[0]}x{min_size[1]} crop"))
    if size0 and flo_hw and flo_hw != size0:
        problems.append(Problem("flo_dims_mismatch", sample.flow,
                                f"flow is {flo_hw[0]}x{flo_hw[1]} but img_0 is {size0[0]}x{size0[1]} (HxW)"))
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


def check_deep(sample: Sample) -> list[Problem]:
    """Problems found by decoding every file (Pillow, else OpenCV) and checking every flow value."""
    import numpy as np

    decodes = _png_decoder()
    if decodes is None:  # scan_split checks this before any thread starts
        raise DataError("no PNG decoder (Pillow or OpenCV) can be imported")
    problems = []
    for path in (sample.img0, sample.img1):
        if not decodes(path):
            problems.append(Problem("undecodable_png", path, "PNG data cannot be decoded (corrupt or truncated)"))
    try:
        data = flo.read_flo(sample.flow)
    except flo.FloError as exc:  # changed since the header pass
        problems.append(Problem("flo_file_size", sample.flow, str(exc)))
    else:
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        if bad:
            problems.append(Problem("nonfinite_flow", sample.flow, f"{bad} non-finite flow values"))
    return problems


@functools.cache
def _png_decoder() -> Callable[[str], bool] | None:
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


def _require_cv2() -> None:
    if _png_decoder() is None:
        raise DataError("the deep check decodes images and needs OpenCV (cv2) or Pillow, neither of which can "
                        "be imported here; install the train or jobs extra, or set data.preflight_deep: headers")


def _list_samples(directory: str) -> tuple[dict[str, list[bool]], dict[str, list[Problem]]]:
    """Sample id -> which of its three files exist; and the files that are there but not regular."""
    present: dict[str, list[bool]] = {}
    irregular: dict[str, list[Problem]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                m = SAMPLE_FILE.match(entry.name)
                if not m:
                    continue
                present.setdefault(m.group(1), [False, False, False])[_PART[m.group(2)]] = True
                problem = _irregular(entry)
                if problem is not None:
                    irregular.setdefault(m.group(1), []).append(problem)
    except OSError as exc:
        raise DataError(f"data folder {directory} cannot be listed: {exc.strerror or exc}") from None
    return present, irregular


def _irregular(entry: os.DirEntry[str]) -> Problem | None:
    # A FIFO blocks the open() of every later check (and of the trainer) forever: judged by type first.
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError as exc:
        return Problem("unreadable", entry.path, f"cannot stat: {exc.strerror or exc}")
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None  # a folder opens without blocking; reading it fails as `unreadable`
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return Problem("not_a_file", entry.path, f"is {kind}, not a regular file")


def _run_chunks(fn, items: list, workers: int, chunk: int = _CHUNK) -> list[list[Problem]]:
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        return [p for chunk in chunks for p in fn(chunk)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [p for result in pool.map(fn, chunks) for p in result]


def deep_subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most `limit` samples spread evenly over the (sorted) list: the same ones on every run."""
    if limit is None or limit >= len(samples):
        return list(samples)
    return [samples[i * len(samples) // limit] for i in range(limit)]


def scan_split(directory: str | os.PathLike, *, deep: bool = False, min_size: tuple[int, int] | None = None,
               workers: int | None = None, deep_limit: int | None = None, deep_full_max: int = 0,
               progress: Callable[[int, int], None] | None = None) -> SplitScan:
    """Find and check every sample in `directory`. Raises DataError when the folder does not exist.

    `min_size` = (height, width) of the input crop: smaller images are invalid. With `deep`, every
    sample that passed the header check is decoded, or `deep_limit` of them when more than
    `deep_full_max` passed; `progress(n, total)` is called with n=0 first, then as each group of n
    samples is decoded (from the worker threads).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        what = "is not a folder" if os.path.exists(directory) else "does not exist"
        raise DataError(f"data folder {directory} {what}")
    if deep:
        _require_cv2()
    present, irregular = _list_samples(directory)
    problems: list[Problem] = []
    candidates: list[Sample] = []
    for sample_id in sorted(present, key=sort_key):
        sample = sample_paths(directory, sample_id)
        if sample_id in irregular:
            problems.extend(irregular[sample_id])
            continue
        has0, has1, hasf = present[sample_id]
        if not has0:
            problems.append(Problem("missing_img0", sample.img0, "img_0 is missing"))
        if not has1:
            problems.append(Problem("missing_img1", sample.img1, "img_1 is missing"))
        if not hasf:
            problems.append(Problem("missing_flow", sample.flow, "flow_01 is missing"))
        if has0 and has1 and hasf:
            candidates.append(sample)

    def headers(chunk: list[Sample]) -> list[list[Problem]]:
        return [check_headers(s, min_size) for s in chunk]

    def deeps(chunk: list[Sample]) -> list[list[Problem]]:
        found = [check_deep(s) for s in chunk]
        if progress is not None:
            progress(len(chunk), len(checked))
        return found

    results = _run_chunks(headers, candidates, HEADER_WORKERS if workers is None else workers)
    passed = [s for s, found in zip(candidates, results, strict=True) if not found]
    for found in results:
        problems.extend(found)
    checked: list[Sample] = []
    header_passed = len(passed)
    if deep:
        deep_workers = (os.cpu_count() or 1) if workers is None else workers
        checked = deep_subset(passed, deep_limit if len(passed) > deep_full_max else None)
        if progress is not None:
            progress(0, len(checked))
        # Small groups: decoding is slow enough that even a small split spreads over the threads.
        deep_results = _run_chunks(deeps, checked, deep_workers, chunk=_DEEP_CHUNK)
        bad: set[str] = set()
        for sample, found in zip(checked, deep_results, strict=True):
            problems.extend(found)
            if found:
                bad.add(sample.sample_id)
        passed = [s for s in passed if s.sample_id not in bad]

    by_kind: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p.path)
        details.setdefault(p.path, p.detail)
    ordered = {kind: by_kind[kind] for kind in PROBLEM_KINDS if kind in by_kind}
    return SplitScan(directory=directory, found=len(present), valid=passed, problems=ordered, details=details,
                     deep_checked=len(checked), deep_candidates=header_passed if deep else 0)


def holdout_ids(samples: Iterable[Sample], count: int, seed: int) -> set[str]:
    """The ids of a fixed holdout: the `count` samples whose sha256(seed:id) sorts first.

    Hashing (not an RNG stream) keeps the choice identical across Python/NumPy versions and machines,
    and a sample's membership does not depend on which other samples happen to be valid.
    """
    ranked = sorted(samples, key=lambda s: hashlib.sha256(f"{seed}:{s.sample_id}".encode()).digest())
    return {s.sample_id for s in ranked[:count]}


def _describe(scan: SplitScan) -> str:
    if not scan.problems:
        return f"found {scan.found} samples"
    kinds = ", ".join(f"{len(paths)} {kind}" for kind, paths in scan.problems.items())
    return f"found {scan.found} samples, {scan.invalid} invalid: {kinds}"


def select_splits(cfg: config_mod.Config, train_scan: SplitScan, val_scan: SplitScan | None) -> Splits:
    """Turn scans into the train/eval sample lists, or raise DataError saying why training cannot start."""
    d = cfg.data
    if d.val_dir:
        if val_scan is None:
            raise DataError("data.val_dir is set but no scan of it was given")
        if config_mod.is_test_split_name(d.val_dir):
            raise DataError(f"evaluation folder {d.val_dir} is named like a test split; "
                            f"a test set is never used for selection")
        train, val, source, seed = list(train_scan.valid), list(val_scan.valid), "val_dir", None
        val_dir = val_scan.directory
    else:
        if config_mod.is_test_split_name(d.train_dir):
            raise DataError(f"the holdout would be carved from {d.train_dir}, which is named like a test split; "
                            f"a test set is never used for selection")
        if d.holdout_samples >= len(train_scan.valid):
            raise DataError(f"data.holdout_samples={d.holdout_samples} leaves no training samples: "
                            f"{train_scan.directory} has {len(train_scan.valid)} valid ({_describe(train_scan)})")
        chosen = holdout_ids(train_scan.valid, d.holdout_samples, d.holdout_seed)
        train = [s for s in train_scan.valid if s.sample_id not in chosen]
        val = [s for s in train_scan.valid if s.sample_id in chosen]
        source, seed, val_dir = "holdout", d.holdout_seed, f"holdout of {train_scan.directory}"
    if not val:
        where = val_scan.directory if val_scan is not None else train_scan.directory
        described = _describe(val_scan) if val_scan is not None else _describe(train_scan)
        raise DataError(f"no valid validation samples in {where} ({described})")
    if len(train) < cfg.train.batch_size:
        raise DataError(f"only {len(train)} valid training samples in {train_scan.directory}, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size}; {_describe(train_scan)})")
    if len(val) < cfg.eval.batch_size:
        raise DataError(f"only {len(val)} valid validation samples in {val_dir}, fewer than one batch "
                        f"(eval.batch_size={cfg.eval.batch_size})")
    return Splits(train=train, val=val, val_source=source, holdout_seed=seed, train_scan=train_scan,
                  val_scan=val_scan if d.val_dir else None)


def excluded_files(*scans: SplitScan | None) -> list[tuple[str, str, str]]:
    """(path, kind, detail) of every file that made a sample invalid, in report order."""
    out = []
    for scan in scans:
        if scan is None:
            continue
        for kind, paths in scan.problems.items():
            out += [(path, kind, scan.details.get(path, "")) for path in paths]
    return out


def check_excluded(cfg: config_mod.Config, *scans: SplitScan | None) -> None:
    """Refuse more invalid samples than data.allow_excluded_samples lets go (DataError naming them)."""
    invalid = sum(scan.invalid for scan in scans if scan is not None)
    allowed = cfg.data.allow_excluded_samples
    if invalid <= allowed:
        return
    files = excluded_files(*scans)
    shown = "; ".join(f"{path} ({kind})" for path, kind, _ in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    raise DataError(f"{invalid} invalid samples would be excluded, more than data.allow_excluded_samples="
                    f"{allowed}: {shown}{more}; fix or remove them, or set data.allow_excluded_samples={invalid} "
                    f"to train without them")


def min_size_of(cfg: config_mod.Config) -> tuple[int, int]:
    return cfg.data.input_height, cfg.data.input_width


def resolve_splits(cfg: config_mod.Config, *, deep: bool = False) -> Splits:
    """Scan `data.train_dir` (and `data.val_dir`) and return the splits; raises DataError naming the folder.

    With data.format: packed the splits come from the pack (staged first when data.stage_to_local).
    """
    if cfg.data.format == "packed":
        # Imported here: both modules build on this one.
        from edgeflow.data.pack import packed_splits
        from edgeflow.data.stage import stage_pack

        return packed_splits(cfg, stage_pack(cfg) if cfg.data.stage_to_local else cfg.data.packed_dir)
    train_scan = scan_split(cfg.data.train_dir, deep=deep, min_size=min_size_of(cfg))
    val_scan = scan_split(cfg.data.val_dir, deep=deep, min_size=min_size_of(cfg)) if cfg.data.val_dir else None
    return select_splits(cfg, train_scan, val_scan)
