"""`python -m jobs list [--root DIR]`: every run under an output root, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.progress import human_duration, significant

from . import health

COLUMNS = ("experiment", "status", "verdict", "epoch", "best EPE", "last progress", "queue")


def run_dirs(root: Path) -> list[Path]:
    """Run directories directly under `root` (they hold run.json or jobs/), by name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and ((p / rundir.RUN_FILE).exists() or (p / rundir.JOBS_DIR).is_dir()))


def row(info: dict[str, Any]) -> dict[str, str]:
    state, verdict = info.get("state") or {}, info.get("health") or {}
    epoch = state.get("epoch", (info.get("epoch") or {}).get("epoch"))
    total = state.get("num_epochs")
    best = rundir.as_float(state.get("best_epe"))
    age = verdict.get("progress_age_s")
    queue = info.get("queue") or {}
    return {
        "experiment": str(info["experiment"]),
        "status": str(info["status"]),
        "verdict": str(verdict.get("verdict", "")),
        "epoch": "-" if epoch is None else f"{epoch}" + (f"/{total}" if total else ""),
        "best EPE": significant(best),
        "last progress": "-" if age is None else f"{human_duration(age)} ago",
        "queue": ", ".join(f"{j} {s}" for j, s in sorted(queue.items())) or "-",
    }


def table(rows: list[dict[str, str]]) -> str:
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def describe_all(root: Path, stall_s: float = health.DEFAULT_STALL_SECONDS) -> list[dict[str, Any]]:
    from .status import describe

    return [describe(run, stall_s) for run in run_dirs(root)]
