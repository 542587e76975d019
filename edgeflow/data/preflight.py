"""`python -m edgeflow preflight`: can this config's data train? Light: no TensorFlow.

Scans data.train_dir and data.val_dir (or the fixed holdout carved from train_dir), prints per split
the samples found, valid and each kind of problem with example paths, and exits 0 when training can
start or 2 with a one-line reason. The launcher calls `run_preflight(cfg, deep=...)` directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from edgeflow import config as config_mod
from edgeflow.data.scan import (
    PROBLEM_KINDS,
    DataError,
    Splits,
    SplitScan,
    min_size_of,
    scan_split,
    select_splits,
)
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK

EXAMPLES = 3


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
                               "seconds": round(self.seconds, 3), "settings": self.settings, "splits": splits}
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
        lines = [f"preflight ({'deep: every file decoded' if self.deep else 'headers only'}, "
                 f"{self.seconds:.2f} s)"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(line[:5], widths, strict=True)) + "  " + line[5]
                  for line in table]
        for r in rows:
            for kind, paths in r["problems"].items():
                lines.append(f"  {r['split']}: {len(paths)} x {kind} ({PROBLEM_KINDS[kind]}), e.g.")
                lines += [f"      {p}: {details.get(p, '')}" for p in paths[:EXAMPLES]]
                if len(paths) > EXAMPLES:
                    lines.append(f"      ... and {len(paths) - EXAMPLES} more (--json lists all)")
        if self.ok:
            invalid = sum(s.invalid for s in scans)
            note = f"; {invalid} invalid samples excluded" if invalid else ""
            lines.append(f"preflight: OK: {self.reason}{note}")
        else:
            lines.append(f"preflight: FAILED: {self.reason}")
        return "\n".join(lines)


def run_preflight(cfg: config_mod.Config, *, deep: bool = False) -> PreflightReport:
    """Scan and judge the data of `cfg`. Never raises for bad data: `ok` is False and `reason` says why."""
    start = time.perf_counter()
    d = cfg.data
    settings = {"train_dir": d.train_dir, "val_dir": d.val_dir, "holdout_samples": d.holdout_samples,
                "holdout_seed": d.holdout_seed, "input_height": d.input_height, "input_width": d.input_width,
                "train_batch_size": cfg.train.batch_size, "eval_batch_size": cfg.eval.batch_size}
    report = PreflightReport(ok=False, reason="", deep=deep, seconds=0.0, train_dir=d.train_dir, val_dir=d.val_dir,
                             settings=settings)
    errors = []
    try:
        report.train_scan = scan_split(d.train_dir, deep=deep, min_size=min_size_of(cfg))
    except DataError as exc:
        errors.append(f"training {exc}")
    if d.val_dir:
        try:
            report.val_scan = scan_split(d.val_dir, deep=deep, min_size=min_size_of(cfg))
        except DataError as exc:
            errors.append(f"validation {exc}")
    if not errors and report.train_scan is not None:
        try:
            report.splits = select_splits(cfg, report.train_scan, report.val_scan)
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeflow preflight",
                                     description="Check a config's data before training (exit 0 ok, 2 not).")
    parser.add_argument("--config", required=True, help="experiment config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.val_dir=data/val (repeatable)")
    parser.add_argument("--deep", action="store_true", help="also decode every PNG and .flo (needs OpenCV)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable report")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.config, args.overrides)
    except config_mod.ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": str(exc)}))
        print(f"preflight: FAILED: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = run_preflight(cfg, deep=args.deep)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    if not report.ok:
        if args.json:
            print(f"preflight: FAILED: {report.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
