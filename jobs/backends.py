"""Executor backends: everything that differs between running a job on SLURM and on this machine.

One backend per `executor` kind of a cluster profile, as submitit has one executor class per
scheduler: it makes the submitit executor, turns a submitted submitit job into the job id and record
fields everyone else sees, asks which recorded jobs are still queued or running, cancels them, writes
the dry-run text, says whether the submitting process must detach its stdio, and implements job
dependencies. `of(profile)` / `of_kind(kind)` pick the backend; no other module of the launcher looks at
the executor kind.

Light: submitit is imported only where an executor is made or a batch script is written, so `jobs
status` / `list` / `cancel` and the node side's dependency wait work with the standard library.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgeflow import jobenv

from .profile import ClusterProfile


class SubmitError(RuntimeError):
    """Submission refused or failed; nothing (more) was queued."""


class QueueError(RuntimeError):
    """The scheduler could not be asked (squeue failed): a job's absence from the answer proves nothing."""


@dataclass(frozen=True)
class Dependency:
    """A job that must end, with its run ended well, before a dependent job may start (pickled)."""

    job_id: str
    run_dir: str
    submitted_at: float    # the dependency's run must have ended after this
    pid: int | None = None  # the local executor's controller
    stage: int = 0          # its stage in a chain of batches (jobs/chain.py), 1 for the first


@dataclass
class Queued:
    """A submitted job as the launcher records it."""

    job_id: str
    stdout: Path
    stderr: Path
    fields: dict[str, Any]  # backend-specific fields of the submission record
    handle: Any             # the submitit Job (the local executor's holds the controller process)


class Backend:
    """The interface; a backend is stateless, its methods take the profile or the records they need."""

    kind: ClassVar[str] = ""
    # The submitting process must not hand its stdout/stderr to what it starts (it outlives the command).
    detach_stdio: ClassVar[bool] = False

    def tasks(self, profile: ClusterProfile) -> int:
        """Trainers per job (one per SLURM task; several need train.distribute multi_worker or auto)."""
        return 1

    def executor(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str,
                 array_parallelism: int | None, after: Sequence[Dependency]) -> Any:
        raise NotImplementedError

    def identify(self, job: Any) -> tuple[str, dict[str, Any]]:
        """Our job id for a submitted submitit job, and the fields its submission record adds."""
        raise NotImplementedError

    def active(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Job id -> state for the recorded jobs still queued or running (QueueError: cannot tell)."""
        raise NotImplementedError

    def visible(self) -> bool:
        """Whether this machine can see the queue at all."""
        return True

    def run_dir_of(self, job_id: str) -> str | None:
        """The run directory the scheduler itself remembers for a job id, if it does."""
        return None

    def cancel(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """Stop the recorded jobs still queued or running; a running trainer checkpoints (SIGTERM)."""
        raise NotImplementedError

    def running(self, queued: Sequence[Queued]) -> list[Queued]:
        """Those of our submitted jobs that have not ended yet (waiting for them; QueueError: cannot tell)."""
        raise NotImplementedError

    def dry_run(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str, count: int,
                array_parallelism: int | None, after: Sequence[Dependency]) -> list[str]:
        """What would be queued, as comment lines or the batch script."""
        raise NotImplementedError

    def wait_ended(self, deps: Sequence[Dependency], stop: Callable[[], bool], poll_s: float = 2.0) -> bool:
        """Node side: block until every dependency's job ended (False: `stop` asked to give up)."""
        return True

    @contextlib.contextmanager
    def submitting(self) -> Iterator[None]:
        """Around submitit's submit calls."""
        if not self.detach_stdio:
            yield
            return
        with _detached_stdio():
            yield


# -- SLURM -------------------------------------------------------------------------------------------

# squeue states of jobs that are over (squeue -j still lists a job shortly after it ended).
_ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                           "BOOT_FAIL", "DEADLINE", "PREEMPTED"})


def squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
    """State of each job id SLURM still knows (PENDING, RUNNING, ...); absent ids have left the queue.

    A failed squeue (slurmctld busy or unreachable) raises QueueError: taking its empty answer for an
    empty queue would let a second trainer into a busy run or end a wait early. An id SLURM has
    forgotten is answered "Invalid job id specified" when it is the only one asked about: that one
    is not in the queue.
    """
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise QueueError("squeue did not answer within 60 s") from None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return {}
        raise QueueError(f"squeue failed (exit {out.returncode}): {out.stderr.strip() or 'no message'}")
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def slurm_parameters(profile: ClusterProfile, job_name: str, comment: str = "",
                     array_parallelism: int | None = None, after: Sequence[Dependency] = ()) -> dict[str, Any]:
    """The keyword arguments of submitit's SlurmExecutor.update_parameters for this profile."""
    s = profile.slurm
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": s.time_min,
        "nodes": s.nodes,
        "ntasks_per_node": s.tasks_per_node,
        "cpus_per_task": s.cpus_per_task,
        "signal_delay_s": s.signal_delay_s,
        "stderr_to_stdout": False,
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb:
        # sbatch's --mem: whole GB as such, otherwise MB (what submitit's mem_gb writes; the golden test
        # of the batch script catches a change).
        params["mem"] = f"{int(s.mem_gb)}GB" if float(s.mem_gb).is_integer() else f"{int(s.mem_gb * 1024)}MB"
    if s.setup:
        params["setup"] = list(s.setup)
    if comment:
        params["comment"] = comment
    if array_parallelism:
        params["array_parallelism"] = array_parallelism
    # --requeue: a preempted job comes back instead of ending (SLURM's default depends on the site).
    additional: dict[str, Any] = {"requeue": True, **s.additional}
    if after:
        # Start only once every dependency completed; one that failed can never be satisfied, and SLURM
        # then removes the dependent job instead of keeping it pending for ever.
        additional["dependency"] = "afterok:" + ":".join(d.job_id for d in after)
        additional["kill_on_invalid_dep"] = "yes"
    params["additional_parameters"] = additional
    return params


def submitit_command(folder: Path) -> str:
    """What submitit's job runs (SlurmExecutor._submitit_command_str, same Python)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def batch_script(profile: ClusterProfile, folder: Path, job_name: str, comment: str = "",
                 array_size: int = 0, array_parallelism: int | None = None,
                 after: Sequence[Dependency] = ()) -> str:
    """The sbatch file submitit would write; built by submitit's own function, no SLURM needed."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name, comment, array_parallelism, after)
    if array_size > 1:
        params["map_count"] = array_size
    return _make_sbatch_string(command=submitit_command(folder), folder=folder, **params)


class SlurmBackend(Backend):
    kind = "slurm"

    def tasks(self, profile: ClusterProfile) -> int:
        return profile.slurm.nodes * profile.slurm.tasks_per_node

    def executor(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str,
                 array_parallelism: int | None, after: Sequence[Dependency]) -> Any:
        import submitit

        if shutil.which("sbatch") is None:
            raise SubmitError(f"cluster profile {profile.name}: executor slurm, but sbatch is not on PATH "
                              "(run this on a login node, or use --cluster local)")
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.slurm.max_requeues)
        ex.update_parameters(**slurm_parameters(profile, job_name, comment, array_parallelism, after))
        return ex

    def identify(self, job: Any) -> tuple[str, dict[str, Any]]:
        return str(job.job_id), {}

    def active(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        ids = [str(r["job_id"]) for r in records]
        return {j: st for j, st in squeue_states(ids).items() if st not in _ENDED_STATES}

    def visible(self) -> bool:
        return shutil.which("squeue") is not None

    def run_dir_of(self, job_id: str) -> str | None:
        # The job's comment (the launcher sets it to the run directory) while slurmctld still knows
        # the job: queued, or ended less than MinJobAge ago.
        if shutil.which("scontrol") is None:
            return None
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30)
        match = re.search(r"\bComment=(\S+)", out.stdout)
        return match.group(1) if match and match.group(1) != "(null)" else None

    def cancel(self, records: Sequence[dict[str, Any]]) -> list[str]:
        live = sorted(self.active(records))
        if live:
            subprocess.run(["scancel", *live], check=True, timeout=60)
        return live

    def running(self, queued: Sequence[Queued]) -> list[Queued]:
        states = squeue_states([q.job_id for q in queued])
        return [q for q in queued if states.get(q.job_id, "COMPLETED") not in _ENDED_STATES]

    def dry_run(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str, count: int,
                array_parallelism: int | None, after: Sequence[Dependency]) -> list[str]:
        return ["# batch script submitit would write:",
                batch_script(profile, folder, job_name, comment, count, array_parallelism, after)]


