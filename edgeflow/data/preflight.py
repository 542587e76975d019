"""`python -m edgeflow preflight`: can this config's data train? Light: no TensorFlow.

Scans data.train_dir and data.val_dir (or the fixed holdout carved from train_dir), prints per split
the samples found, valid and each kind of problem with example paths, and exits 0 when training can
start or 2 with a one-line reason. With data.format: packed it checks the packs in data.packed_dir
instead: the manifest against the record files (sizes; sha256 with deep), the config, and the source
folder (a pack whose source changed since packing is stale and refused). The launcher calls
`run_preflight(cfg, deep=...)` directly.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edgeflow import config as config_mod
from edgeflow.data.scan import (
    PROBLEM_KINDS,
    DataError,
    Splits,
    SplitScan,
    check_excluded,
    min_size_of,
    scan_split,
    select_splits,
)

EXAMPLES = 3
# data.preflight_deep: auto decodes every sample of a split this small, else data.preflight_sample of them.
AUTO_FULL_MAX = 5000


@dataclass
class PreflightReport:
    ok: bool
    reason: str
    deep: bool
    seconds: float
    train_dir: str
    val_dir: str  # "" when the evaluation split is a holdout of train_dir
    train_scan: SplitScan | None = None
    val_scan: SplitScan | None = None
    splits: Splits | None = None  # set when ok
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for name, directory, scan in (("train", self.train_dir, self.train_scan), ("val", self.val_dir, self.val_scan)):
            if name == "val" and not self.val_dir:
                continue
            row: dict[str, Any] = {"split": name, "folder": directory}
            if scan is None:
                row.update(found=None, valid=None, invalid=None, problems={})
            else:
                row.update(found=scan.found, valid=len(scan.valid), invalid=scan.invalid,
                           problems={kind: list(paths) for kind, paths in scan.problems.items()})
            if self.splits is not None:
                row["used"] = len(self.splits.train if name == "train" else self.splits.val)
            rows.append(row)
        if not self.val_dir:
            seed = self.settings.get("holdout_seed")
            used = len(self.splits.val) if self.splits is not None else None
            rows.append({"split": "val", "folder": f"holdout of {self.train_dir} (seed {seed})", "found": None,
                         "valid": used, "invalid": None, "problems": {}, "used": used})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: every problem path is listed, with what is wrong with it."""
        scans = [s for s in (self.train_scan, self.val_scan) if s is not None]
        details = {path: text for scan in scans for path, text in scan.details.items()}
        splits = []
        for row in self._rows():
            problems = {kind: {"count": len(paths), "paths": paths, "details": [details.get(p, "") for p in paths]}
                        for kind, paths in row["problems"].items()}
            splits.append({**row, "problems": problems})
        out: dict[str, Any] = {"ok": self.ok, "reason": self.reason, "deep": self.deep,
                               "seconds": round(self.seconds, 3), "settings": self.settings, "splits": splits,
                               "notes": list(self.notes)}
        if self.splits is not None:
            out.update(train_samples=len(self.splits.train), val_samples=len(self.splits.val),
                       val_source=self.splits.val_source, holdout_seed=self.splits.holdout_seed)
        return out

    def to_text(self) -> str:
        scans = [s for s in (self.train_scan, self.val_scan) if s is not None]
        details = {path: text for scan in scans for path, text in scan.details.items()}
        rows = self._rows()
        show = lambda v: "-" if v is None else str(v)  # noqa: E731
        table = [("split", "found", "valid", "invalid", "used", "folder")]
        table += [(r["split"], show(r["found"]), show(r["valid"]), show(r["invalid"]), show(r.get("used")),
                   r["folder"]) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(5)]
        packed = self.settings.get("format") == "packed"
        how = ("deep: every record checksummed" if self.deep else "record sizes") if packed else \
            _deep_words(self.deep, [(name, s) for name, s in (("train", self.train_scan), ("val", self.val_scan))
                                    if s is not None])
        lines = [f"preflight ({how}, {self.seconds:.2f} s)"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line[:5], widths, strict=True)) + "  " + line[5]
                  for line in table]
        for r in rows:
            for kind, paths in r["problems"].items():
                lines.append(f"  {r['split']}: {len(paths)} x {kind} ({PROBLEM_KINDS[kind]}), e.g.")
                lines += [f"      {p}: {details.get(p, '')}" for p in paths[:EXAMPLES]]
                if len(paths) > EXAMPLES:
                    lines.append(f"      ... and {len(paths) - EXAMPLES} more (--json lists all)")
        lines += [f"  note: {note}" for note in self.notes]
        if self.ok:
            invalid = sum(s.invalid for s in scans)
            note = f"; {invalid} invalid samples excluded" if invalid else ""
            lines.append(f"preflight: OK: {self.reason}{note}")
        else:
            lines.append(f"preflight: FAILED: {self.reason}")
        return "\n".join(lines)


