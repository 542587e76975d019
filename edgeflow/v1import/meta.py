"""The `.meta.json` the original trainer writes next to each checkpoint prefix.

Light module. The file says where training stood (epoch, global step, early-stopping state) and how
often each option of each block was trained. Its `metric` is the pool's mean EPE measured with batch
statistics (BN in training mode on the eval batches), not with recalibrated BN.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS

_INT_FIELDS = ("epoch", "global_step", "bad_epochs")
_FLOAT_FIELDS = ("metric", "best_metric")


class MetaError(ValueError):
    """A `.meta.json` that exists but cannot be read as the original trainer writes it."""


@dataclass(frozen=True)
class SourceMeta:
    path: Path
    epoch: int | None = None
    global_step: int | None = None
    metric: float | None = None
    best_metric: float | None = None
    bad_epochs: int | None = None
    fairness_counts: dict[str, dict[str, int]] | None = None
    checkpoint_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def counts_by_block(self) -> list[list[int]] | None:
        """The fairness counts as [block][option] (state.json's layout), or None when unknown."""
        if self.fairness_counts is None:
            return None
        return [[int(self.fairness_counts.get(str(b), {}).get(str(o), 0)) for o in range(NUM_OPTIONS)]
                for b in range(NUM_BLOCKS)]

    def fairness_gap(self) -> int | None:
        counts = self.counts_by_block()
        if counts is None:
            return None
        return max(max(row) - min(row) for row in counts)

    def record(self) -> dict[str, Any]:
        """What run.json keeps of it."""
        return {"meta_file": str(self.path), "epoch": self.epoch, "global_step": self.global_step,
                "metric": self.metric, "metric_protocol": "batch_stats", "best_metric": self.best_metric,
                "bad_epochs": self.bad_epochs, "fairness_counts": self.fairness_counts,
                "fairness_counts_by_block": self.counts_by_block(), "original_checkpoint_path":
                self.checkpoint_path, "extra": self.extra}


def meta_path(prefix: Path) -> Path:
    return Path(f"{prefix}.meta.json")


def read_meta(prefix: Path) -> SourceMeta | None:
    """The prefix's `.meta.json`, or None when there is none; MetaError naming the file and key."""
    path = meta_path(prefix)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MetaError(f"{path}: not readable as JSON ({exc}); move it away to import without it") from None
    if not isinstance(raw, dict):
        raise MetaError(f"{path}: expected a JSON object")
    values: dict[str, Any] = {}
    for key in _INT_FIELDS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise MetaError(f"{path}: {key} must be an integer, got {value!r}")
        values[key] = value
    for key in _FLOAT_FIELDS:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MetaError(f"{path}: {key} must be a number, got {value!r}")
        values[key] = float(value) if value is not None and math.isfinite(value) else None
    counts = raw.get("fairness_counts")
    if counts is not None:
        counts = _check_counts(path, counts)
    extra_raw = raw.get("extra")
    extra: dict[str, Any] = dict(extra_raw) if isinstance(extra_raw, dict) else {}
    source = raw.get("checkpoint_path")
    return SourceMeta(path=path, fairness_counts=counts, extra=extra,
                      checkpoint_path=str(source) if source is not None else None, **values)


def _check_counts(path: Path, counts: Any) -> dict[str, dict[str, int]]:
    if not isinstance(counts, dict):
        raise MetaError(f"{path}: fairness_counts must be an object (block -> option -> count)")
    out: dict[str, dict[str, int]] = {}
    for block, options in counts.items():
        if str(block) not in {str(b) for b in range(NUM_BLOCKS)} or not isinstance(options, dict):
            raise MetaError(f"{path}: fairness_counts[{block!r}] is not a block 0-{NUM_BLOCKS - 1} with options")
        row: dict[str, int] = {}
        for option, count in options.items():
            if (str(option) not in {str(o) for o in range(NUM_OPTIONS)} or isinstance(count, bool)
                    or not isinstance(count, int)):
                raise MetaError(f"{path}: fairness_counts[{block!r}][{option!r}] must be an integer count "
                                f"of option 0-{NUM_OPTIONS - 1}, got {count!r}")
            row[str(option)] = count
        out[str(block)] = row
    return out
