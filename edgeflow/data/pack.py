"""The decode-once pack: every valid sample of a split decoded once into a raw record (`python -m edgeflow pack`).

Layout of one split's pack (``<packed_dir>/train``, ``<packed_dir>/val``)::

    manifest.json            source folder, the scan it came from, every sample id, sizes, checksums
    records/<id>.rec         h x w x 14 bytes: per pixel img_0 B,G,R, img_1 B,G,R (uint8), then flow
                             u, v (float32, little-endian): the pixel order and values the PNG path
                             produces, so reading a crop is a slice, with no decoding

One file per sample: TensorFlow has no native ranged read (FixedLengthRecordDataset skips a header by
reading through it), so a record per file is what gives random access by sample index with native ops
(`read_file`), keeping the per-epoch permutation exact.

Light module (no TensorFlow at import): preflight and the launcher read manifests with it. Packing
(`pack_split`) imports TensorFlow and decodes with the very ops of the PNG path, so the bytes are those
the PNG path would feed the model. Any pack problem is a `DataError` naming the file; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow import config as config_mod
from edgeflow.data import flo
from edgeflow.data.scan import (
    FLOW_SUFFIX,
    IMG0_SUFFIX,
    IMG1_SUFFIX,
    SAMPLE_FILE,
    DataError,
    Problem,
    Sample,
    Splits,
    SplitScan,
    check_deep,
    check_headers,
    scan_split,
    select_splits,
    sort_key,
)

FORMAT = "edgeflow-pack"
VERSION = 1
BYTES_PER_PIXEL = 14  # 6 uint8 frame channels + 2 float32 flow components
MANIFEST = "manifest.json"
RECORDS = "records"
RECORD_SUFFIX = ".rec"
LAYOUT = "h x w x 14 bytes per record: img_0 BGR, img_1 BGR (uint8), flow u, v (float32 little-endian)"
_IO_WORKERS = 8  # file reads/writes and sha256 release the GIL
_MAGIC_INT = int.from_bytes(flo.MAGIC, "little", signed=True)  # a .flo's magic read as an int32


@dataclass(frozen=True)
class PackedSample(Sample):
    """A sample of a pack: the source paths (for messages) plus where its record is and what it holds."""

    record: str = ""
    height: int = 0
    width: int = 0
    fingerprint: str = ""  # tf.fingerprint (farmhash64) of the record, 16 hex digits
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
        return sum(s.height * s.width * BYTES_PER_PIXEL for s in self.samples)

    def scan(self) -> SplitScan:
        """The scan the pack came from, with the pack's samples as the valid ones."""
        scan = self.manifest["scan"]
        return SplitScan(directory=self.source, found=int(scan["found"]), valid=list(self.samples),
                         problems={k: list(v) for k, v in scan["problems"].items()},
                         details=dict(scan["details"]))


def record_bytes(height: int, width: int) -> int:
    return height * width * BYTES_PER_PIXEL


def split_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / split


# ---------------------------------------------------------------------------------------------- reading


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"pack {path}: {what}")


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of one split's pack, checked for form; DataError naming the file otherwise."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise DataError(f"pack folder {directory} does not exist (make it with `python -m edgeflow pack`)")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise _bad(path, "missing: not a pack, or packing did not finish") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def _samples_of(directory: Path, manifest: dict[str, Any]) -> list[PackedSample]:
    source = str(manifest["source"])
    samples = []
    try:
        for entry in manifest["samples"]:
            sid = str(entry["id"])
            samples.append(PackedSample(
                sid, os.path.join(source, sid + IMG0_SUFFIX), os.path.join(source, sid + IMG1_SUFFIX),
                os.path.join(source, sid + FLOW_SUFFIX), record=str(directory / RECORDS / (sid + RECORD_SUFFIX)),
                height=int(entry["height"]), width=int(entry["width"]), fingerprint=str(entry["fingerprint"]),
                sha256=str(entry["sha256"])))
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
        size = os.stat(sample.record).st_size
    except OSError as exc:
        return f"{sample.record}: cannot read: {exc.strerror or exc}"
    if size != want:
        what = "truncated" if size < want else "longer than its manifest entry"
        return (f"{sample.record}: {size} bytes, the manifest says {want} "
                f"({sample.height}x{sample.width} x {BYTES_PER_PIXEL}): {what}")
    if deep:
        try:
            got = _sha256(sample.record)
        except OSError as exc:
            return f"{sample.record}: cannot read: {exc.strerror or exc}"
        if got != sample.sha256:
            return (f"{sample.record}: sha256 {got[:16]}... differs from the manifest's {sample.sha256[:16]}...: "
                    f"corrupted")
    return ""


