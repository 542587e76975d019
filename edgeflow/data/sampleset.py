"""The sample set a run trains on: count and digest per split (run.json), the ids (samples.json).

Light module. A resume compares the set it finds with the one the run recorded, so samples that
turned invalid (or appeared) between a preemption and the requeue never change the permutation,
the steps per epoch and the LR horizon silently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.data.samples import DataError, Splits, sort_key

SPLITS = ("train", "val")
EXAMPLES = 5


def split_ids(splits: Splits) -> dict[str, list[str]]:
    return {"train": sorted((s.sample_id for s in splits.train), key=sort_key),
            "val": sorted((s.sample_id for s in splits.val), key=sort_key)}


def digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def record(ids: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """What run.json keeps: {"train": {"count", "digest"}, "val": {...}}."""
    return {name: {"count": len(ids[name]), "digest": digest(ids[name])} for name in SPLITS}


def write_ids(path: Path, ids: dict[str, list[str]]) -> None:
    rundir.atomic_write_json(path, ids)


def read_ids(path: Path) -> dict[str, list[str]] | None:
    try:
        data = rundir.read_json(path)
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(n), list) for n in SPLITS):
        return None
    return {n: [str(i) for i in data[n]] for n in SPLITS}


def differences(recorded: dict[str, Any], ids: dict[str, list[str]],
                recorded_ids: dict[str, list[str]] | None) -> dict[str, dict[str, Any]]:
    """Per changed split: counts before/after and the added/removed ids (when the old ids are known)."""
    changed: dict[str, dict[str, Any]] = {}
    now = record(ids)
    for name in SPLITS:
        old = recorded.get(name)
        if not isinstance(old, dict) or old.get("digest") == now[name]["digest"]:
            continue
        entry: dict[str, Any] = {"before": old.get("count"), "after": now[name]["count"], "added": [],
                                 "removed": []}
        if recorded_ids is not None and digest(recorded_ids[name]) == old.get("digest"):
            before, after = set(recorded_ids[name]), set(ids[name])
            entry["added"] = sorted(after - before, key=sort_key)
            entry["removed"] = sorted(before - after, key=sort_key)
        changed[name] = entry
    return changed


def describe(changed: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, entry in changed.items():
        text = f"{name} {entry['before']} -> {entry['after']} samples"
        for what in ("removed", "added"):
            ids = entry[what]
            if ids:
                more = f" and {len(ids) - EXAMPLES} more" if len(ids) > EXAMPLES else ""
                text += f", {len(ids)} {what} ({', '.join(ids[:EXAMPLES])}{more})"
        if not entry["added"] and not entry["removed"]:
            text += " (different ids; the recorded list is not available)"
        parts.append(text)
    return "; ".join(parts)


def resume_change(allow: bool, root: Path, previous: dict[str, Any] | None, ids: dict[str, list[str]],
                  recorded_ids: dict[str, list[str]] | None, state: dict[str, Any]) -> dict[str, Any] | None:
    """Step 5 of the start: None when the set is the run's; raises DataError on a change not allowed.

    An allowed change returns what run_start records as `data_change`: the differences and the epoch
    from which the new order applies. A resume inside an epoch ends that epoch where it stopped (the
    rest of its order was a permutation of the old set); the next epoch is a permutation of the new one.
    """
    recorded = (previous or {}).get("data")
    if not isinstance(recorded, dict):
        return None  # a run started before sample sets were recorded: nothing to compare with
    changed = differences(recorded, ids, recorded_ids)
    if not changed:
        return None
    text = describe(changed)
    if not allow:
        raise DataError(f"{root}: the sample set differs from the one this run trained on: {text}; resuming on "
                        f"it would change the order mid-epoch, the steps per epoch and the LR horizon. Restore "
                        f"the data, or set data.allow_changed_samples=true to continue with a new order from "
                        f"the next epoch")
    epoch, batch = int(state.get("epoch", 0)), int(state.get("batch_in_epoch", 0))
    change = {"split": changed, "from_epoch": epoch + (2 if batch else 1)}
    cut = f"epoch {epoch + 1} ends at batch {batch}; " if batch else ""
    print(f"sample set changed ({text}); data.allow_changed_samples: {cut}new order from epoch "
          f"{change['from_epoch']}", flush=True)
    return change


def reconcile_state(path: Path, pointer_state: dict[str, Any]) -> bool:
    """state.json is written after the checkpoint pointer, never before (it must not claim an epoch whose
    checkpoint could be lost); a kill between the two leaves it one epoch behind. Bring it level."""
    state = rundir.read_state(path)
    if state is None:
        return False
    position = ("epoch", "step", "batch_in_epoch")
    try:
        behind = tuple(int(state.get(k) or 0) for k in position) < tuple(int(pointer_state.get(k) or 0)
                                                                         for k in position)
    except (TypeError, ValueError):
        behind = True
    if not behind:
        return False
    for key in position:
        state[key] = pointer_state.get(key)
    early = pointer_state.get("early_stop")
    if isinstance(early, dict):
        state.update(best_epe=early.get("best"), best_epoch=early.get("best_epoch"),
                     bad_epochs=early.get("bad_epochs"))
    for key in ("arch_digest", "data_digest"):
        if key in pointer_state:
            state[key] = pointer_state[key]
    rundir.atomic_write_json(path, state)
    return True
