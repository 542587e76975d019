"""`python -m edgeflow preflight`: can this config's data train? Light: no TensorFlow.

Scans every split of the config through its source (a folder, or the pack made from it: the same
`sources_for` the trainer uses), prints per split the samples found, valid and each kind of problem
with example paths, and says plainly what was and was not checked. Exit 0 when training can start,
4 with a one-line reason. The launcher calls `run_preflight(cfg, deep=...)` directly.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from edgeflow import config as config_mod
from edgeflow.data import exclude
from edgeflow.data.samples import PROBLEM_KINDS, DataError, Splits, SplitScan
from edgeflow.data.splits import exclusion_record, scan_options, sources_for, splits_of
from edgeflow.progress import ThreadedProgress

EXAMPLES = 3


@dataclass
class SplitRow:
    split: str
    where: str  # the folder, or "<pack> (pack of <folder>)"
    scan: SplitScan | None = None  # None when the split could not be read


@dataclass
class PreflightReport:
    ok: bool
    reason: str
    mode: str  # data.preflight_deep mode that was applied
    seconds: float
    rows: list[SplitRow] = field(default_factory=list)
    splits: Splits | None = None  # set when ok
    settings: dict[str, Any] = field(default_factory=dict)
    packed: bool = False

    @property
    def deep(self) -> bool:
        return self.mode != "headers"

    @property
    def train_scan(self) -> SplitScan | None:
        return next((r.scan for r in self.rows if r.split == "train"), None)

    @property
    def val_scan(self) -> SplitScan | None:
        return next((r.scan for r in self.rows if r.split == "val"), None)

    @property
    def notes(self) -> list[str]:
        notes = [note for r in self.rows if r.scan is not None for note in r.scan.notes]
        return notes + exclude.notes(self.exclusion) if self.exclusion else notes

    @property
    def exclusion(self) -> dict[str, Any] | None:
        """data.exclude_list's record: samples left out on purpose per split, entries that matched nothing."""
        return self.settings.get("exclusion")

    def _details(self) -> dict[str, str]:
        return {path: text for r in self.rows if r.scan is not None for path, text in r.scan.details.items()}

    def _table_rows(self) -> list[dict[str, Any]]:
        rows = []
        for r in self.rows:
            row: dict[str, Any] = {"split": r.split, "folder": r.where}
            if r.scan is None:
                row.update(found=None, valid=None, invalid=None, problems={})
            else:
                row.update(found=r.scan.found, valid=len(r.scan.valid), invalid=r.scan.invalid,
                           problems={kind: list(paths) for kind, paths in r.scan.problems.items()})
            if self.splits is not None:
                row["used"] = len(self.splits.train if r.split == "train" else self.splits.evals[r.split].samples
                                  if r.split in self.splits.evals else [])
            rows.append(row)
        if not any(r.split == "val" for r in self.rows) and self.settings.get("holdout_samples"):
            seed = self.settings.get("holdout_seed")
            used = len(self.splits.evals["val"].samples) if self.splits is not None else None
            train = self.rows[0].where if self.rows else self.settings.get("train_dir")
            rows.append({"split": "val", "folder": f"holdout of {train} (seed {seed})",
                         "found": None, "valid": used, "invalid": None, "problems": {}, "used": used})
        return rows

    def checked(self) -> str:
        """What this preflight looked at, and what it did not, in words."""
        if self.packed:
            return "deep: every record checksummed" if self.mode == "full" else \
                "record sizes and headers (--deep checksums every record)"
        if not self.deep:
            return ("headers only: PNG signatures, sizes and ends, .flo/.pfm headers and sizes; pixel data and "
                    "flow values not decoded (--deep decodes them)")
        sampled = [(r.split, r.scan) for r in self.rows
                   if r.scan is not None and r.scan.deep_checked < r.scan.deep_candidates]
        if not sampled:
            return "deep: every file decoded"
        return "deep: " + ", ".join(f"decoded {s.deep_checked} of {s.deep_candidates} {n}" for n, s in sampled) + \
            " samples (data.preflight_sample); the others: headers only"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: every problem path is listed, with what is wrong with it."""
        details = self._details()
        splits = []
        for row in self._table_rows():
            problems = {kind: {"count": len(paths), "paths": paths, "details": [details.get(p, "") for p in paths]}
                        for kind, paths in row["problems"].items()}
            splits.append({**row, "problems": problems})
        out: dict[str, Any] = {"ok": self.ok, "reason": self.reason, "deep": self.deep, "mode": self.mode,
                               "checked": self.checked(), "seconds": round(self.seconds, 3),
                               "settings": self.settings, "splits": splits, "notes": list(self.notes)}
        if self.splits is not None:
            out.update(train_samples=len(self.splits.train), val_samples=len(self.splits.val),
                       val_source=self.splits.val_source, holdout_seed=self.splits.holdout_seed)
        return out

    def to_text(self) -> str:
        details = self._details()
        rows = self._table_rows()
        show = lambda v: "-" if v is None else str(v)  # noqa: E731
        table = [("split", "found", "valid", "invalid", "used", "folder")]
        table += [(r["split"], show(r["found"]), show(r["valid"]), show(r["invalid"]), show(r.get("used")),
                   r["folder"]) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(5)]
        lines = [f"preflight ({self.seconds:.2f} s)"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line[:5], widths, strict=True)) + "  " + line[5]
                  for line in table]
        for r in rows:
            for kind, paths in r["problems"].items():
                lines.append(f"  {r['split']}: {len(paths)} x {kind} ({PROBLEM_KINDS.get(kind, kind)}), e.g.")
                lines += [f"      {p}: {details.get(p, '')}" for p in paths[:EXAMPLES]]
                if len(paths) > EXAMPLES:
                    lines.append(f"      ... and {len(paths) - EXAMPLES} more (--json lists all)")
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  checked: {self.checked()}")
        if self.ok:
            invalid = sum(r.scan.broken for r in self.rows if r.scan is not None)
            listed = sum(r.scan.listed for r in self.rows if r.scan is not None)
            note = f"; {invalid} invalid samples excluded" if invalid else ""
            note += f"; {listed} samples left out on purpose (data.exclude_list)" if listed else ""
            lines.append(f"preflight: OK: {self.reason}{note}")
        else:
            lines.append(f"preflight: FAILED: {self.reason}")
        return "\n".join(lines)


def run_preflight(cfg: config_mod.Config, *, deep: bool | str = False, progress: bool = False) -> PreflightReport:
    """Scan and judge the data of `cfg`. Never raises for bad data: `ok` is False and `reason` says why.

    `deep`: False (headers only), True (decode everything) or a data.preflight_deep mode; `progress`
    shows the decoding's progress and time estimate on stderr.
    """
    start = time.perf_counter()
    d = cfg.data
    settings = {"dataset": d.dataset, "root": d.root, "train_dir": d.train_dir, "val_dir": d.val_dir,
                "holdout_samples": d.holdout_samples, "select_on": cfg.eval.select_on,
                "eval_splits": list(cfg.eval.splits), "exclude_list": d.exclude_list,
                "holdout_seed": d.holdout_seed, "input_height": d.input_height, "input_width": d.input_width,
                "train_batch_size": cfg.train.batch_size, "eval_batch_size": cfg.eval.batch_size,
                "format": d.format, "packed_dir": d.packed_dir}
    mode = "full" if deep is True else "headers" if deep is False else deep
    report = PreflightReport(ok=False, reason="", mode=mode, seconds=0.0, settings=settings,
                             packed=d.format == "packed")
    errors: list[str] = []
    for source in sources_for(cfg):
        row = SplitRow(source.split, source.describe())
        report.rows.append(row)
        bar = ThreadedProgress(f"preflight {source.split}: decoding", stream=sys.stderr) if progress else None
        try:
            row.scan = source.scan(scan_options(cfg, deep, bar, split=source.split))
        except DataError as exc:
            what = {"train": "training", "val": "validation"}.get(source.split, f"evaluation split {source.split}:")
            errors.append(f"{what} {exc}")
        finally:
            if bar is not None:
                bar.close()
    scans = {r.split: r.scan for r in report.rows if r.scan is not None}
    if d.exclude_list:
        try:
            settings["exclusion"] = exclusion_record(cfg, scans)
        except DataError as exc:
            errors.append(str(exc))
    if not errors and report.train_scan is not None:
        try:
            report.splits = splits_of(cfg, scans)
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        report.reason = "; ".join(dict.fromkeys(errors))
    else:
        s = report.splits
        assert s is not None
        of = "train_dir" if d.dataset == "fc2" else "the training samples"
        where = ("val_dir" if s.val_source == "val_dir" else f"holdout of {of}, seed {s.holdout_seed}"
                 if s.val_source == "holdout" else f"eval.select_on: {s.select_on}")
        others = [f"{len(split.samples)} in {name}" for name, split in s.evals.items() if name != s.select_on]
        report.ok = True
        report.reason = f"{len(s.train)} training and {len(s.val)} validation samples ({where})" + \
            (f"; evaluation splits: {', '.join(others)}" if others else "")
    report.seconds = time.perf_counter() - start
    return report
