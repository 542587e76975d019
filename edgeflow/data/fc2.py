"""FlyingChairs2 folders (protocol §1): find the samples of a split and check them. Light: no TensorFlow.

A sample is ``NNNNNNN-img_0.png``, ``NNNNNNN-img_1.png`` and ``NNNNNNN-flow_01.flo`` in one folder;
other files (``flow_10``, occlusions, motion boundaries) are ignored. There are no list files: the
folder is the data set. The default check reads only file headers (edgeflow/data/checks.py); a deep
scan also decodes every file, or an even sample of them, in a thread pool. Invalid samples are
excluded and reported by path, never replaced. `FolderSource` is this layout behind the data seam.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeflow.data import checks
from edgeflow.data.exclude import listed_file
from edgeflow.data.samples import LISTED, DataError, Problem, Sample, ScanOptions, SplitScan, scan_of, sort_key

IMG0_SUFFIX = "-img_0.png"
IMG1_SUFFIX = "-img_1.png"
FLOW_SUFFIX = "-flow_01.flo"
# `\Z`, not `$`: `$` also matches before a final newline, and a name ending in one is not a sample.
SAMPLE_FILE = re.compile(r"^(\d+)-(img_0\.png|img_1\.png|flow_01\.flo)\Z")
_PART = {"img_0.png": 0, "img_1.png": 1, "flow_01.flo": 2}

# Threads only wait on the file system here (open/read/stat release the GIL); on a network file
# system, where one open costs a round trip, they are what keeps a 22k-sample scan in seconds.
HEADER_WORKERS = 16
_CHUNK = 512
_DEEP_CHUNK = 8

T = TypeVar("T")


def sample_paths(directory: str | os.PathLike[str], sample_id: str) -> Sample:
    d = os.fspath(directory)
    return Sample(sample_id, os.path.join(d, sample_id + IMG0_SUFFIX), os.path.join(d, sample_id + IMG1_SUFFIX),
                  os.path.join(d, sample_id + FLOW_SUFFIX))


def check_headers(sample: Sample, min_size: tuple[int, int] | None) -> list[Problem]:
    """Header-level problems of a sample whose three files exist (empty list: fine)."""
    return checks.pair_problems(sample.img0, sample.img1, sample.flow, checks.flo_size, min_size)


def check_deep(sample: Sample) -> list[Problem]:
    """Problems found by decoding both frames and reading every flow value."""
    return checks.png_deep_problems(sample.img0, sample.img1) + checks.flo_deep_problems(sample.flow)


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
                problem = checks.irregular(entry.path)
                if problem is not None:
                    irregular.setdefault(m.group(1), []).append(problem)
    except OSError as exc:
        raise DataError(f"data folder {directory} cannot be listed: {exc.strerror or exc}") from None
    return present, irregular


def run_chunks(fn: Callable[[list[T]], list[list[Problem]]], items: list[T], workers: int,
               chunk: int = _CHUNK) -> list[list[Problem]]:
    """fn over `items` in chunks on a thread pool; one problem list per item, in order."""
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        return [p for part in chunks for p in fn(part)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [p for result in pool.map(fn, chunks) for p in result]


def deep_subset(samples: list[T], limit: int | None) -> list[T]:
    """At most `limit` samples spread evenly over the (sorted) list: the same ones on every run."""
    if limit is None or limit >= len(samples):
        return list(samples)
    return [samples[i * len(samples) // limit] for i in range(limit)]


def check_samples(directory: str, found: int, candidates: list[Sample], problems: list[Problem],
                  headers: Callable[[Sample], list[Problem]], deep: Callable[[Sample], list[Problem]],
                  options: ScanOptions, workers: int | None = None) -> SplitScan:
    """The header check of every candidate, then the deep check the options ask for: the scan of a
    split whose samples were listed (any layout; `problems` holds what listing found). Samples that use
    a file of data.exclude_list (`options.exclude`) are left out first, unchecked, and recorded."""
    listed, matched, left_out = 0, set(), []
    if options.exclude:
        kept = []
        for sample in candidates:
            hit = listed_file(sample, options.exclude)
            if hit is None:
                kept.append(sample)
                continue
            listed += 1
            matched.add(hit[1])
            left_out.append(Problem(LISTED, hit[0], f"listed in data.exclude_list ({hit[1]})"))
        candidates = kept
        problems = problems + left_out
    results = run_chunks(lambda chunk: [headers(s) for s in chunk], candidates,
                         HEADER_WORKERS if workers is None else workers)
    passed = [s for s, found_ in zip(candidates, results, strict=True) if not found_]
    problems = problems + [p for found_ in results for p in found_]
    header_passed = len(passed)
    limit = options.decode_limit(header_passed)
    checked: list[Sample] = []
    if limit != 0:
        checks.require_decoder()
        checked = deep_subset(passed, limit)
        progress = options.progress

        def deeps(chunk: list[Sample]) -> list[list[Problem]]:
            found_ = [deep(s) for s in chunk]
            if progress is not None:
                progress(len(chunk), len(checked))
            return found_

        if progress is not None:
            progress(0, len(checked))
        deep_workers = (os.cpu_count() or 1) if workers is None else workers
        # Small groups: decoding is slow enough that even a small split spreads over the threads.
        deep_results = run_chunks(deeps, checked, deep_workers, chunk=_DEEP_CHUNK)
        bad = {s.sample_id for s, found_ in zip(checked, deep_results, strict=True) if found_}
        problems += [p for found_ in deep_results for p in found_]
        passed = [s for s in passed if s.sample_id not in bad]
    scan = scan_of(directory, found, passed, problems, deep_checked=len(checked),
                   deep_candidates=header_passed if limit != 0 else 0, listed=listed)
    scan.matched_entries = matched
    return scan


HEADERS_ONLY = ScanOptions()


def scan_split(directory: str | os.PathLike[str], options: ScanOptions = HEADERS_ONLY, *,
               workers: int | None = None) -> SplitScan:
    """Find and check every sample in `directory`. Raises DataError when the folder does not exist."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        what = "is not a folder" if os.path.exists(directory) else "does not exist"
        raise DataError(f"data folder {directory} {what}")
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
    return check_samples(directory, len(present), candidates, problems,
                         lambda s: check_headers(s, options.min_size), check_deep, options, workers)


def source_files(directory: str | os.PathLike[str]) -> dict[str, list[int]]:
    """name -> [size, mtime_ns] of every sample file of a folder: what a pack's staleness is judged by."""
    out: dict[str, list[int]] = {}
    with os.scandir(os.fspath(directory)) as entries:
        for entry in entries:
            if SAMPLE_FILE.match(entry.name):
                st = entry.stat()
                out[entry.name] = [st.st_size, st.st_mtime_ns]
    return out


@dataclass(frozen=True)
class FolderSource:
    """A split read from a FlyingChairs2-layout folder."""

    split: str
    directory: str
    key: str  # data.train_dir or data.val_dir

    @property
    def location(self) -> str:
        return self.directory

    def describe(self) -> str:
        return self.directory

    def scan(self, options: ScanOptions) -> SplitScan:
        return scan_split(self.directory, options)

    def files(self) -> dict[str, list[int]]:
        return source_files(self.directory)

    def record(self) -> dict[str, Any]:
        return {"dataset": "fc2"}