def open_pack(directory: str | os.PathLike, *, deep: bool = False, split: str | None = None) -> Pack:
    """Read a split's pack and check every record file against the manifest: present with the right
    size, no file the manifest does not list, and with `deep` the sha256 of every record."""
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


def source_files(directory: str | os.PathLike) -> dict[str, list[int]]:
    """name -> [size, mtime_ns] of every sample file of a source folder: what staleness is judged by."""
    out: dict[str, list[int]] = {}
    with os.scandir(os.fspath(directory)) as entries:
        for entry in entries:
            if SAMPLE_FILE.match(entry.name):
                st = entry.stat()
                out[entry.name] = [st.st_size, st.st_mtime_ns]
    return out


def stale_reason(pack: Pack) -> str:
    """Why the pack no longer matches its source folder ("" if it does). The source must exist."""
    recorded: dict[str, list[int]] = pack.manifest["scan"]["files"]
    now = source_files(pack.source)
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


def check_against_config(pack: Pack, cfg: config_mod.Config, source_dir: str, key: str) -> None:
    """Refuse a pack of another folder or of another input size than `cfg` asks for."""
    # Through symlinks: the same folder reached by another path is the same source.
    if os.path.realpath(pack.source) != os.path.realpath(source_dir):
        raise DataError(f"pack {pack.directory} was made from {pack.source}, but {key} is {source_dir}: "
                        f"a pack of another source")
    size = (cfg.data.input_height, cfg.data.input_width)
    packed = pack.input_size
    small = [s for s in pack.samples if s.height < size[0] or s.width < size[1]]
    too_small_excluded = bool(pack.manifest["scan"]["problems"].get("png_too_small"))
    # Another crop is fine when it selects the same samples a scan for it would select.
    if small or (size != packed and (too_small_excluded or size[0] > packed[0] or size[1] > packed[1])):
        example = f" (e.g. {small[0].record} is {small[0].height}x{small[0].width})" if small else ""
        raise DataError(f"pack {pack.directory} was made for a {packed[0]}x{packed[1]} input, the config asks "
                        f"{size[0]}x{size[1]} (data.input_height x data.input_width){example}: a pack of another "
                        f"input size; re-pack with this config")


def open_split_for_config(cfg: config_mod.Config, root: str | os.PathLike, split: str, *, deep: bool = False,
                          check_source: bool = True) -> tuple[Pack, str]:
    """One split's pack under `root`, checked against the config and its source folder (stale: refused).
    Returns the pack and a note ("" or: the source is not here, so staleness was not checked)."""
    source, key = (cfg.data.train_dir, "data.train_dir") if split == "train" else (cfg.data.val_dir, "data.val_dir")
    pack = open_pack(split_dir(root, split), deep=deep, split=split)
    check_against_config(pack, cfg, source, key)
    if not check_source:
        return pack, ""
    if not os.path.isdir(pack.source):
        return pack, f"source {pack.source} of pack {pack.directory} is not here: not checked for staleness"
    reason = stale_reason(pack)
    if reason:
        raise DataError(reason)
    return pack, ""


def config_splits(cfg: config_mod.Config) -> list[str]:
    """The splits a config reads: train, and val unless the evaluation split is a holdout of train."""
    return ["train", "val"] if cfg.data.val_dir else ["train"]


def open_for_config(cfg: config_mod.Config, root: str | os.PathLike, *, deep: bool = False,
                    check_source: bool = True) -> tuple[dict[str, Pack], list[str]]:
    """The packs a config needs from `root`, each checked as `open_split_for_config` does, and the notes."""
    packs: dict[str, Pack] = {}
    notes: list[str] = []
    for split in config_splits(cfg):
        packs[split], note = open_split_for_config(cfg, root, split, deep=deep, check_source=check_source)
        notes += [note] if note else []
    return packs, notes


def packed_splits(cfg: config_mod.Config, root: str | os.PathLike) -> Splits:
    """The trainer's splits read from the packs under `root` (packed_dir, or its node-local copy)."""
    packs, notes = open_for_config(cfg, root)
    for note in notes:
        print(f"data: {note}", file=sys.stderr, flush=True)
    return select_splits(cfg, packs["train"].scan(), packs["val"].scan() if "val" in packs else None)


