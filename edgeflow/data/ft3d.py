"""FlyingThings3D (FT3D) as downloaded: find the samples of a part (TRAIN or TEST) and check them. Light.

Layout under the data set's top folder (data.root)::

    frames_cleanpass/TRAIN/A/0000/left/0006.png          (and frames_finalpass/, TEST/, sets B and C,
    optical_flow/TRAIN/A/0000/into_future/left/           right/ for the other camera)
        OpticalFlowIntoFuture_0006_L.pfm                  (into_past/: OpticalFlowIntoPast_0006_L.pfm)

A sample of frame t of a camera is img_0 = t.png and img_1 = (t+1).png with t's into_future flow, or
img_1 = (t-1).png with its into_past flow, in the clean or the final pass (the flow is the same for
both). The frames a scene should have are the range from its first to its last frame number seen in
any selected pass, camera or direction, so a frame or flow file missing inside it is reported by name;
the last (first) frame of a scene has no into_future (into_past) partner and makes no sample.

Every file is checked once however many samples share it: header checks (PNG signature, size and end;
the PFM header and the exact file size), then a deep check decodes every PNG and every PFM value
(non-finite values, and a scale whose sign gives the wrong byte order, are refused). A valid sample
carries its flow file's header (its length is where the values start; its sign, the byte order), so
the input pipeline reads the flow with native ops (edgeflow/data/readers.py), and the flow divisor
(data.ft3d_flow_divisor: FT3D flow is divided by it before clipping).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any, cast

from edgeflow.data import checks, pfm
from edgeflow.data.fc2 import check_samples
from edgeflow.data.samples import DataError, Problem, Sample, ScanOptions, SplitScan, sort_key

PASSES = ("clean", "final")
DIRECTIONS = ("into_future", "into_past")
CAMERAS = ("left", "right")
PARTS = ("TRAIN", "TEST")
_FRAME = re.compile(r"^(\d{4})\.png\Z")
_SCENE = re.compile(r"^\d{4}\Z")
_SET = re.compile(r"^[A-Za-z0-9_]+\Z")


def _flow_pattern(direction: str, camera: str) -> re.Pattern[str]:
    word = "Future" if direction == "into_future" else "Past"
    return re.compile(rf"^OpticalFlowInto{word}_(\d{{4}})_{camera[0].upper()}\.pfm\Z")


@dataclass(frozen=True)
class Ft3dSelection:
    """Which FT3D samples a split holds (the data.ft3d_* keys), and how its flow is scaled."""

    part: str = "TRAIN"
    passes: tuple[str, ...] = PASSES
    directions: tuple[str, ...] = DIRECTIONS
    cameras: tuple[str, ...] = ("left",)
    flow_divisor: float = 12.5

    def record(self) -> dict[str, Any]:
        return {"dataset": "ft3d", "part": self.part, "passes": list(self.passes),
                "directions": list(self.directions), "cameras": list(self.cameras),
                "flow_divisor": self.flow_divisor}

    def describe(self) -> str:
        return (f"FlyingThings3D {self.part}, {'+'.join(self.passes)} pass, {'+'.join(self.cameras)} camera, "
                f"{'+'.join(d.removeprefix('into_') for d in self.directions)}")


@dataclass(frozen=True)
class Ft3dSample(Sample):
    """Two FT3D frames and a PFM flow, with what reading the PFM natively needs."""

    flow_header: str = ""       # the PFM header exactly as stored: the values start after it
    little_endian: bool = True  # the header scale's sign
    flow_height: int = 0
    flow_width: int = 0
    flow_divisor: float = 1.0   # the flow is divided by this before clipping (data.ft3d_flow_divisor)


def frame_path(root: str, pass_: str, part: str, set_: str, scene: str, camera: str, t: int) -> str:
    return os.path.join(root, f"frames_{pass_}pass", part, set_, scene, camera, f"{t:04d}.png")


def flow_path(root: str, part: str, set_: str, scene: str, direction: str, camera: str, t: int) -> str:
    word = "Future" if direction == "into_future" else "Past"
    return os.path.join(root, "optical_flow", part, set_, scene, direction, camera,
                        f"OpticalFlowInto{word}_{t:04d}_{camera[0].upper()}.pfm")


def sample_id(pass_: str, set_: str, scene: str, camera: str, direction: str, t: int) -> str:
    return f"{pass_}-{set_}-{scene}-{camera}-{direction.removeprefix('into_')}-{t:04d}"


def _top_folders(root: str, sel: Ft3dSelection) -> list[str]:
    return [os.path.join(root, f"frames_{p}pass", sel.part) for p in sel.passes] + \
        [os.path.join(root, "optical_flow", sel.part)]


def _scenes(root: str, sel: Ft3dSelection) -> list[tuple[str, str]]:
    tops = _top_folders(root, sel)
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"FlyingThings3D folder {root} (data.root) {what}")
    for top in tops:
        if not os.path.isdir(top):
            raise DataError(f"FlyingThings3D folder {top} does not exist: data.root {root} is not FlyingThings3D "
                            f"as downloaded, or lacks the {sel.describe()} files")
    scenes = {(s, n) for top in tops for s in checks.subfolders(top, _SET)
              for n in checks.subfolders(os.path.join(top, s), _SCENE)}
    return sorted(scenes)


def list_samples(root: str, sel: Ft3dSelection) -> tuple[int, list[Ft3dSample], list[Problem]]:
    """(samples found, the complete ones, problems of the others): every sample the selection asks for."""
    found = 0
    complete: list[Ft3dSample] = []
    problems: list[Problem] = []
    for set_, scene in _scenes(root, sel):
        frames: dict[tuple[str, str], dict[int, str]] = {}
        flows: dict[tuple[str, str], dict[int, str]] = {}
        odd: set[str] = set()
        for camera in sel.cameras:
            for p in sel.passes:
                folder = os.path.dirname(frame_path(root, p, sel.part, set_, scene, camera, 0))
                frames[p, camera], bad = checks.numbered_files(folder, _FRAME)
                problems += bad
                odd |= {b.path for b in bad}
            for d in sel.directions:
                folder = os.path.dirname(flow_path(root, sel.part, set_, scene, d, camera, 0))
                flows[d, camera], bad = checks.numbered_files(folder, _flow_pattern(d, camera))
                problems += bad
                odd |= {b.path for b in bad}
        numbers = {t for found_ in (*frames.values(), *flows.values()) for t in found_}
        if not numbers:
            continue
        first, last = min(numbers), max(numbers)
        for camera in sel.cameras:
            for p in sel.passes:
                for d in sel.directions:
                    step = 1 if d == "into_future" else -1
                    for t in range(first, last + 1):
                        if not first <= t + step <= last:
                            continue  # the scene's last (first) frame has no partner this way
                        found += 1
                        sample = Ft3dSample(sample_id(p, set_, scene, camera, d, t),
                                            frame_path(root, p, sel.part, set_, scene, camera, t),
                                            frame_path(root, p, sel.part, set_, scene, camera, t + step),
                                            flow_path(root, sel.part, set_, scene, d, camera, t),
                                            flow_divisor=sel.flow_divisor)
                        if {sample.img0, sample.img1, sample.flow} & odd:
                            continue  # reported as not_a_file
                        missing = [(kind, path, what) for kind, path, what, there in (
                            ("missing_img0", sample.img0, "img_0 (frame t)", t in frames[p, camera]),
                            ("missing_img1", sample.img1, "img_1 (the partner frame)", t + step in frames[p, camera]),
                            ("missing_flow", sample.flow, f"the {d} flow", t in flows[d, camera])) if not there]
                        problems += [Problem(kind, path, f"{what} is missing (the scene has frames "
                                                         f"{first:04d}-{last:04d})") for kind, path, what in missing]
                        if not missing:
                            complete.append(sample)
    complete.sort(key=lambda s: sort_key(s.sample_id))
    return found, complete, problems


def scan_ft3d(root: str, sel: Ft3dSelection, options: ScanOptions, *, workers: int | None = None) -> SplitScan:
    """Find and check every sample of the selection under `root`; DataError when it is not FT3D at all."""
    found, candidates, problems = list_samples(root, sel)
    memo = checks.FileMemo()
    headers: dict[str, pfm.PfmHeader] = {}
    png_size = memo.size(checks.png_size)

    def pfm_checked(path: str) -> tuple[int, int]:
        header = headers[path] = checks.pfm_header(path)
        return header.height, header.width

    pfm_size = memo.size(pfm_checked)

    def header_problems(sample: Sample) -> list[Problem]:
        return checks.pair_problems(sample.img0, sample.img1, sample.flow, pfm_size, options.min_size,
                                    dims_kind="pfm_dims_mismatch", frame_size=png_size)

    def deep_problems(sample: Sample) -> list[Problem]:
        return (memo.deep(checks.png_deep_problems, sample.img0) + memo.deep(checks.png_deep_problems, sample.img1)
                + memo.deep(checks.pfm_deep_problems, sample.flow))

    scan = check_samples(f"{root} ({sel.describe()})", found, list(candidates), problems, header_problems,
                         deep_problems, options, workers)
    scan.valid = [with_header(cast(Ft3dSample, s), headers[s.flow]) for s in scan.valid]
    return scan


def with_header(sample: Ft3dSample, header: pfm.PfmHeader) -> Ft3dSample:
    return dataclasses.replace(sample, flow_header=header.text, little_endian=header.little_endian,
                               flow_height=header.height, flow_width=header.width)


def sample_problems(sample: Sample, min_size: tuple[int, int] | None) -> list[Problem]:
    """Header problems of one sample, then (when there are none) what decoding its files finds."""
    problems = checks.pair_problems(sample.img0, sample.img1, sample.flow, checks.pfm_size, min_size,
                                    dims_kind="pfm_dims_mismatch")
    if problems:
        return problems
    return checks.png_deep_problems(sample.img0, sample.img1) + checks.pfm_deep_problems(sample.flow)


def source_files(root: str, sel: Ft3dSelection) -> dict[str, list[int]]:
    """relative path -> [size, mtime_ns] of every sample file of the selection: a pack's staleness."""
    folders: list[tuple[str, re.Pattern[str]]] = []
    for set_, scene in _scenes(root, sel):
        for camera in sel.cameras:
            folders += [(os.path.dirname(frame_path(root, p, sel.part, set_, scene, camera, 0)), _FRAME)
                        for p in sel.passes]
            folders += [(os.path.dirname(flow_path(root, sel.part, set_, scene, d, camera, 0)),
                         _flow_pattern(d, camera)) for d in sel.directions]
    return checks.file_stamps(root, folders)


@dataclass(frozen=True)
class Ft3dSource:
    """A split read from FlyingThings3D under `root` (data.root, or an evaluation split's root)."""

    split: str
    root: str
    selection: Ft3dSelection
    key: str = "data.root"

    @property
    def location(self) -> str:
        return self.root

    def describe(self) -> str:
        return f"{self.root} ({self.selection.describe()})"

    def scan(self, options: ScanOptions) -> SplitScan:
        return scan_ft3d(self.root, self.selection, options)

    def files(self) -> dict[str, list[int]]:
        return source_files(self.root, self.selection)

    def record(self) -> dict[str, Any]:
        return self.selection.record()
