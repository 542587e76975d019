"""MPI-Sintel's training split as downloaded: find the pairs of one pass and check them. Light.

Layout under the data set's top folder (data.root)::

    training/clean/<scene>/frame_0001.png     (436x1024; final/ holds the same frames rendered with
    training/final/<scene>/frame_0001.png      motion blur, fog and the other effects)
    training/flow/<scene>/frame_0001.flo      Middlebury .flo: the flow from frame N to frame N+1

A sample is frame N and frame N+1 of one pass with frame N's flow, for N from a scene's first frame to
its second-to-last (23 scenes, 1,041 pairs per pass). The frames a scene should have run from its
first to its last number seen among its frames and flow files, so a file missing inside that range is
reported by name. The samples are plain PNG + .flo triples, read like FlyingChairs2's (the same
reader, the same checks); each file is checked once however many samples share it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from edgeflow.data import checks
from edgeflow.data.fc2 import check_samples
from edgeflow.data.samples import DataError, Problem, Sample, ScanOptions, SplitScan, sort_key

PASSES = ("clean", "final")
_FRAME = re.compile(r"^frame_(\d{4})\.png\Z")
_FLOW = re.compile(r"^frame_(\d{4})\.flo\Z")
_SCENE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def frame_path(root: str, pass_: str, scene: str, n: int) -> str:
    return os.path.join(root, "training", pass_, scene, f"frame_{n:04d}.png")


def flow_path(root: str, scene: str, n: int) -> str:
    return os.path.join(root, "training", "flow", scene, f"frame_{n:04d}.flo")


def _scenes(root: str, pass_: str) -> list[str]:
    frames, flows = os.path.join(root, "training", pass_), os.path.join(root, "training", "flow")
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"MPI-Sintel folder {root} {what}")
    for top in (frames, flows):
        if not os.path.isdir(top):
            raise DataError(f"MPI-Sintel folder {top} does not exist: {root} is not MPI-Sintel as downloaded "
                            f"(training/{pass_}/ and training/flow/)")
    return sorted(set(checks.subfolders(frames, _SCENE)) | set(checks.subfolders(flows, _SCENE)))


def list_samples(root: str, pass_: str) -> tuple[int, list[Sample], list[Problem]]:
    """(pairs found, the complete ones, problems of the others)."""
    found = 0
    complete: list[Sample] = []
    problems: list[Problem] = []
    for scene in _scenes(root, pass_):
        frames, bad = checks.numbered_files(os.path.dirname(frame_path(root, pass_, scene, 1)), _FRAME)
        flows, bad_flows = checks.numbered_files(os.path.dirname(flow_path(root, scene, 1)), _FLOW)
        problems += bad + bad_flows
        odd = {b.path for b in bad + bad_flows}
        numbers = set(frames) | set(flows) | {n + 1 for n in flows}
        if not numbers:
            continue
        first, last = min(numbers), max(numbers)
        for n in range(first, last):
            found += 1
            sample = Sample(f"{scene}-{n:04d}", frame_path(root, pass_, scene, n),
                            frame_path(root, pass_, scene, n + 1), flow_path(root, scene, n))
            if {sample.img0, sample.img1, sample.flow} & odd:
                continue
            missing = [(kind, path, what) for kind, path, what, there in (
                ("missing_img0", sample.img0, "img_0 (frame N)", n in frames),
                ("missing_img1", sample.img1, "img_1 (frame N+1)", n + 1 in frames),
                ("missing_flow", sample.flow, "the flow of frame N", n in flows)) if not there]
            problems += [Problem(kind, path, f"{what} is missing (the scene has frames {first:04d}-{last:04d})")
                         for kind, path, what in missing]
            if not missing:
                complete.append(sample)
    complete.sort(key=lambda s: sort_key(s.sample_id))
    return found, complete, problems


def scan_sintel(root: str, pass_: str, options: ScanOptions, *, workers: int | None = None) -> SplitScan:
    """Find and check every pair of one pass; DataError when `root` is not MPI-Sintel at all."""
    found, candidates, problems = list_samples(root, pass_)
    memo = checks.FileMemo()
    png_size, flo_size = memo.size(checks.png_size), memo.size(checks.flo_size)

    def header_problems(sample: Sample) -> list[Problem]:
        return checks.pair_problems(sample.img0, sample.img1, sample.flow, flo_size, options.min_size,
                                    frame_size=png_size)

    def deep_problems(sample: Sample) -> list[Problem]:
        return (memo.deep(checks.png_deep_problems, sample.img0) + memo.deep(checks.png_deep_problems, sample.img1)
                + memo.deep(checks.flo_deep_problems, sample.flow))

    return check_samples(f"{root} (MPI-Sintel training, {pass_} pass)", found, candidates, problems,
                         header_problems, deep_problems, options, workers)


def source_files(root: str, pass_: str) -> dict[str, list[int]]:
    """relative path -> [size, mtime_ns] of every frame and flow file of the pass: a pack's staleness."""
    return checks.file_stamps(root, [pair for scene in _scenes(root, pass_)
                                     for pair in ((os.path.dirname(frame_path(root, pass_, scene, 1)), _FRAME),
                                                  (os.path.dirname(flow_path(root, scene, 1)), _FLOW))])


@dataclass(frozen=True)
class SintelSource:
    """A split read from MPI-Sintel's training split under `root`, one pass."""

    split: str
    root: str
    pass_: str
    key: str = "data.root"

    @property
    def location(self) -> str:
        return self.root

    def describe(self) -> str:
        return f"{self.root} (MPI-Sintel training, {self.pass_} pass)"

    def scan(self, options: ScanOptions) -> SplitScan:
        return scan_sintel(self.root, self.pass_, options)

    def files(self) -> dict[str, list[int]]:
        return source_files(self.root, self.pass_)

    def record(self) -> dict[str, Any]:
        return {"dataset": "sintel", "part": "training", "pass": self.pass_}
