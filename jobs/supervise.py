"""The host side of a job: what submitit runs on the compute node, outside the container.

It re-runs the preflight, starts the trainer as a child (inside the Apptainer image when the profile
uses one), forwards SIGTERM/SIGUSR2 to it, and on a time limit waits for the trainer's checkpoint
(exit 75) before asking submitit to requeue. The host side requeues because `scontrol` is not
inside the image. How submitit 1.5.4 treats the signals:

- SIGUSR2 (sent by SLURM `signal_delay_s` before the time limit, or by a preemption tool) runs
  submitit's handler, which calls `NodeJob.checkpoint`; a returned DelayedSubmission is saved and
  the job requeued with `scontrol requeue`. submitit counts it as a timeout when the job ran
  >= min(80 % of its time, time - 10 min) (so always for jobs under 10 min), and gives up after
  `max_num_timeout` (profile `slurm.max_requeues`) timeouts with UncompletedJobError.
- SIGTERM (scancel, or `scontrol requeue` / preemption by SLURM, which requeues by itself) is only
  logged by submitit; this module installs its own handler that forwards it to the trainer.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from submitit.core.utils import UncompletedJobError
from submitit.helpers import Checkpointable, DelayedSubmission

from edgeflow import config as efconfig
from edgeflow import jobenv, rundir
from edgeflow.console import console_logger
from edgeflow.rundir import RunPaths, last_event

from . import backends
from .chain import OK_STATUSES, not_started_reason, run_outcome
from .gate import run_gate
from .launch import REPO, NodeSpec, sidecar_command, trainer_command, trainer_env

# Exit statuses of a trainer killed by a forwarded signal before it installed its handlers.
_KILLED_BEFORE_HANDLERS = (-signal.SIGTERM, -signal.SIGUSR2)


class JobFailed(RuntimeError):
    """The run ended without success; the reason is also in run.json and events.jsonl."""


class _TrainerEnded(Exception):
    """Raised from the signal handler when the trainer ended instead of checkpointing."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"trainer ended with code {code}")
        self.code = code


# The host side's lines in the job log (stdout, between the trainer's own lines).
log = console_logger("edgeflow-jobs", "[edgeflow-jobs %(asctime)s] %(message)s", stream="stdout",
                     datefmt="%H:%M:%S")


