"""Everything a trainer writes into its run directory goes through a Recorder.

The chief of a job (task 0, or the only trainer) gets a `Recorder`; every other task of a multi-worker
job gets a `NullRecorder`, which checks each event against its schema and writes nothing. So "only the
chief writes" is a type, not a convention scattered through the loop.

The chief's recorder holds the run directory's lock (edgeflow/rundir/lock.py) from `start` to
`close`: a second trainer on the same experiment is refused before it writes anything.

One call feeds every writer: `record("epoch", **fields)` appends the event to events.jsonl, writes the
TensorBoard scalars the figure table (edgeflow/rundir/figures.py) names for it, and rebuilds
metrics.csv, so the three can never disagree. `flow_samples` keeps an evaluation's flow pictures
(flow_samples.npz, which `edgeflow report` draws) and writes them as TensorBoard images. A write that
fails (a read-only or full file system) raises `RunDirWriteError` naming the file, which ends the run
with one clear line.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeflow import rundir
from edgeflow.rundir.flow_samples_file import FlowSamples, write_flow_samples
from edgeflow.train.checkpoint import CheckpointStore, Pointer
from edgeflow.train.start import Plan, write_run_start_files


class RunDirWriteError(OSError):
    """A file of the run directory could not be written; the message names it and why."""


def _write_error(exc: BaseException, what: str) -> RunDirWriteError:
    reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
    where = getattr(exc, "filename", None) or what
    return RunDirWriteError(f"cannot write {where}: {str(reason).strip().splitlines()[0]}")


class Recorder:
    """The chief's writer of the run directory."""

    def __init__(self, plan: Plan, job_id: str | None) -> None:
        self.plan = plan
        self.paths = plan.paths
        self.job_id = job_id
        self.store = CheckpointStore(self.paths.checkpoints)
        self._events: rundir.EventLog | None = None
        self._summaries: Any = None
        self._pictures_note = ""  # why TensorBoard gets no flow pictures (said once)
        self._lock = rundir.RunLock(self.paths.root)

    # ------------------------------------------------------------------------------ start and end
    def start(self, **run_fields: Any) -> None:
        """Take the run directory (RunLocked when another trainer holds it), then write config.yaml,
        samples.json and run.json of this start (after every check passed)."""
        self._guard(str(self.paths.root), self._lock.acquire)
        self._guard("the start files", lambda: write_run_start_files(self.plan, self.job_id, **run_fields))
        self._events = self._guard(str(self.paths.events), lambda: rundir.EventLog(
            self.paths.events, self.plan.cfg.runtime.experiment_name, self.job_id))

    def end(self, status: str, reason: str, code: int) -> None:
        """run_end and run.json's status; a run directory that cannot take them is left as it is (the
        caller has printed why), so this never raises."""
        try:
            self.record("run_end", status=status, reason=reason, exit_code=code)
            rundir.update_run(self.paths.run, status=status, reason=reason)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._summaries is not None:
            self._summaries.close()
            self._summaries = None
        self._lock.release()

    # ------------------------------------------------------------------------------ figures
    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """One event: events.jsonl, and for `epoch`/`eval` the TensorBoard scalars and metrics.csv."""
        if self._events is None:
            raise RuntimeError("Recorder.record before start()")
        events = self._events
        written = self._guard(str(self.paths.events), lambda: events.emit(event, **fields))
        if event in ("epoch", "eval"):
            self._guard(str(self.paths.tensorboard), lambda: self._tensorboard(event, fields))
            self._guard(str(self.paths.metrics), self._metrics_csv)
        return written

    def _summary_writer(self) -> Any:
        if self._summaries is None:
            from edgeflow.train.summaries import Summaries  # TensorFlow: only the chief opens a writer

            self._summaries = Summaries(self.paths.tensorboard)
        return self._summaries

    def _tensorboard(self, event: str, fields: dict[str, Any]) -> None:
        self._summary_writer().write(event, fields)

    def flow_samples(self, samples: FlowSamples) -> None:
        """An evaluation's flow pictures: flow_samples.npz (replacing the previous one) and TensorBoard images."""
        self._guard(str(self.paths.flow_samples), lambda: write_flow_samples(self.paths.flow_samples, samples))
        try:  # the colour coding: the `report` extra (the image installs it)
            import flow_vis  # noqa: F401
            import matplotlib  # noqa: F401
        except ImportError as exc:
            if not self._pictures_note:
                self._pictures_note = str(exc)
                print(f"flow pictures: no TensorBoard images ({exc}; install the `report` extra); "
                      f"{self.paths.flow_samples.name} is written for `edgeflow report`", flush=True)
            return
        self._guard(str(self.paths.tensorboard), lambda: self._summary_writer().write_pictures(samples))

    def _metrics_csv(self) -> None:
        rundir.atomic_write_text(self.paths.metrics, rundir.metrics_csv(rundir.read_events(self.paths.events)))

    # ------------------------------------------------------------------------------ state
    def state(self, values: dict[str, Any]) -> None:
        self._guard(str(self.paths.state), lambda: rundir.write_state(self.paths.state, values))

    def checkpoint(self, kind: str, epoch: int, write: Callable[[str], object], state: dict[str, Any],
                   also: tuple[str, ...] = (), **extra: Any) -> Pointer:
        """A crash-safe checkpoint of `kind` (and of the kinds `also`, a kept epoch-<N>, naming the same
        files), then an event for each."""
        pointer = self._guard(str(self.paths.checkpoints), lambda: self.store.save(kind, write, state, also))
        self.record("checkpoint", epoch=epoch, kind=kind, path=str(pointer.prefix), **extra)
        for other in also:
            self.record("checkpoint", epoch=epoch, kind=other, path=str(pointer.prefix), **extra)
        return pointer

    @staticmethod
    def _guard(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except RunDirWriteError:
            raise
        except OSError as exc:
            raise _write_error(exc, what) from None
        except Exception as exc:
            # TensorFlow's own I/O errors (a checkpoint or summary write) are not OSErrors.
            if type(exc).__module__.startswith("tensorflow") and "Error" in type(exc).__name__:
                raise _write_error(exc, what) from None
            raise


class NullRecorder(Recorder):
    """The recorder of a task that is not the chief: events are checked, nothing is written."""

    def __init__(self, plan: Plan, job_id: str | None, task_index: int) -> None:
        super().__init__(plan, job_id)
        self.task_index = task_index
        self._null = rundir.NullEventLog(plan.cfg.runtime.experiment_name, job_id)

    def start(self, **run_fields: Any) -> None:
        pass

    def end(self, status: str, reason: str, code: int) -> None:
        self._null.emit("run_end", status=status, reason=reason, exit_code=code)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        return self._null.emit(event, **fields)

    def state(self, values: dict[str, Any]) -> None:
        pass

    def flow_samples(self, samples: FlowSamples) -> None:
        pass

    def checkpoint(self, kind: str, epoch: int, write: Callable[[str], object], state: dict[str, Any],
                   also: tuple[str, ...] = (), **extra: Any) -> Pointer:
        # Every task writes (TensorFlow may read mirrored values with collectives while saving), the
        # others into a private folder that is removed at once.
        scratch = tempfile.mkdtemp(prefix=f"edgeflow-task{self.task_index}-")
        try:
            write(f"{scratch}/{kind}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.record("checkpoint", epoch=epoch, kind=kind, path="", **extra)
        return Pointer(kind=kind, prefix=Path(scratch) / kind, state=state)