# ---------------------------------------------------------------------------------------------- packing


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


def _decode_full(img0: Any, img1: Any, flow_path: Any) -> tuple[Any, Any]:
    """A whole sample as its record (uint8 [h, w, 14]) and tf.fingerprint, with the PNG path's ops."""
    import tensorflow as tf

    im0 = tf.io.decode_png(tf.io.read_file(img0), channels=3)
    im1 = tf.io.decode_png(tf.io.read_file(img1), channels=3)
    flo_bytes = tf.io.read_file(flow_path)
    h, w = tf.shape(im0)[0], tf.shape(im0)[1]
    header = tf.io.decode_raw(tf.strings.substr(flo_bytes, 0, flo.HEADER_BYTES), tf.int32, little_endian=True)
    found = tf.concat([tf.shape(im1), header, [tf.strings.length(flo_bytes)]], 0)
    want = tf.concat([tf.shape(im0), [_MAGIC_INT, w, h, flo.HEADER_BYTES + 8 * w * h]], 0)
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(tf.equal(found, want)), ["sample mismatch"])]):
        values = tf.io.decode_raw(tf.strings.substr(flo_bytes, flo.HEADER_BYTES, 8 * w * h), tf.float32,
                                  little_endian=True)
    flow = tf.debugging.assert_all_finite(tf.reshape(values, [h, w, 2]), message="non-finite flow values")
    # The same channel order as the PNG path: [img_0 BGR, img_1 BGR].
    pair = tf.reverse(tf.concat([im1, im0], axis=-1), axis=[-1])
    flow_bytes = tf.reshape(tf.bitcast(flow, tf.uint8), [h, w, 8])  # host order: little-endian (checked)
    record = tf.concat([pair, flow_bytes], axis=-1)
    return record, tf.fingerprint(tf.reshape(record, [1, -1]))[0]


class _LogProgress:
    """Off a terminal (a batch job's log), where a live bar cannot redraw: a line every `every` seconds."""

    def __init__(self, label: str, every: float = 30.0) -> None:
        self.label, self.every = label, every
        self.done = self.total = 0
        self.start_time = self.last = 0.0

    def add_task(self, _: str, total: int) -> int:
        self.total = total
        return 0

    def start(self) -> None:
        self.start_time = self.last = time.perf_counter()

    def advance(self, _: int) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start_time, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            print(f"{self.label}: {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.1f}%), "
                  f"{rate:.1f} samples/s, ETA {int(eta) // 60}m {int(eta) % 60:02d}s", flush=True)

    def stop(self) -> None:
        pass


def _progress(label: str) -> Any:
    if not sys.stdout.isatty():
        return _LogProgress(label)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)


def _write_record(path: Path, data: Any) -> tuple[str, int]:
    with open(path, "wb") as fh:
        fh.write(data)
    return hashlib.sha256(data).hexdigest(), int(data.nbytes)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished pack into place; an older pack there is removed only after the rename."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old)


