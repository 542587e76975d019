"""Crash-safe checkpoints: `checkpoints/<kind>-<serial>.*` files plus a small pointer `<kind>.json`.

Kinds: `latest`, `best`, and with checkpoint.keep_every K the kept `epoch-<N>` (every K-th epoch's latest
checkpoint, a second pointer to its files, which no later save deletes).

Light module (the TensorFlow write is passed in as a function), so the pointer logic is testable
alone and the launcher/monitor can read pointers without TensorFlow.

Order of a save: write a fresh prefix (never one a pointer names), fsync its files and the folder,
atomically replace the pointer (a kept `epoch-<N>` pointer first, then `latest`: a crash between the
two retrains epoch N and writes both again), then delete every file no pointer names. A crash (or a power loss:
tf.train.Checkpoint renames its files without fsync) at any point leaves the previous pointer and the
files it names intact; leftovers of a half-written save are removed by the next save.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow.rundir import atomic_write_json, fsync_dir, fsync_file, read_json

KINDS = ("latest", "best")
# checkpoint.keep_every's kept checkpoints: `epoch-<N>`, named by their epoch.
KEPT = re.compile(r"^epoch-(?P<epoch>[1-9]\d*)\Z")


def kept_kind(epoch: int) -> str:
    """The kind (pointer name, `--checkpoint` value) of the checkpoint kept at the end of `epoch`."""
    return f"epoch-{int(epoch)}"


def is_kind(kind: str) -> bool:
    """Whether `kind` names a checkpoint: latest, best, or a kept epoch-<N>."""
    return kind in KINDS or bool(KEPT.match(kind))
_FILE = re.compile(r"^(?P<kind>latest|best)-(?P<serial>\d+)(?=[._]|$)")


class CheckpointError(RuntimeError):
    """A pointer that names files which are not there, or a pointer that is not valid JSON."""


@dataclass(frozen=True)
class Pointer:
    kind: str
    prefix: Path          # full path prefix, as tf.train.Checkpoint.read expects
    state: dict[str, Any]  # the training state that matches these weights


class CheckpointStore:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def pointer_path(self, kind: str) -> Path:
        _check_kind(kind)
        return self.directory / f"{kind}.json"

    def pointer(self, kind: str) -> Pointer | None:
        """The complete checkpoint of `kind`, or None when none was ever completed."""
        path = self.pointer_path(kind)
        try:
            data = read_json(path)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint pointer {path} is not valid JSON: {exc}") from None
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("prefix"), str):
            raise CheckpointError(f"checkpoint pointer {path} has no 'prefix'")
        prefix = self.directory / data["prefix"]
        if not Path(f"{prefix}.index").is_file():
            raise CheckpointError(f"checkpoint pointer {path} names {prefix}.index, which does not exist")
        return Pointer(kind=kind, prefix=prefix, state=dict(data.get("state") or {}))

    def save(self, kind: str, write: Callable[[str], object], state: dict[str, Any],
             also: tuple[str, ...] = ()) -> Pointer:
        """Write a new checkpoint of `kind` with `write(prefix)` and make the pointer name it; the kinds
        of `also` (a kept epoch-<N>) name it too, their pointers written before `kind`'s."""
        _check_kind(kind)
        for other in also:
            _check_kind(other)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{kind}-{self._next_serial():06d}"
        prefix = self.directory / name
        write(str(prefix))
        if not Path(f"{prefix}.index").is_file():
            raise CheckpointError(f"checkpoint write produced no {prefix}.index")
        self._make_durable(name)
        for other in (*also, kind):
            atomic_write_json(self.pointer_path(other), {"prefix": name, "state": state, "written": time.time()})
        self.remove_unreferenced()
        return Pointer(kind=kind, prefix=prefix, state=state)

    def point(self, kind: str, pointer: Pointer) -> Pointer:
        """Make `kind` name the files of an existing checkpoint too (one copy, two pointers)."""
        _check_kind(kind)
        atomic_write_json(self.pointer_path(kind), {"prefix": pointer.prefix.name, "state": pointer.state,
                                                    "written": time.time()})
        return Pointer(kind=kind, prefix=pointer.prefix, state=pointer.state)

    def _make_durable(self, name: str) -> None:
        """fsync every file of the new prefix, then the folder, so the pointer never names lost data."""
        for entry in sorted(self.directory.iterdir()):
            match = _FILE.match(entry.name)
            if match and f"{match['kind']}-{match['serial']}" == name and entry.is_file():
                fsync_file(entry)
        fsync_dir(self.directory)

    def kept(self) -> list[str]:
        """The kept checkpoints' kinds (epoch-<N>), by epoch."""
        found = [m for p in self.directory.glob("epoch-*.json") if (m := KEPT.match(p.name[:-len(".json")]))]
        return [m.string for m in sorted(found, key=lambda m: int(m["epoch"]))]

    def referenced(self) -> set[str]:
        names = set()
        for kind in (*KINDS, *self.kept()):
            data = read_json(self.pointer_path(kind)) if self.pointer_path(kind).exists() else None
            if isinstance(data, dict) and isinstance(data.get("prefix"), str):
                names.add(data["prefix"])
        return names

    def remove_unreferenced(self) -> list[str]:
        """Delete checkpoint files no pointer names (superseded saves and half-written leftovers)."""
        keep = self.referenced()
        removed = []
        for entry in sorted(self.directory.iterdir()):
            match = _FILE.match(entry.name)
            if not match or f"{match['kind']}-{match['serial']}" in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry.name)
        return removed

    def _next_serial(self) -> int:
        serials = [int(m["serial"]) for e in self.directory.iterdir() if (m := _FILE.match(e.name))]
        return max(serials, default=0) + 1


def _check_kind(kind: str) -> None:
    if not is_kind(kind):
        raise ValueError(f"checkpoint kind must be one of {KINDS} or epoch-<N>, got {kind!r}")
