"""Writing packs (`python -m edgeflow pack`): every valid sample of a split decoded once into a record.

The format is edgeflow/data/pack.py's. Decoding uses the very ops of the input pipeline (readers.py),
so the bytes are those the PNG path would feed the model. Writing is crash-clean and never touches a
folder edgeflow did not make:

- `<out>/<split>` must be absent, or a pack edgeflow made (its link, or an older pack folder with an
  edgeflow manifest); anything else there (FlyingChairs2's own `train/`, someone's data) is refused
  before a byte is written, as is an output folder inside the source folder;
- a new version is written to a hidden folder beside it and, when complete, `<out>/<split>` (a symbolic
  link) is pointed at it with one atomic swap, so a kill at any moment leaves the old pack or the new
  one visible, never none (edgeflow/rundir/staging.py, as export and import-v1 write their folders);
- what a killed packer left behind (its hidden folder) is removed by the next `pack` of that split.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from edgeflow import config as config_mod
from edgeflow import progress
from edgeflow.data import readers
from edgeflow.data.pack import (
    BYTES_PER_PIXEL,
    FORMAT,
    LAYOUT,
    MANIFEST,
    RECORD_SUFFIX,
    RECORDS,
    STAGE_KIND,
    VERSION,
    record_header,
    split_dir,
)
from edgeflow.data.samples import DataError, DataSource, Problem, Sample, ScanOptions
from edgeflow.data.splits import exclude_listing, origin_sources, split_sizes
from edgeflow.rundir import atomic_write_text, fsync_dir, staging

_IO_WORKERS = 8  # file writes and sha256 release the GIL


@dataclass
class PackResult:
    split: str
    directory: Path
    source: str
    found: int
    packed: int
    excluded: int
    bytes: int
    seconds: float


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_our_pack(path: Path) -> bool:
    """A pack edgeflow made: its link to a hidden version, or an older pack folder with our manifest."""
    if path.is_symlink():
        return staging.linked_version(path, STAGE_KIND) is not None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def check_destination(root: Path, split: str, source: str) -> None:
    """Refuse (DataError) to write a pack where it would replace or sit inside what is not ours."""
    final = split_dir(root, split)
    if _inside(str(root), source) or _inside(source, str(final)):
        raise DataError(f"pack folder {final} would be inside (or hold) its source {source}; choose an --out "
                        f"(data.packed_dir) outside the data folders")
    if os.path.lexists(final) and not _is_our_pack(final):
        raise DataError(f"{final} exists and is not a pack made by edgeflow; it is left alone: choose another "
                        f"--out (data.packed_dir) for the pack, e.g. a new folder beside the data")


def _publish(folder: Path, final: Path) -> None:
    """Make the finished pack in `folder` the visible one (an atomic link swap; the old version goes)."""
    if os.path.lexists(final) and not final.is_symlink():
        # An older pack folder (made before packs were linked): moved aside as a hidden version of ours,
        # then the link takes its place; a kill in between leaves the new version for the next pack.
        os.rename(final, final.parent / staging.hidden_name(final, STAGE_KIND))
    staging.publish_link(folder, final, STAGE_KIND)
    staging.remove_leftovers(final, (STAGE_KIND,))


def pack_split(source: DataSource, root: str | os.PathLike[str], *, input_size: tuple[int, int],
               parallel: int = 0, show_progress: bool = True, exclude: frozenset[str] = frozenset(),
               exclude_sha256: str = "") -> PackResult:
    """Decode every valid sample of `source` once into a pack at `<root>/<split>`. Samples that fail to
    decode are excluded and recorded as the deep scan would record them; a decode failure the deep check
    cannot explain is an error. Samples using a file of data.exclude_list (`exclude`) are left out and
    recorded, and the pack remembers the list (`exclude_sha256`)."""
    if sys.byteorder != "little":
        raise DataError("packing needs a little-endian host (records hold little-endian float32)")
    start = time.perf_counter()
    split = source.split
    out_root = Path(root)
    src = os.path.abspath(source.location)
    check_destination(out_root, split, src)
    files_before = source.files() if os.path.isdir(src) else {}
    scan = source.scan(ScanOptions(min_size=input_size, exclude=exclude))
    final = split_dir(out_root, split)
    with staging.staged(final, STAGE_KIND) as tmp:
        (tmp / RECORDS).mkdir()
        entries, problems = _pack_samples(scan.valid, src, tmp, split, parallel=parallel, show_progress=show_progress)
        files_after = source.files()
        if files_after != files_before:
            raise DataError(f"source {src} changed while it was being packed; pack it again")
        kinds = {k: list(v) for k, v in scan.problems.items()}
        details = dict(scan.details)
        for p in problems:
            if p.path not in kinds.setdefault(p.kind, []):
                kinds[p.kind].append(p.path)
            details.setdefault(p.path, p.detail)
        selection = source.record()
        manifest = {
            "format": FORMAT, "version": VERSION, "split": split, "source": src, "dataset": selection["dataset"],
            "selection": selection, "exclude_list_sha256": exclude_sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "layout": LAYOUT,
            "bytes_per_pixel": BYTES_PER_PIXEL, "input_size": list(input_size),
            "scan": {"found": scan.found, "valid": len(entries), "invalid": scan.found - len(entries),
                     "listed": scan.listed, "matched_entries": sorted(scan.matched_entries),
                     "deep": True, "problems": kinds, "details": details, "files": files_after},
            "samples": entries,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
        fsync_dir(tmp / RECORDS)
        _publish(tmp, final)
    total = sum(int(e["bytes"]) for e in entries)
    return PackResult(split, split_dir(out_root, split), src, scan.found, len(entries), scan.found - len(entries),
                      total, time.perf_counter() - start)


def _write_record(path: Path, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest()


def _pack_samples(samples: list[Sample], source: str, tmp: Path, split: str, *, parallel: int,
                  show_progress: bool) -> tuple[list[dict[str, Any]], list[Problem]]:
    n = len(samples)
    entries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    if not n:
        return entries, problems
    reader = readers.reader_for(samples)
    if reader.whole is None or reader.problems is None:
        raise DataError(f"samples of type {type(samples[0]).__name__} cannot be packed")
    whole, diagnose = reader.whole, reader.problems
    table = (*reader.columns(samples), tf.range(n, dtype=tf.int64))

    @tf.autograph.experimental.do_not_convert  # plain ops, no Python control flow to convert
    def load(*row: tf.Tensor):  # noqa: ANN202
        record, size = whole(*row[:-1])
        return record, size, row[-1]

    ds = tf.data.Dataset.from_tensor_slices(table)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE if parallel == 0 else parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=False).prefetch(4)  # a failed sample is a gap in `pos`, diagnosed below

    def failed(index: int) -> None:
        sample = samples[index]
        found = diagnose(sample)
        if not found:
            raise DataError(f"sample {sample.sample_id} of {sample.img0}: TensorFlow cannot decode it but the "
                            f"deep check finds nothing wrong; not packed")
        problems.extend(found)

    bar = progress.Reporter(f"pack {split}", n, unit="sample", every_seconds=30.0) if show_progress else None
    in_flight: deque[tuple[Sample, int, int, bytes, Future[str]]] = deque()

    def finish_one() -> None:
        sample, height, width, data_fp, future = in_flight.popleft()
        digest = future.result()
        rel = [os.path.relpath(p, source) for p in (sample.img0, sample.img1, sample.flow)]
        entries.append({"id": sample.sample_id, "height": height, "width": width, "files": rel,
                        "bytes": len(record_header(height, width)) + height * width * BYTES_PER_PIXEL,
                        "fingerprint": data_fp.hex(), "sha256": digest})
        if bar is not None:
            bar.update(samples=1)

    expected = 0
    with ThreadPoolExecutor(max_workers=_IO_WORKERS) as pool:
        try:
            for record, size, pos in ds:
                index = int(pos)
                for gap in range(expected, index):
                    failed(gap)
                expected = index + 1
                sample = samples[index]
                height, width = (int(v) for v in size.numpy())
                data = record_header(height, width) + record.numpy().tobytes()
                fingerprint = bytes(tf.fingerprint(tf.constant([data]))[0].numpy())
                path = tmp / RECORDS / (sample.sample_id + RECORD_SUFFIX)
                in_flight.append((sample, height, width, fingerprint, pool.submit(_write_record, path, data)))
                if len(in_flight) > 2 * _IO_WORKERS:  # bounded: records are MBs each
                    finish_one()
            for gap in range(expected, n):
                failed(gap)
            while in_flight:
                finish_one()
        finally:
            if bar is not None:
                bar.close()
    return entries, problems


def pack_config(cfg: config_mod.Config, out: str | os.PathLike[str] | None = None, split: str = "all", *,
                show_progress: bool = True, log: Any = print) -> list[PackResult]:
    """Pack the splits of a config: train, val (data.val_dir, when set) and each of eval.splits, or one
    of them (`split`)."""
    root = Path(out if out is not None else cfg.data.packed_dir)
    if not str(root):
        raise DataError("no output folder: pass --out DIR or set data.packed_dir")
    sources = {s.split: s for s in origin_sources(cfg)}
    if split == "val" and "val" not in sources:
        raise DataError("the run's own evaluation split is a holdout of the training samples (data.val_dir is "
                        "empty, or data.dataset is not fc2): there is no val split to pack")
    if split != "all" and split not in sources:
        raise DataError(f"--split {split}: not a split of this config (its splits: {', '.join(sources)})")
    wanted = list(sources) if split == "all" else [split]
    for name in wanted:  # every destination checked before anything is written
        check_destination(root, name, os.path.abspath(sources[name].location))
    listing = exclude_listing(cfg)
    results = []
    d = cfg.data
    sizes = split_sizes(cfg)
    for name in wanted:
        result = pack_split(sources[name], root, input_size=sizes[name],
                            parallel=d.num_parallel_calls, show_progress=show_progress,
                            exclude=listing.patterns if listing else frozenset(),
                            exclude_sha256=listing.sha256 if listing else "")
        log(f"pack {name}: {result.packed} of {result.found} samples of {result.source} packed "
            f"({result.excluded} invalid or excluded, not packed), {result.bytes / 1e9:.3f} GB in {result.directory} "
            f"({result.seconds:.1f} s, {result.packed / max(result.seconds, 1e-9):.1f} samples/s)")
        results.append(result)
    return results