def pack_split(source_dir: str | os.PathLike, out_dir: str | os.PathLike, split: str, *,
               input_size: tuple[int, int], parallel: int = 0, progress: bool = True,
               log: Callable[[str], None] = print) -> PackResult:
    """Decode every valid sample of `source_dir` once into a pack at `out_dir` (written to a temporary
    folder beside it, then renamed). Samples that fail to decode are excluded and recorded as the
    deep scan would record them; a decode failure the deep check cannot explain is an error."""
    if sys.byteorder != "little":
        raise DataError("packing needs a little-endian host (records hold little-endian float32)")
    import tensorflow as tf

    start = time.perf_counter()
    source = os.path.abspath(source_dir)
    out = Path(out_dir)
    files_before = source_files(source) if os.path.isdir(source) else {}
    scan = scan_split(source, min_size=input_size)
    samples = scan.valid
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / RECORDS).mkdir(parents=True)
    try:
        entries, problems = _pack_samples(tf, samples, tmp, split, parallel=parallel, progress=progress)
        files_after = source_files(source)
        if files_after != files_before:
            raise DataError(f"source {source} changed while it was being packed; pack it again")
        kinds = {k: list(v) for k, v in scan.problems.items()}
        details = dict(scan.details)
        for p in problems:
            kinds.setdefault(p.kind, []).append(p.path)
            details.setdefault(p.path, p.detail)
        manifest = {
            "format": FORMAT, "version": VERSION, "split": split, "source": source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "layout": LAYOUT,
            "bytes_per_pixel": BYTES_PER_PIXEL, "input_size": list(input_size),
            "scan": {"found": scan.found, "valid": len(entries), "invalid": scan.found - len(entries),
                     "deep": True, "problems": kinds, "details": details, "files": files_after},
            "samples": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(e["height"] * e["width"] * BYTES_PER_PIXEL for e in entries)
    return PackResult(split, out, source, scan.found, len(entries), scan.found - len(entries), total,
                      time.perf_counter() - start)


def _pack_samples(tf: Any, samples: list[Sample], tmp: Path, split: str, *, parallel: int,
                  progress: bool) -> tuple[list[dict[str, Any]], list[Problem]]:
    n = len(samples)
    table = (tf.constant([s.img0 for s in samples], tf.string), tf.constant([s.img1 for s in samples], tf.string),
             tf.constant([s.flow for s in samples], tf.string), tf.range(n, dtype=tf.int64))

    def load(img0, img1, flow_path, pos):
        record, fingerprint = _decode_full(img0, img1, flow_path)
        return record, fingerprint, pos

    entries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    if not n:
        return entries, problems
    ds = tf.data.Dataset.from_tensor_slices(table)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE if parallel == 0 else parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=False).prefetch(4)  # a failed sample is a gap in `pos`, diagnosed below

    def failed(index: int) -> None:
        sample = samples[index]
        found = check_headers(sample, None) or check_deep(sample)
        if not found:
            raise DataError(f"sample {sample.sample_id} of {sample.img0}: TensorFlow cannot decode it but the "
                            f"deep check finds nothing wrong; not packed")
        problems.extend(found)

    bar = _progress(f"pack {split}") if progress else None
    task = bar.add_task("pack", total=n) if bar else None
    in_flight: deque[tuple[Sample, tuple[int, ...], str, Future[tuple[str, int]]]] = deque()

    def finish_one() -> None:
        sample, shape, fingerprint, future = in_flight.popleft()
        digest, size = future.result()
        entries.append({"id": sample.sample_id, "height": int(shape[0]), "width": int(shape[1]),
                        "bytes": size, "fingerprint": fingerprint, "sha256": digest})
        if bar:
            bar.advance(task)

    expected = 0
    with ThreadPoolExecutor(max_workers=_IO_WORKERS) as pool:
        if bar:
            bar.start()
        try:
            for record, fingerprint, pos in ds:
                index = int(pos)
                for gap in range(expected, index):
                    failed(gap)
                expected = index + 1
                sample = samples[index]
                array = record.numpy()
                path = tmp / RECORDS / (sample.sample_id + RECORD_SUFFIX)
                in_flight.append((sample, array.shape, bytes(fingerprint.numpy()).hex(),
                                  pool.submit(_write_record, path, array)))
                if len(in_flight) > 2 * _IO_WORKERS:  # bounded: records are MBs each
                    finish_one()
            for gap in range(expected, n):
                failed(gap)
            while in_flight:
                finish_one()
        finally:
            if bar:
                bar.stop()
    return entries, problems


def pack_config(cfg: config_mod.Config, out: str | os.PathLike | None = None, split: str = "all", *,
                progress: bool = True, log: Callable[[str], None] = print) -> list[PackResult]:
    """Pack the splits of a config: train (data.train_dir) and val (data.val_dir, when set)."""
    root = Path(out if out is not None else cfg.data.packed_dir)
    if not str(root):
        raise DataError("no output folder: pass --out DIR or set data.packed_dir")
    d = cfg.data
    sources = {"train": d.train_dir}
    if d.val_dir:
        sources["val"] = d.val_dir
    wanted = list(sources) if split == "all" else [split]
    if split == "val" and not d.val_dir:
        raise DataError("data.val_dir is empty (the evaluation split is a holdout of data.train_dir): "
                        "there is no val split to pack")
    results = []
    for name in wanted:
        result = pack_split(sources[name], split_dir(root, name), name, input_size=(d.input_height, d.input_width),
                            parallel=d.num_parallel_calls, progress=progress, log=log)
        log(f"pack {name}: {result.packed} of {result.found} samples of {result.source} packed "
            f"({result.excluded} invalid, not packed), {result.bytes / 1e9:.3f} GB in {result.directory} "
            f"({result.seconds:.1f} s, {result.packed / max(result.seconds, 1e-9):.1f} samples/s)")
        results.append(result)
    return results
