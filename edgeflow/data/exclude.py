"""data.exclude_list: samples left out on purpose (known-bad files), counted and recorded, never silently.

Light module (standard library only). The list is a text file, one file path per line, `#` starting a
comment. An absolute path matches that file; a relative one matches every sample file whose path ends
with it (`optical_flow/TRAIN/A/0364/into_future/left/OpticalFlowIntoFuture_0012_L.pfm` matches
wherever the data set is mounted). Every sample that uses a listed file is excluded, unchecked, and
reported (kind `excluded_by_list`); a listed entry that matches no file of the config's samples is
reported too (not found, or not in any split the config uses).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeflow.data.samples import DataError, Sample, SplitScan


@dataclass(frozen=True)
class ExcludeList:
    path: str
    entries: tuple[str, ...]  # normalised, in file order, without duplicates
    sha256: str

    @property
    def patterns(self) -> frozenset[str]:
        return frozenset(self.entries)


def normalise(entry: str) -> str:
    return os.path.normpath(entry.strip())


def read_exclude_list(path: str) -> ExcludeList:
    """The entries of an exclude list; DataError naming data.exclude_list when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(64 << 20)
        text = data.decode()
    except OSError as exc:
        raise DataError(f"data.exclude_list {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"data.exclude_list {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    entries: dict[str, None] = {}
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            entries[normalise(item)] = None
    return ExcludeList(path=path, entries=tuple(entries), sha256=hashlib.sha256(data).hexdigest())


def matching_entry(path: str, patterns: frozenset[str]) -> str | None:
    """The entry of `patterns` that `path` matches (itself, or one of its trailing parts), or None."""
    path = os.path.normpath(path)
    if path in patterns:
        return path
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        tail = os.sep.join(parts[i:])
        if tail in patterns:
            return tail
    return None


def listed_file(sample: Sample, patterns: frozenset[str]) -> tuple[str, str] | None:
    """(file, entry) of the first file of `sample` the list names, or None."""
    for path in (sample.img0, sample.img1, sample.flow):
        entry = matching_entry(path, patterns)
        if entry is not None:
            return path, entry
    return None


def record(listing: ExcludeList, scans: dict[str, SplitScan], roots: Iterable[str] = ()) -> dict[str, Any]:
    """What run.json keeps about the samples excluded on purpose, and the entries that matched nothing."""
    matched: set[str] = set()
    for scan in scans.values():
        matched |= scan.matched_entries
    unmatched = [e for e in listing.entries if e not in matched]
    roots = [r for r in roots if r]
    missing = [e for e in unmatched if not _exists(e, roots)]
    return {"list": os.path.abspath(listing.path), "sha256": listing.sha256, "entries": len(listing.entries),
            "samples": {name: scan.listed for name, scan in scans.items()},
            "unmatched": unmatched, "not_found": missing}


def _exists(entry: str, roots: list[str]) -> bool:
    if os.path.isabs(entry):
        return os.path.exists(entry)
    return any(os.path.exists(os.path.join(root, entry)) for root in roots)


def notes(rec: dict[str, Any]) -> list[str]:
    """The report's lines about a list's entries that matched no sample file."""
    unmatched: Iterable[str] = rec.get("unmatched") or []
    missing = set(rec.get("not_found") or [])
    out = []
    for entry in unmatched:
        why = "not found" if entry in missing else "in no sample of the splits this config uses"
        out.append(f"data.exclude_list {rec['list']}: {entry} matches no sample file ({why})")
    return out