def _check_packs(cfg: config_mod.Config, report: PreflightReport, deep: bool, errors: list[str]) -> None:
    """The packs' scans stand in for the folder scans; every pack problem is an error of its split."""
    from edgeflow.data.pack import config_splits, open_split_for_config, split_dir

    d = cfg.data
    report.deep = deep  # what was done to the packs: checksums or sizes
    for split in config_splits(cfg):
        where = f"{split_dir(d.packed_dir, split)} (pack of {d.train_dir if split == 'train' else d.val_dir})"
        if split == "train":
            report.train_dir = where
        else:
            report.val_dir = where
        try:
            pack, note = open_split_for_config(cfg, d.packed_dir, split, deep=deep)
        except DataError as exc:
            errors.append(f"{'training' if split == 'train' else 'validation'} {exc}")
            continue
        if note:
            report.notes.append(note)
        if split == "train":
            report.train_scan = pack.scan()
        else:
            report.val_scan = pack.scan()


def _deep_words(deep: bool, scans: list[tuple[str, SplitScan]]) -> str:
    if not deep:
        return "headers only"
    sampled = [(n, s) for n, s in scans if s.deep_checked < s.deep_candidates]
    if not sampled:
        return "deep: every file decoded"
    return "deep: " + ", ".join(f"decoded {s.deep_checked} of {s.deep_candidates} {n}" for n, s in sampled) + \
        " samples (data.preflight_sample)"


def deep_settings(cfg: config_mod.Config, mode: bool | str) -> tuple[bool, int | None, int]:
    """(decode?, at most this many, unless at most this many passed the headers) for scan_split."""
    if mode is True:
        mode = "full"
    elif mode is False:
        mode = "headers"
    n = cfg.data.preflight_sample
    return {"headers": (False, None, 0), "full": (True, None, 0), "sample": (True, n, 0),
            "auto": (True, n, AUTO_FULL_MAX)}[mode]


class _Progress:
    """A bar with a time estimate on a terminal (rich); elsewhere (a job log) a line every 10 s."""

    def __init__(self, what: str) -> None:
        self.what, self.done, self.total = what, 0, 0
        self.started = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, n: int, total: int) -> None:
        with self.lock:
            if n == 0:
                self.total = total
                self._open()
                return
            self.done += n
            if self.bar is not None:
                self.bar.update(self.task, completed=self.done)
            elif time.monotonic() - self.last >= 10 or self.done == self.total:
                self.last = time.monotonic()
                elapsed = self.last - self.started
                left = elapsed / self.done * (self.total - self.done)
                print(f"preflight: {self.what}: decoded {self.done}/{self.total} samples in {elapsed:.0f} s, "
                      f"about {left:.0f} s left", file=sys.stderr, flush=True)

    def _open(self) -> None:
        if not sys.stderr.isatty() or not self.total:
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
        except ImportError:
            return
        self.bar = Progress(f"preflight {self.what}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.what, total=self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _scan(directory: str, cfg: config_mod.Config, mode: bool | str, what: str, progress: bool) -> SplitScan:
    deep, limit, full_max = deep_settings(cfg, mode)
    bar = _Progress(what) if progress and deep else None
    try:
        return scan_split(directory, deep=deep, min_size=min_size_of(cfg), deep_limit=limit,
                          deep_full_max=full_max, progress=bar)
    finally:
        if bar is not None:
            bar.close()


def run_preflight(cfg: config_mod.Config, *, deep: bool | str = False, progress: bool = False) -> PreflightReport:
    """Scan and judge the data of `cfg`. Never raises for bad data: `ok` is False and `reason` says why.

    `deep`: False (headers only), True (decode everything) or a data.preflight_deep mode; `progress`
    shows the decoding's progress and time estimate on stderr.
    """
    start = time.perf_counter()
    d = cfg.data
    settings = {"train_dir": d.train_dir, "val_dir": d.val_dir, "holdout_samples": d.holdout_samples,
                "holdout_seed": d.holdout_seed, "input_height": d.input_height, "input_width": d.input_width,
                "train_batch_size": cfg.train.batch_size, "eval_batch_size": cfg.eval.batch_size,
                "format": d.format, "packed_dir": d.packed_dir}
    decode = deep_settings(cfg, deep)[0]
    report = PreflightReport(ok=False, reason="", deep=decode, seconds=0.0, train_dir=d.train_dir,
                             val_dir=d.val_dir, settings=settings)
    errors: list[str] = []
    if d.format == "packed":
        # A pack was decoded and checked when it was made: only "full" checksums every record again.
        _check_packs(cfg, report, deep in (True, "full"), errors)
    else:
        try:
            report.train_scan = _scan(d.train_dir, cfg, deep, "train", progress)
        except DataError as exc:
            errors.append(f"training {exc}")
        if d.val_dir:
            try:
                report.val_scan = _scan(d.val_dir, cfg, deep, "val", progress)
            except DataError as exc:
                errors.append(f"validation {exc}")
    if not errors and report.train_scan is not None:
        try:
            report.splits = select_splits(cfg, report.train_scan, report.val_scan)
            if d.format != "packed":
                check_excluded(cfg, report.train_scan, report.val_scan)
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        report.reason = "; ".join(dict.fromkeys(errors))
    else:
        s = report.splits
        assert s is not None
        where = "val_dir" if s.val_source == "val_dir" else f"holdout of train_dir, seed {s.holdout_seed}"
        report.ok = True
        report.reason = f"{len(s.train)} training and {len(s.val)} validation samples ({where})"
    report.seconds = time.perf_counter() - start
    return report
