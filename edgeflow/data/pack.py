"""The decode-once pack, read side: the format, its checks, and `PackSource` behind the data seam.

Layout of one split's pack (``<packed_dir>/train``, ``<packed_dir>/val``)::

    manifest.json       source folder and layout, the scan it came from, every sample id, sizes, checksums
    records/<id>.rec    a 16-byte header (b"EFR2", then height, width and bytes per pixel as little-endian
                        uint32), then h x w x 14 bytes: per pixel img_0 B,G,R, img_1 B,G,R (uint8), then
                        flow u, v (float32, little-endian): the pixel order and values the PNG path produces

`<packed_dir>/<split>` is a symbolic link to a hidden folder holding one complete version, so a new pack
replaces the old one with one atomic swap of the link, and a kill at any moment leaves one whole pack
visible (edgeflow/data/packing.py writes packs through edgeflow/rundir/staging.py).

Every field that shapes a record is covered by the per-read check: the record's length, its fingerprint
(of the whole file, header included) and the height and width in its header must all match the
manifest, so a manifest entry with another height and width of the same product is refused, not read
as scrambled pixels.

One file per sample: TensorFlow has no native ranged read, so a record per file gives random access by
sample index with native ops (`read_file`), keeping the per-epoch permutation exact. Light module (no
TensorFlow). Any pack problem is a `DataError` naming the file; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgeflow.data.samples import DataError, Sample, ScanOptions, SplitScan, sort_key

FORMAT = "edgeflow-pack"
VERSION = 2
BYTES_PER_PIXEL = 14  # 6 uint8 frame channels + 2 float32 flow components
HEADER_MAGIC = b"EFR2"
RECORD_HEADER = struct.Struct("<4sIII")  # magic, height, width, bytes per pixel
HEADER_BYTES = RECORD_HEADER.size
MANIFEST = "manifest.json"
RECORDS = "records"
RECORD_SUFFIX = ".rec"
LAYOUT = (f"{HEADER_BYTES}-byte header (EFR2, height, width, bytes per pixel), then h x w x {BYTES_PER_PIXEL} "
          "bytes per record: img_0 BGR, img_1 BGR (uint8), flow u, v (float32 little-endian)")
# The staging kind of a pack's hidden versions (`.train.pack-HOST-PID-TOKEN`, edgeflow/rundir/staging.py).
STAGE_KIND = "pack"
_IO_WORKERS = 8  # file reads and sha256 release the GIL


def record_header(height: int, width: int) -> bytes:
    return RECORD_HEADER.pack(HEADER_MAGIC, height, width, BYTES_PER_PIXEL)


def record_bytes(height: int, width: int) -> int:
    """The size of a record file of this frame size, header included."""
    return HEADER_BYTES + height * width * BYTES_PER_PIXEL


@dataclass(frozen=True)
class PackedSample(Sample):
    """A sample of a pack: the source paths (for messages) plus where its record is and what it holds."""

    record: str = ""
    height: int = 0
    width: int = 0
    fingerprint: str = ""  # tf.fingerprint (farmhash64) of the whole record file, 16 hex digits
    sha256: str = ""


@dataclass
class Pack:
    directory: Path
    manifest: dict[str, Any]
    samples: list[PackedSample]

    @property
    def source(self) -> str:
        return str(self.manifest["source"])

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.manifest["input_size"]
        return int(h), int(w)

    @property
    def bytes(self) -> int:
        return sum(record_bytes(s.height, s.width) for s in self.samples)

    def scan(self) -> SplitScan:
        """The scan the pack came from, with the pack's samples as the valid ones."""
        scan = self.manifest["scan"]
        return SplitScan(directory=self.source, found=int(scan["found"]), valid=list(self.samples),
                         problems={k: list(v) for k, v in scan["problems"].items()},
                         details=dict(scan["details"]), listed=int(scan.get("listed", 0)),
                         matched_entries=set(scan.get("matched_entries", [])))

    @property
    def selection(self) -> dict[str, Any]:
        """What the pack's samples are (data set and which of its samples); FC2 for packs made before
        other data sets were read."""
        found = self.manifest.get("selection")
        return dict(found) if isinstance(found, dict) else {"dataset": str(self.manifest.get("dataset", "fc2"))}


def split_dir(root: str | os.PathLike[str], split: str) -> Path:
    return Path(root) / split


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"pack {path}: {what}")


