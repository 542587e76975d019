"""What every data source shares: samples, problems, the scan of a split, the splits, the Source seam.

Light module (standard library only), the floor of `edgeflow/data/`. A data source (a FlyingChairs2
folder, FlyingThings3D or MPI-Sintel under their top folder, a pack made from any of them) is one
implementation of `Source`: it finds one split's samples and checks them, and its samples tell the
input pipeline how they are read (by their type, see `edgeflow/data/readers.py`). Scanning,
preflight, the pipeline, packing and staging see only this seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class DataError(Exception):
    """Data that cannot be used for training; the message names the folder or file and the counts."""


@dataclass(frozen=True)
class Sample:
    """A pair of frames and the flow from the first to the second, as files."""

    sample_id: str
    img0: str
    img1: str
    flow: str


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str


# Every kind of problem, in report order, with the words the report uses for it.
PROBLEM_KINDS: dict[str, str] = {
    "missing_img0": "img_0 missing",
    "missing_img1": "img_1 missing",
    "missing_flow": "flow_01 missing",
    "not_a_file": "not a regular file (a FIFO, socket or device: opening it could hang)",
    "unreadable": "file cannot be opened or read",
    "bad_png_signature": "not a PNG (bad signature or IHDR header)",
    "truncated_png": "PNG truncated or without its end (IEND chunk)",
    "png_size_mismatch": "img_1 size differs from img_0",
    "png_too_small": "image smaller than the input crop",
    "bad_flo_magic": ".flo magic is not PIEH",
    "bad_flo_header": ".flo header truncated or absurd dimensions",
    "flo_dims_mismatch": ".flo dimensions differ from img_0",
    "flo_file_size": ".flo file size != 12 + 8*w*h",
    "bad_pfm_header": "PFM header malformed or truncated, not 3 channels, or absurd dimensions",
    "pfm_file_size": "PFM file size != header + 12*w*h (truncated, or trailing bytes)",
    "pfm_dims_mismatch": "PFM dimensions differ from img_0",
    "undecodable_png": "PNG cannot be decoded (--deep)",
    "nonfinite_flow": "flow has NaN or Inf values (--deep)",
    "pfm_byte_order": "PFM scale's sign gives the wrong byte order: values only read right the other way (--deep)",
    "excluded_by_list": "excluded on purpose: listed in data.exclude_list (not checked, not an error)",
}
# Samples left out on purpose: counted and named like the others, never held against
# data.allow_excluded_samples.
LISTED = "excluded_by_list"


def sort_key(sample_id: str) -> tuple[int, str]:
    """Samples sort by their number where they have one, then by id."""
    digits = "".join(ch for ch in sample_id if ch.isdigit())
    return (int(digits) if digits and sample_id.isdigit() else -1), sample_id


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
    notes: list[str] = field(default_factory=list)  # what the scan could not check, for the report
    listed: int = 0  # samples excluded on purpose (data.exclude_list): in `invalid`, never an error
    # data.exclude_list entries that matched a file of this split
    matched_entries: set[str] = field(default_factory=set)

    @property
    def invalid(self) -> int:
        return self.found - len(self.valid)

    @property
    def broken(self) -> int:
        """Invalid samples that were not excluded on purpose: what data.allow_excluded_samples limits."""
        return self.invalid - self.listed


def scan_of(directory: str, found: int, valid: list[Sample], problems: list[Problem], *,
            deep_checked: int = 0, deep_candidates: int = 0, listed: int = 0) -> SplitScan:
    """A SplitScan with the problems grouped by kind in report order (first detail per path kept). A
    file shared by several samples (a frame of a sequence, FT3D's flow of both passes) is named once
    per kind, however many samples it made invalid."""
    by_kind: dict[str, list[str]] = {}
    details: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for p in problems:
        if (p.kind, p.path) in seen:
            continue
        seen.add((p.kind, p.path))
        by_kind.setdefault(p.kind, []).append(p.path)
        details.setdefault(p.path, p.detail)
    ordered = {kind: by_kind[kind] for kind in PROBLEM_KINDS if kind in by_kind}
    ordered.update({kind: paths for kind, paths in by_kind.items() if kind not in ordered})
    return SplitScan(directory=directory, found=found, valid=valid, problems=ordered, details=details,
                     deep_checked=deep_checked, deep_candidates=deep_candidates, listed=listed)


@dataclass
class EvalSplit:
    """One named evaluation split: its samples, the centre crop they are evaluated at, how many batches."""

    name: str
    samples: list[Sample]
    size: tuple[int, int]  # (height, width) of the centre crop
    batches: int           # eval batches of eval.batch_size; 0: every sample
    where: str             # where the samples come from, for messages and records
    record: dict[str, Any] = field(default_factory=dict)  # what defines it (data set, subset, ...)

    def num_batches(self, batch_size: int) -> int:
        return self.batches or -(-len(self.samples) // batch_size)


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]  # the samples of the evaluation split the run selects on (eval.select_on)
    val_source: str  # "val_dir" or "holdout" (the built-in split "val"), else the eval.splits name
    holdout_seed: int | None  # set when the built-in split is a holdout
    train_scan: SplitScan
    # None when the evaluation split is a holdout carved from train_scan
    val_scan: SplitScan | None
    # Every evaluation split by name, the one selected on (eval.select_on) included; its samples are `val`.
    evals: dict[str, EvalSplit] = field(default_factory=dict)
    select_on: str = "val"
    # The scans of the named evaluation splits (eval.splits), by name.
    eval_scans: dict[str, SplitScan] = field(default_factory=dict)
    # data.exclude_list: the list, its digest, samples left out per split, entries that matched nothing.
    exclusion: dict[str, Any] | None = None

    def eval_split(self, name: str | None = None) -> EvalSplit:
        """The evaluation split `name` (default: the one selected on); KeyError naming the known ones."""
        name = name or self.select_on
        if name not in self.evals:
            raise KeyError(f"no evaluation split {name!r}; this config has {', '.join(self.evals)} (eval.splits)")
        return self.evals[name]


# data.preflight_deep modes: how much a scan decodes beyond the headers.
DEEP_MODES = ("auto", "full", "sample", "headers")
# `auto` decodes every sample of a split this small, else `sample_size` of them.
AUTO_FULL_MAX = 5000


@dataclass(frozen=True)
class ScanOptions:
    """How thoroughly a source checks its samples."""

    min_size: tuple[int, int] | None = None  # (height, width) of the input crop: smaller is invalid
    deep: str = "headers"                   # one of DEEP_MODES
    sample_size: int = 1000                 # `sample`/`auto`: decode this many, spread over the split
    # data.exclude_list: samples using one of these files are left out on purpose, unchecked. Absolute
    # normalised paths match exactly, relative ones match any path ending in "/<entry>".
    exclude: frozenset[str] = frozenset()
    # Called with (0, total) before decoding, then (n, total) as each group of n samples is decoded.
    progress: Callable[[int, int], None] | None = None

    def decode_limit(self, candidates: int) -> int | None:
        """How many of `candidates` samples to decode (None: all, 0: none)."""
        if self.deep == "headers":
            return 0
        if self.deep == "full" or (self.deep == "auto" and candidates <= AUTO_FULL_MAX):
            return None
        return self.sample_size


class Source(Protocol):
    """One split's samples: where they are and how they are checked."""

    @property
    def split(self) -> str:
        """"train", "val" or the name of an evaluation split (eval.splits)."""
        ...

    @property
    def key(self) -> str:
        """The config key that names it, for messages (data.train_dir, data.packed_dir, ...)."""
        ...

    @property
    def location(self) -> str:
        """The folder the samples come from (for messages and the report)."""
        ...

    def describe(self) -> str:
        """Where the split comes from, for the preflight table ("<folder>", "<pack> (pack of <folder>)")."""
        ...

    def scan(self, options: ScanOptions) -> SplitScan:
        """Find the split's samples and check them; DataError when the split cannot be read at all."""
        ...


class DataSource(Source, Protocol):
    """A split as its data set keeps it (a folder, FT3D or Sintel under their top folder), which a pack
    can be made from: it also lists its files (a pack's staleness) and says what it selects."""

    def files(self) -> dict[str, list[int]]:
        """relative path -> [size, mtime_ns] of every sample file."""
        ...

    def record(self) -> dict[str, Any]:
        """What the split's samples are: the data set and which of its samples (and the flow divisor)."""
        ...