def _log(message: str) -> None:
    log.info(message)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "an unknown exit status"
    if code in rundir.EXIT_CODE_MEANING and code != rundir.EXIT_OK:
        return f"exit code {code} ({rundir.EXIT_CODE_MEANING[code]})"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class NodeJob(Checkpointable):
    """The callable submitit runs on the node. Returns a summary dict; raises JobFailed on failure."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self._proc: subprocess.Popen[bytes] | None = None
        self._code: int | None = None
        self._signals: list[str] = []
        self._started = 0.0

    # submitit pickles the callable again at checkpoint time: keep only the spec.
    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])  # type: ignore[misc]

    # -- the child process ------------------------------------------------------------------

    def _reap(self, block: bool) -> int | None:
        """Exit code of the trainer once it ended (negative: killed by that signal), else None."""
        if self._code is not None or self._proc is None:
            return self._code
        try:
            pid, status = os.waitpid(self._proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # Reaped by an interrupted frame of ours whose result was lost: ask the run files.
            end = last_event(RunPaths(Path(self.spec.run_dir)).events, "run_end", since=self._started)
            ended = str(end.get("status")) if end else ""
            self._code = rundir.STATUS_EXIT_CODE.get(ended, rundir.EXIT_FAILED)
            self._proc.returncode = self._code
            return self._code
        if pid == 0:
            return None
        self._code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = self._code
        return self._code

    def _forward(self, signum: int) -> None:
        if self._proc is not None and self._code is None:
            try:
                self._proc.send_signal(signum)
                _log(f"forwarded {signal.Signals(signum).name} to the trainer (pid {self._proc.pid})")
            except ProcessLookupError:
                pass

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._signals.append(signal.Signals(signum).name)
        self._forward(signum)

    # -- submitit's checkpoint hook (runs inside its SIGUSR2 handler) -------------------------

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        self._signals.append("SIGUSR2")
        if self._proc is None:
            _log("SIGUSR2 before the trainer started: requeue")
            return DelayedSubmission(NodeJob(self.spec))
        self._forward(signal.SIGUSR2)
        _log("waiting for the trainer to write its checkpoint")
        code = self._reap(block=True)
        if code in rundir.REQUEUE_EXIT_CODES:
            _log(f"trainer checkpointed (exit {code}): asking submitit to requeue")
            return DelayedSubmission(NodeJob(self.spec))
        if code in _KILLED_BEFORE_HANDLERS:
            # Signalled while still importing TensorFlow (before its handlers were installed): nothing
            # was lost since its last checkpoint, so the run resumes from there.
            self._note_killed_early(code)
            return DelayedSubmission(NodeJob(self.spec))
        # It finished (or failed) before it could checkpoint: no requeue; __call__ reports it.
        raise _TrainerEnded(code)

    # -- the job ------------------------------------------------------------------------------

    def __call__(self) -> dict[str, Any]:
        spec = self.spec
        job_id = jobenv.job_id()
        host = rundir.hostname()
        _log(f"job {job_id} on {host}: run {spec.run_dir}")
        if spec.after:
            self._await_dependencies(job_id)
        try:
            cfg = efconfig.load(spec.config_path)
        except efconfig.ConfigError as exc:
            reason = f"cannot load the submitted config on node {host}: {exc}"
            self._record_end(spec.run_dir, spec.experiment, job_id, "failed", reason)
            raise JobFailed(reason) from None

        gate = run_gate(cfg)
        if gate.report:
            print(f"node {host}: {gate.brief or gate.report}", flush=True)
        if not gate.ok:
            reason = f"preflight on node {host} failed: {gate.reason}"
            # Bad data: its own status, and no requeue (raising ends the job for submitit).
            self._record_end(spec.run_dir, spec.experiment, job_id, "data_error", reason)
            raise JobFailed(reason)
        self._check_gpu_driver(job_id)

        previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        sidecar = self._start_sidecar()
        cmd = trainer_command(spec, cfg)
        _log("trainer: " + shlex.join(cmd))
        self._started = time.time()
        try:
            try:
                self._proc = subprocess.Popen(cmd, cwd=spec.workdir, env=trainer_env(spec, job_id))
            except OSError as exc:
                reason = f"cannot start the trainer on node {host}: {cmd[0]}: {exc.strerror or exc}"
                self._record_end(spec.run_dir, spec.experiment, job_id, "failed", reason)
                raise JobFailed(reason) from None
            code = self._wait()
        except UncompletedJobError:
            # submitit gave up requeueing after the trainer's checkpoint: the run stops here.
            reason = (f"time limit reached {spec.profile.slurm.max_requeues + 1} times; max_requeues "
                      f"({spec.profile.slurm.max_requeues}) exhausted. The last checkpoint is kept: submit "
                      f"again to continue")
            self._record_end(spec.run_dir, spec.experiment, job_id, "timeout", reason)
            _log(reason)
            raise
        finally:
            self._stop_sidecar(sidecar)
            signal.signal(signal.SIGTERM, previous_sigterm)
        return self._finish(code, job_id)

    def _wait(self) -> int | None:
        while True:
            try:
                code = self._reap(block=False)
                if code is not None:
                    # A late SIGUSR2 must not requeue a run that has already ended.
                    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
                    return code
                time.sleep(0.5)
            except _TrainerEnded as ended:
                signal.signal(signal.SIGUSR2, signal.SIG_IGN)
                return ended.code

    def _finish(self, code: int | None, job_id: str | None) -> dict[str, Any]:
        spec = self.spec
        end = last_event(RunPaths(Path(spec.run_dir)).events, "run_end", since=self._started)
        status = end.get("status") if end else None
        summary = {"run_dir": spec.run_dir, "job_id": job_id, "exit_code": code, "status": status,
                   "signals": list(self._signals)}
        if code == rundir.EXIT_OK:
            _log(f"trainer finished: {status}")
            return summary
        if code in _KILLED_BEFORE_HANDLERS and self._signals:
            self._note_killed_early(code)
            return summary
        if code in rundir.REQUEUE_EXIT_CODES:
            # SIGTERM from SLURM (preemption, `scontrol requeue`, scancel): SLURM decides whether the
            # job comes back; the trainer has checkpointed and written run_end "preempted".
            _log(f"trainer checkpointed and stopped after {', '.join(self._signals) or 'a signal'}")
            return summary
        reason = f"trainer stopped with {_describe_exit(code)}"
        if end is None:
            # Killed or crashed before it could say why: the launcher records it.
            by_code = {c: st for st, c in rundir.STATUS_EXIT_CODE.items() if c != rundir.EXIT_OK}
            status = by_code.get(code, "failed") if code is not None else "failed"
            reason += f" without writing run_end; see the job log in {Path(spec.run_dir) / 'jobs'}"
            self._record_end(spec.run_dir, spec.experiment, job_id, status, reason, exit_code=code)
        else:
            reason += f" ({status}: {end.get('reason', '')})"
        _log(reason)
        raise JobFailed(reason)

    def _note_killed_early(self, code: int) -> None:
        end = last_event(RunPaths(Path(self.spec.run_dir)).events, "run_end", since=self._started)
        if end is not None and end.get("status") == "preempted" and end.get("source") != "launcher":
            # The trainer had checkpointed and said so; a second copy of the signal hit it while exiting.
            _log(f"trainer checkpointed, then {_describe_exit(code)} while exiting; it resumes from there")
            return
        reason = (f"trainer stopped by {_describe_exit(code)} before it could checkpoint (still starting); "
                  "it resumes from its last checkpoint when the job runs again")
        _log(reason)
        self._record_end(self.spec.run_dir, self.spec.experiment, jobenv.job_id(), "preempted", reason)

    def _await_dependencies(self, job_id: str | None) -> None:
        """Start only after every dependency's job ended and its run ended well; else record why not.

        On SLURM the scheduler already held the job (afterok); the local executor has no scheduler, so
        this waits for the dependencies' controllers to end. Either way the runs' own ends decide: a job
        that left the queue without its run completing is no base to build on.
        """
        # Every earlier stage of a chain, in order: the first that did not end well is the one named.
        deps = sorted(self.spec.after, key=lambda d: d.stage)
        ids = " ".join(d.job_id for d in deps)
        cancelled: list[str] = []
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: cancelled.append("SIGTERM"))
        try:
            _log(f"waiting for job(s) {ids} to end" + (f" (stage(s) {' '.join(str(d.stage) for d in deps)})"
                                                       if deps[0].stage else ""))
            ended = backends.of(self.spec.profile).wait_ended(deps, stop=lambda: bool(cancelled))
        finally:
            signal.signal(signal.SIGTERM, previous)
        if not ended:
            reason = f"cancelled while waiting for job(s) {ids}; not started (submit again to run it)"
            self._record_end(self.spec.run_dir, self.spec.experiment, job_id, "preempted", reason)
            _log(reason)
            raise JobFailed(reason)
        for dep in deps:
            status, why = run_outcome(dep.run_dir, dep.submitted_at)
            if status not in OK_STATUSES:
                reason = not_started_reason(dep.stage, dep.job_id, dep.run_dir, status, why)
                self._record_end(self.spec.run_dir, self.spec.experiment, job_id, "failed", reason)
                _log(reason)
                raise JobFailed(reason)
        _log(f"job(s) {ids} ended well: starting")

    def _check_gpu_driver(self, job_id: str | None) -> None:
        """An image built for a newer CUDA than the node's driver fails deep inside TensorFlow: stop here."""
        if not (self.spec.profile.uses_container and self.spec.profile.uses_gpus):
            return
        from . import gpu_driver

        try:
            report = gpu_driver.check_node(self.spec.profile)
        except gpu_driver.DriverError as exc:
            reason = f"GPU driver check failed: {exc}"
            self._record_end(self.spec.run_dir, self.spec.experiment, job_id, "failed", reason)
            raise JobFailed(reason) from None
        _log(report.summary())

    def _record_end(self, run_dir: str, experiment: str, job_id: str | None, status: str, reason: str,
                    **fields: Any) -> None:
        # Several tasks (a multi-worker job): the first one speaks for the job, as its trainer is the
        # chief that writes the run directory; the others' reasons stay in their own task logs.
        if jobenv.task_rank() == 0:
            rundir.record_end(run_dir, experiment, job_id, status, reason, **fields)

    def _start_sidecar(self) -> subprocess.Popen[bytes] | None:
        cmd = sidecar_command(self.spec)
        if cmd is None or jobenv.task_rank() != 0:
            return None
        _log("monitor sidecar: " + shlex.join(cmd))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        return subprocess.Popen(cmd, cwd=self.spec.workdir, env=env)

    @staticmethod
    def _stop_sidecar(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # the monitor writes its last values on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