def interrupted_versions(root: Path, split: str) -> list[Path]:
    """Complete versions of a split whose link is missing (a replacement killed half-way)."""
    prefix = f".{split}.{STAGE_KIND}-"
    try:
        return sorted(p for p in root.iterdir() if p.name.startswith(prefix) and (p / MANIFEST).is_file())
    except OSError:
        return []


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of one split's pack, checked for form; DataError naming the file otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        versions = interrupted_versions(directory.parent, directory.name)
        if versions:
            raise DataError(f"pack folder {directory} is missing, but {versions[-1]} holds a complete pack: a "
                            f"replacement was interrupted; run `python -m edgeflow pack` again to finish it")
        raise DataError(f"pack folder {directory} does not exist (make it with `python -m edgeflow pack`)")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise _bad(path, "missing: not a pack, or packing did not finish") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad(path, f"cannot be read as JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(path, f"not an {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise _bad(path, f"pack version {manifest.get('version')!r}, this edgeflow reads version {VERSION}: re-pack")
    for key in ("source", "split", "input_size", "scan", "samples", "bytes_per_pixel"):
        if key not in manifest:
            raise _bad(path, f"has no {key!r} entry")
    if manifest["bytes_per_pixel"] != BYTES_PER_PIXEL:
        raise _bad(path, f"records of {manifest['bytes_per_pixel']} bytes per pixel, expected {BYTES_PER_PIXEL}")
    return manifest


# A sample id becomes a record's file name: nothing that could leave the records folder.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\Z")


def _samples_of(directory: Path, manifest: dict[str, Any]) -> list[PackedSample]:
    source = str(manifest["source"])
    samples = []
    try:
        for entry in manifest["samples"]:
            sid = str(entry["id"])
            if not _SAFE_ID.match(sid):
                raise ValueError(f"'id' ({sid!r})")
            height, width = int(entry["height"]), int(entry["width"])
            if not (0 < height < 1 << 16 and 0 < width < 1 << 16):
                raise ValueError(f"'height'/'width' ({height}x{width})")
            img0, img1, flow = (os.path.join(source, str(f)) for f in entry["files"])
            samples.append(PackedSample(
                sid, img0, img1, flow, record=str(directory / RECORDS / (sid + RECORD_SUFFIX)),
                height=height, width=width, fingerprint=str(entry["fingerprint"]), sha256=str(entry["sha256"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(directory / MANIFEST, f"sample entry without a valid {exc}") from None
    if [s.sample_id for s in samples] != sorted((s.sample_id for s in samples), key=sort_key):
        raise _bad(directory / MANIFEST, "samples are not in id order")
    return samples


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def record_problem(sample: PackedSample, *, deep: bool) -> str:
    """What is wrong with a sample's record file ("" if it matches the manifest)."""
    want = record_bytes(sample.height, sample.width)
    try:
        with open(sample.record, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            header = fh.read(HEADER_BYTES)
    except OSError as exc:
        return f"{sample.record}: cannot read: {exc.strerror or exc}"
    if size != want:
        what = "truncated" if size < want else "longer than its manifest entry"
        return (f"{sample.record}: {size} bytes, the manifest says {want} "
                f"({sample.height}x{sample.width} x {BYTES_PER_PIXEL} + {HEADER_BYTES}): {what}")
    if header != record_header(sample.height, sample.width):
        return (f"{sample.record}: its header does not match the manifest entry ({sample.height}x{sample.width}): "
                f"the manifest or the record was changed")
    if deep:
        try:
            got = _sha256(sample.record)
        except OSError as exc:
            return f"{sample.record}: cannot read: {exc.strerror or exc}"
        if got != sample.sha256:
            return (f"{sample.record}: sha256 {got[:16]}... differs from the manifest's {sample.sha256[:16]}...: "
                    f"corrupted")
    return ""


def open_pack(directory: str | os.PathLike[str], *, deep: bool = False, split: str | None = None) -> Pack:
    """Read a split's pack and check every record file against the manifest: present with the right
    size and header, no file the manifest does not list, and with `deep` the sha256 of every record."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if split is not None and manifest["split"] != split:
        raise _bad(directory / MANIFEST, f"is the {manifest['split']!r} split, expected {split!r}")
    samples = _samples_of(directory, manifest)
    listed = {Path(s.record).name for s in samples}
    try:
        present = {e.name for e in os.scandir(directory / RECORDS)}
    except OSError as exc:
        raise _bad(directory / RECORDS, f"cannot be listed: {exc.strerror or exc}") from None
    problems = [f"{directory / RECORDS / name}: not in the manifest" for name in sorted(present - listed)]
    with ThreadPoolExecutor(max_workers=_IO_WORKERS) as pool:
        problems += [p for p in pool.map(lambda s: record_problem(s, deep=deep), samples) if p]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"pack {directory}: {len(problems)} record files do not match {directory / MANIFEST}: "
                        + "; ".join(problems[:3]) + more + "; re-pack it")
    return Pack(directory, manifest, samples)


def stale_reason(pack: Pack, now: dict[str, list[int]]) -> str:
    """Why the pack no longer matches its source folder, whose sample files are now `now` (name ->
    [size, mtime_ns]); "" if it does."""
    recorded: dict[str, list[int]] = pack.manifest["scan"]["files"]
    added = sorted(set(now) - set(recorded))
    removed = sorted(set(recorded) - set(now))
    changed = sorted(n for n in set(now) & set(recorded) if list(now[n]) != list(recorded[n]))
    parts = []
    for label, names in (("new", added), ("removed", removed), ("changed (size or time)", changed)):
        if names:
            parts.append(f"{len(names)} {label}, e.g. {', '.join(names[:2])}")
    if not parts:
        return ""
    return (f"pack {pack.directory} is stale: its source {pack.source} changed since packing "
            f"({'; '.join(parts)}); re-run `python -m edgeflow pack`")


def check_input_size(pack: Pack, size: tuple[int, int]) -> None:
    """Refuse a pack made for another input size, unless it selects the samples a scan for `size` would."""
    packed = pack.input_size
    small = [s for s in pack.samples if s.height < size[0] or s.width < size[1]]
    too_small_excluded = bool(pack.manifest["scan"]["problems"].get("png_too_small"))
    if small or (size != packed and (too_small_excluded or size[0] > packed[0] or size[1] > packed[1])):
        example = f" (e.g. {small[0].record} is {small[0].height}x{small[0].width})" if small else ""
        raise DataError(f"pack {pack.directory} was made for a {packed[0]}x{packed[1]} input, the config asks "
                        f"{size[0]}x{size[1]} (data.input_height x data.input_width){example}: a pack of another "
                        f"input size; re-pack with this config")


def describe_selection(selection: dict[str, Any]) -> str:
    return ", ".join(f"{k} {'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in selection.items())


class Origin(Protocol):
    """The source a pack is made from, as far as a pack needs it (a FolderSource, an Ft3dSource, ...)."""

    @property
    def key(self) -> str: ...

    @property
    def location(self) -> str: ...

    def files(self) -> dict[str, list[int]]: ...

    def record(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PackSource:
    """A split read from a pack under `root` (data.packed_dir or its node-local copy), made from
    `origin` (the config's folder of that split)."""

    split: str
    root: str
    origin: Origin
    min_size: tuple[int, int]
    check_source: bool = True  # judge staleness against the source folder (when it is here)
    exclusion: str = ""  # sha256 of the config's data.exclude_list ("" without one)

    @property
    def key(self) -> str:
        return "data.packed_dir"

    @property
    def location(self) -> str:
        return str(split_dir(self.root, self.split))

    def describe(self) -> str:
        return f"{self.location} (pack of {self.origin.location})"

    def open(self, *, deep: bool = False) -> tuple[Pack, str]:
        """The pack, checked against the config and its source folder (stale: refused), and a note
        ("" or: the source is not here, so staleness was not checked)."""
        pack = open_pack(split_dir(self.root, self.split), deep=deep, split=self.split)
        # Through symlinks: the same folder reached by another path is the same source.
        if os.path.realpath(pack.source) != os.path.realpath(self.origin.location):
            raise DataError(f"pack {pack.directory} was made from {pack.source}, but {self.origin.key} is "
                            f"{self.origin.location}: a pack of another source")
        if pack.selection != self.origin.record():
            raise DataError(f"pack {pack.directory} holds {describe_selection(pack.selection)}, but the config asks "
                            f"for {describe_selection(self.origin.record())}: a pack of other samples; re-pack with "
                            f"this config")
        if str(pack.manifest.get("exclude_list_sha256", "")) != self.exclusion:
            raise DataError(f"pack {pack.directory} was made with another data.exclude_list (or without one, or "
                            f"with one where the config has none): re-pack with this config")
        check_input_size(pack, self.min_size)
        if not self.check_source:
            return pack, ""
        if not os.path.isdir(pack.source):
            return pack, f"source {pack.source} of pack {pack.directory} is not here: not checked for staleness"
        reason = stale_reason(pack, self.origin.files())
        if reason:
            raise DataError(reason)
        return pack, ""

    def scan(self, options: ScanOptions) -> SplitScan:
        # A pack was decoded and checked when it was made: only a full check checksums every record again.
        pack, note = self.open(deep=options.deep == "full")
        scan = pack.scan()
        scan.notes += [note] if note else []
        return scan
