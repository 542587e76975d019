"""metrics.csv: one row per epoch, rebuilt from events.jsonl (so it can never disagree with it)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from edgeflow.rundir.figures import CSV_COLUMNS

METRICS_COLUMNS = CSV_COLUMNS
ARCH_COLUMN_PREFIX = "epe_"  # per-arch EPE columns: epe_000021222, ... (sorted by code)


def metrics_rows(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch from `epoch` and `eval` events; a re-run epoch (after a kill) replaces the
    earlier attempt, so the file never lists an epoch twice."""
    rows: dict[int, dict[str, Any]] = {}
    for ev in events:
        try:
            epoch = int(ev["epoch"])
        except (KeyError, TypeError, ValueError):
            continue
        if ev.get("event") == "epoch":
            rows[epoch] = {k: ev.get(k) for k in METRICS_COLUMNS if k in ev}
        elif ev.get("event") == "eval" and epoch in rows:
            rows[epoch].update({k: ev.get(k) for k in METRICS_COLUMNS if k in ev and k != "epoch"})
            arch_epe = ev.get("arch_epe")
            if isinstance(arch_epe, dict):
                rows[epoch].update({f"{ARCH_COLUMN_PREFIX}{code}": v for code, v in arch_epe.items()})
    return [rows[e] for e in sorted(rows)]


def metrics_csv(events: Iterable[dict[str, Any]]) -> str:
    rows = metrics_rows(events)
    arch_columns = sorted({k for r in rows for k in r if k.startswith(ARCH_COLUMN_PREFIX)})
    columns = list(METRICS_COLUMNS) + arch_columns
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()
