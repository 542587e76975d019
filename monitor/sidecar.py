"""The sidecar's model: the runs it follows and its own health, refreshed by `scan()`.

Runs are found from the file system on every scan (`--run DIR` or every run directory below `--root`),
so a sidecar started late or restarted catches up from what already exists.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeflow.console import console_logger
from edgeflow.rundir import EVENTS_FILE, RUN_FILE, STATE_FILE, RunPaths

from .follow import EventTail, TailResult, read_regular
from .runstate import Horizon, RunState

log = console_logger("monitor", "monitor: %(message)s")  # stderr: stdout is for --print

# Folders inside a run that never hold runs; not walked when looking for runs below --root.
SKIP_DIRS = frozenset({"checkpoints", "jobs", "__pycache__"})
MAX_DEPTH = 4
# A run's rankings and searches (RUN/rank/<name>/, RUN/search/<name>/) report in their own events.jsonl.
NESTED_DIRS = ("rank", "search")


def is_run_dir(path: Path) -> bool:
    return (path / EVENTS_FILE).is_file() or (path / RUN_FILE).is_file()


def find_runs(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Run directories below `root` (a run directory holds events.jsonl or run.json); not below a run."""
    found: list[Path] = []

    def walk(directory: Path, depth: int) -> None:
        if is_run_dir(directory):
            found.append(directory)
            for nested in NESTED_DIRS:
                try:
                    found.extend(p for p in sorted((directory / nested).iterdir()) if is_run_dir(p))
                except OSError:
                    pass
            return
        if depth >= max_depth:
            return
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name in SKIP_DIRS or entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), depth + 1)
            except OSError:
                continue

    walk(root, 0)
    return found


def _file_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_json_dict(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object, None) or (None, what is wrong with the file)."""
    try:
        data = json.loads(read_regular(path))
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser's depth
        data = None
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object; ignored"
    return data, None


# The key of a run's fault that is no single file's: the reader itself failed on this run's files.
READER = "(reader)"


class RunFollower:
    """One run directory: tails events.jsonl, re-reads run.json/state.json when they change."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.paths = RunPaths(directory)
        self.tail = EventTail(self.paths.events)
        self.from_events = RunState()
        self.run_json: dict | None = None
        self.state_json: dict | None = None
        self._run_key: tuple | None = None
        self._state_key: tuple | None = None
        self.state = RunState()
        # file name (or READER) -> what is wrong with it now; each said once on stderr, counted as a metric
        self.problems: dict[str, str] = {}
        self.rejected = 0  # events that broke the reader: skipped, counted with the malformed lines
        self._future_reported = False

    def refresh(self) -> tuple[bool, int, int]:
        """Read what changed. Returns (changed, lines read, malformed lines)."""
        try:
            result = self.tail.read()
            self.problems.pop(EVENTS_FILE, None)
        except OSError as exc:
            # Unreadable (permissions, a folder or a FIFO in its place): say so once, keep the last values,
            # retry later.
            self._problem(EVENTS_FILE, f"cannot read {self.paths.events}: {exc}")
            result = TailResult()
        changed = result.reset or bool(result.events)
        if result.reset:
            self.from_events = RunState()
            self.rejected = 0
        horizon = Horizon.at(time.time(), result.mtime)
        rejected = 0
        for event in result.events:
            try:
                self.from_events.apply(event, horizon)
            except Exception as exc:  # an unforeseen fault of the reader: skip the event, never the run
                if not rejected:
                    log.warning("%s: an event broke the reader (%r); skipped", self.paths.events, exc)
                rejected += 1
        self.rejected += rejected
        if self.from_events.future_events and not self._future_reported:
            self._future_reported = True
            log.warning("%s: events dated more than a minute ahead of this host's clock (a node's clock runs "
                        "ahead?); their time is taken as the file's modification time", self.paths.events)
        for name, attr, key_attr in ((RUN_FILE, "run_json", "_run_key"), (STATE_FILE, "state_json", "_state_key")):
            path = self.dir / name
            key = _file_key(path)
            if key == getattr(self, key_attr):
                continue
            setattr(self, key_attr, key)
            data, problem = _read_json_dict(path) if key is not None else (None, None)
            if problem is not None:
                # Written atomically, so a bad one is a real fault; report once, keep the last good copy.
                self._problem(name, problem)
                continue
            self.problems.pop(name, None)
            setattr(self, attr, data)
            changed = True
        if changed:
            self._combine()
        return changed, result.lines, result.malformed + rejected

    def _problem(self, name: str, text: str) -> None:
        if self.problems.get(name) != text:
            log.warning("%s", text)
        self.problems[name] = text

    def fault(self, exc: BaseException | None) -> None:
        """Whether the reader failed on this run's files (anything unforeseen): named once, counted."""
        if exc is None:
            self.problems.pop(READER, None)
        else:
            self._problem(READER, f"{self.dir}: reading this run failed ({exc!r}); its last values are kept")

    def _combine(self) -> None:
        state = copy.deepcopy(self.from_events)
        if self.run_json:
            state.apply_run_json(self.run_json)
        if self.state_json:
            state.apply_state_json(self.state_json)
        if state.experiment is None:
            state.experiment = self.dir.name
        self.state = state

    @property
    def unreadable(self) -> int:
        return len(self.problems)

    @property
    def files_followed(self) -> int:
        return sum(1 for p in (self.paths.events, self.paths.run, self.paths.state) if p.is_file())