# -- this machine (submitit's LocalExecutor) ----------------------------------------------------------

@contextlib.contextmanager
def _detached_stdio() -> Iterator[None]:
    """Point fds 0-2 at /dev/null while submitit starts a local job controller.

    The controller outlives this command; if it inherited our stdout/stderr, whoever reads them
    (a pipe in `make demo`, a test) would wait for the whole training run. Its logs go to files.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        yield
    finally:
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


class LocalBackend(Backend):
    kind = "local"
    detach_stdio = True

    def executor(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str,
                 array_parallelism: int | None, after: Sequence[Dependency]) -> Any:
        # No scheduler to hold a dependent job: it starts at once and its node side waits (wait_ended).
        import submitit

        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.slurm.max_requeues)
        ex.update_parameters(timeout_min=profile.slurm.time_min, signal_delay_s=profile.slurm.signal_delay_s)
        return ex

    def identify(self, job: Any) -> tuple[str, dict[str, Any]]:
        # The local executor's id is its controller's pid: what `status` checks and `cancel` signals.
        return jobenv.local_job_id(job.job_id), {"pid": int(job.job_id)}

    def active(self, records: Sequence[dict[str, Any]]) -> dict[str, str]:
        return {str(r["job_id"]): "RUNNING" for r in records if r.get("pid") and jobenv.pid_alive(int(r["pid"]))}

    def cancel(self, records: Sequence[dict[str, Any]]) -> list[str]:
        cancelled = []
        for r in records:
            if r.get("pid") and jobenv.pid_alive(int(r["pid"])):
                # submitit's local controller forwards SIGTERM to the job, which forwards it to the trainer.
                os.kill(int(r["pid"]), signal.SIGTERM)
                cancelled.append(str(r["job_id"]))
        return cancelled

    def running(self, queued: Sequence[Queued]) -> list[Queued]:
        return [q for q in queued if not q.handle.done()]

    def dry_run(self, profile: ClusterProfile, folder: Path, job_name: str, comment: str, count: int,
                array_parallelism: int | None, after: Sequence[Dependency]) -> list[str]:
        lines = [f"# local executor: runs `{submitit_command(folder)}` as a background process"
                 + (f" per element ({count})" if count > 1 else "")]
        if after:
            lines.append(f"# it waits on this machine until job(s) {' '.join(d.job_id for d in after)} ended, "
                         "and starts only if their runs ended well")
        return lines

    def wait_ended(self, deps: Sequence[Dependency], stop: Callable[[], bool], poll_s: float = 2.0) -> bool:
        while any(d.pid is not None and jobenv.pid_alive(d.pid) for d in deps):
            if stop():
                return False
            time.sleep(poll_s)
        return True


BACKENDS: dict[str, Backend] = {b.kind: b for b in (SlurmBackend(), LocalBackend())}


def of_kind(kind: str) -> Backend:
    """The backend of an executor kind (a profile's `executor`, a submission record's)."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ValueError(f"executor {kind!r}: not one of {', '.join(BACKENDS)}") from None


def of(profile: ClusterProfile) -> Backend:
    return of_kind(profile.executor)


def _by_kind(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("executor") in BACKENDS and r.get("job_id"):
            groups.setdefault(str(r["executor"]), []).append(r)
    return groups


def active_jobs(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Job id -> state of the recorded jobs (any executor) still queued or running; QueueError: unknown."""
    active: dict[str, str] = {}
    for kind, group in _by_kind(records).items():
        active.update(BACKENDS[kind].active(group))
    return active


def queue_visible(records: Sequence[dict[str, Any]]) -> bool:
    """Whether every recorded job's queue can be asked from here."""
    return all(BACKENDS[kind].visible() for kind in _by_kind(records))


def cancel_jobs(records: Sequence[dict[str, Any]]) -> list[str]:
    done: list[str] = []
    for kind, group in _by_kind(records).items():
        done += BACKENDS[kind].cancel(group)
    return done