@dataclass
class Health:
    started: float = field(default_factory=time.time)
    scans: int = 0
    last_scan: float | None = None
    lines_read: int = 0
    export_errors: int = 0


class Sidecar:
    """Follows `runs` (explicit run directories) and/or every run below `roots`."""

    def __init__(self, runs: Sequence[Path] = (), roots: Sequence[Path] = (), observer: str = "none") -> None:
        self.run_dirs = [Path(os.path.abspath(p)) for p in runs]
        self.roots = [Path(os.path.abspath(p)) for p in roots]
        self.observer = observer
        self.followers: dict[Path, RunFollower] = {}
        self.health = Health()
        self.lock = threading.Lock()
        self.duplicates_reported: set[Path] = set()

    def discover(self) -> list[Path]:
        found = [p for p in self.run_dirs]
        for root in self.roots:
            if root.is_dir():
                found.extend(find_runs(root))
        return list(dict.fromkeys(found))

    def scan(self) -> bool:
        """Discover runs and read what changed; True when any exported value may have changed."""
        wanted = self.discover()
        changed = False
        for gone in set(self.followers) - set(wanted):
            # Only runs found below a root can disappear; an explicit --run is waited for.
            with self.lock:
                del self.followers[gone]
            changed = True
        for directory in wanted:
            follower = self.followers.get(directory)
            new = follower is None
            if follower is None:
                follower = RunFollower(directory)
                log.info("following %s", directory)
            # Read without the lock (a first scan of many long logs takes seconds): a scrape meanwhile
            # gets the runs read so far. Only this thread writes a follower; its state is swapped whole.
            try:
                run_changed, lines, malformed = follower.refresh()
                follower.fault(None)
            except Exception as exc:  # one run's files must never stop the other runs' export
                follower.fault(exc)
                run_changed, lines, malformed = False, 0, 0
            if malformed:
                log.warning("%s: skipped %d malformed line(s)", follower.paths.events, malformed)
            with self.lock:
                if new:
                    self.followers[directory] = follower
                self.health.lines_read += lines
            changed = changed or run_changed
        with self.lock:
            self.health.scans += 1
            self.health.last_scan = time.time()
        return changed

    def snapshot(self) -> tuple[list[tuple[RunFollower, RunState]], Health, dict[str, int]]:
        """A consistent copy for rendering (scrapes run on other threads)."""
        with self.lock:
            candidates = [(f, f.state) for f in self.followers.values() if f.tail.exists or f.run_json]
            runs = self._unique(candidates)
            counts = {
                "runs": len(runs),
                "duplicates": len(candidates) - len(runs),
                "files": sum(f.files_followed for f in self.followers.values()),
                "malformed": sum(f.tail.malformed_total + f.rejected for f in self.followers.values()),
                "unreadable": sum(f.unreadable for f in self.followers.values()),
                "future": sum(f.state.future_events for f in self.followers.values()),
            }
            return runs, copy.copy(self.health), counts

    def _unique(self, runs: list[tuple[RunFollower, RunState]]) -> list[tuple[RunFollower, RunState]]:
        # Two folders with the same experiment and job id (a copied run) would export duplicate series,
        # and Prometheus rejects a whole scrape with duplicates: keep the one with the newest event.
        best: dict[tuple[str | None, str | None], tuple[RunFollower, RunState]] = {}
        for follower, state in runs:
            key = (state.experiment, state.job_id)
            kept = best.get(key)
            if kept is None:
                best[key] = (follower, state)
                continue
            newer = (state.last_event_time or 0.0) > (kept[1].last_event_time or 0.0)
            dropped = kept[0] if newer else follower
            if newer:
                best[key] = (follower, state)
            if dropped.dir not in self.duplicates_reported:
                self.duplicates_reported.add(dropped.dir)
                log.warning("%s: same experiment and job id as another run directory (%s, %s); not exported",
                            dropped.dir, key[0], key[1])
        return list(best.values())
