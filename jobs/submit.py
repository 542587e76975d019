"""Submission: profile -> submitit executor parameters, the preflight gate, the queue, the summary.

Nothing reaches the queue unless every element's preflight passed on the login node. submitit's
folder is `<run_dir>/jobs/` for a single job; an array (sweep) shares one folder under
`<output_root>/_sweeps/`, and each element's `jobs/` gets links to its own log files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from submitit.core.utils import FailedJobError, FailedSubmissionError

from edgeflow import config as efconfig
from edgeflow import rundir
from edgeflow.config import ConfigError
from edgeflow.train.layout import check_layout, replicas_of_job

from .gate import GateResult, run_gate
from .launch import NodeSpec, container_binds, trainer_command
from .profile import ClusterProfile
from .records import (
    SUBMITTED_CONFIG,
    SWEEPS_DIR,
    active_jobs,
    index_add,
    record_submission,
    squeue_states,
)
from .supervise import NodeJob
from .sweep import Element


class SubmitError(RuntimeError):
    """Submission refused or failed; nothing (more) was queued."""


@dataclass
class Submitted:
    element: Element
    job_id: str
    stdout: Path
    stderr: Path
    folder: Path
    job: Any = field(default=None, repr=False)  # the submitit Job (local executor: holds the process)


# -- executor parameters -------------------------------------------------------------------------

def slurm_parameters(profile: ClusterProfile, job_name: str, comment: str = "",
                     array_parallelism: int | None = None) -> dict[str, Any]:
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
    params["additional_parameters"] = {"requeue": True, **s.additional}
    return params


def local_parameters(profile: ClusterProfile) -> dict[str, Any]:
    return {"timeout_min": profile.slurm.time_min, "signal_delay_s": profile.slurm.signal_delay_s}


def submitit_command(folder: Path) -> str:
    """What submitit's batch script runs (SlurmExecutor._submitit_command_str, same Python)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def batch_script(profile: ClusterProfile, folder: Path, job_name: str, comment: str = "",
                 array_size: int = 0, array_parallelism: int | None = None) -> str:
    """The sbatch file submitit would write; built by submitit's own function, no SLURM needed."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name, comment, array_parallelism)
    if array_size > 1:
        params["map_count"] = array_size
    return _make_sbatch_string(command=submitit_command(folder), folder=folder, **params)


# -- the gate and the submission -----------------------------------------------------------------

def gate_all(elements: list[Element]) -> list[tuple[Element, GateResult]]:
    return [(el, run_gate(el.cfg)) for el in elements]


def check_tasks(elements: list[Element], profile: ClusterProfile) -> None:
    """Refuse (a ConfigError) a job whose trainers could not train together, before queueing.

    Several SLURM tasks are one multi-worker run: each config must ask for that, and the replica count
    (tasks x GPUs per task, a CPU task being one replica) must suit train.distribute_mode.
    """
    tasks = profile.tasks
    if tasks == 1:
        return
    s = profile.slurm
    replicas = replicas_of_job(tasks, s.gpus_per_node // s.tasks_per_node)
    for el in elements:
        t = el.cfg.train
        if t.distribute not in ("multi_worker", "auto"):
            raise ConfigError(f"{el.source}: train.distribute: {t.distribute!r}, but cluster profile {profile.name} "
                              f"starts {tasks} trainers per job (slurm.nodes x slurm.tasks_per_node), which would "
                              f"each train alone into one run directory; set train.distribute: multi_worker")
        try:
            check_layout(t.distribute_mode, replicas, t.batch_size)
        except ConfigError as exc:
            raise ConfigError(f"{el.source}: cluster profile {profile.name} ({s.nodes} node(s) x "
                              f"{s.tasks_per_node} task(s), {s.gpus_per_node} GPU(s) per node): {exc}") from None


def check_binds(elements: list[Element], profile: ClusterProfile) -> None:
    """Refuse (launch.BindError, a ConfigError) a folder the image could not be given, before queueing."""
    if not profile.uses_container:
        return
    for el in elements:
        container_binds(_spec(el, el.run_dir / rundir.JOBS_DIR / SUBMITTED_CONFIG, profile), el.cfg)


class _Undo:
    """What a submission creates, removed again when the scheduler refuses it.

    submitit needs its final folder to write the pickle and the batch script, so they cannot be
    written elsewhere and moved; instead every file and folder that did not exist before is removed,
    and a submitted_config.yaml of an earlier submission gets its old text back.
    """

    def __init__(self, folders: list[Path]) -> None:
        self.before: dict[Path, set[str] | None] = {}
        self.configs: dict[Path, bytes] = {}
        for folder in folders:
            top = folder
            while not top.parent.exists():
                top = top.parent
            self.before.setdefault(top, None if not top.exists() else set(os.listdir(top)))
            if folder.is_dir():
                self.before[folder] = set(os.listdir(folder))
                config = folder / SUBMITTED_CONFIG
                if config.is_file():
                    self.configs[config] = config.read_bytes()

    def undo(self) -> None:
        for folder, names in self.before.items():
            if names is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not folder.is_dir():
                continue
            for name in set(os.listdir(folder)) - names:
                path = folder / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for config, data in self.configs.items():
            rundir.atomic_write_bytes(config, data)


def _write_config(el: Element) -> Path:
    path = el.run_dir / rundir.JOBS_DIR / SUBMITTED_CONFIG
    rundir.atomic_write_text(path, efconfig.dump(el.cfg))
    return path


def _spec(el: Element, config_path: Path, profile: ClusterProfile) -> NodeSpec:
    return NodeSpec(config_path=str(config_path), run_dir=str(el.run_dir), experiment=el.experiment,
                    profile=profile, workdir=str(Path.cwd()))


def _executor(profile: ClusterProfile, folder: Path, job_name: str, comment: str,
              array_parallelism: int | None) -> Any:
    import submitit

    if profile.executor == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=profile.slurm.max_requeues)
        ex.update_parameters(**local_parameters(profile))
        return ex
    if shutil.which("sbatch") is None:
        raise SubmitError(f"cluster profile {profile.name}: executor slurm, but sbatch is not on PATH "
                          "(run this on a login node, or use --cluster local)")
    slurm = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.slurm.max_requeues)
    slurm.update_parameters(**slurm_parameters(profile, job_name, comment, array_parallelism))
    return slurm


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


def submit(elements: list[Element], profile: ClusterProfile,
           array_parallelism: int | None = None) -> list[Submitted]:
    """Queue the elements (one job, or one array). The caller has run the gate."""
    for el in elements:
        busy = active_jobs(el.run_dir)
        if busy:
            listing = ", ".join(f"{j} ({s})" for j, s in sorted(busy.items()))
            raise SubmitError(f"run {el.run_dir} already has a job in the queue: {listing}; two trainers "
                              f"must not share a run directory. Cancel it (python -m jobs cancel "
                              f"{el.run_dir}) or choose another runtime.experiment_name")
    check_tasks(elements, profile)
    check_binds(elements, profile)
    if len(elements) == 1:
        folder = elements[0].run_dir / rundir.JOBS_DIR
        name = elements[0].experiment
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(elements[0].cfg.runtime.output_root) / SWEEPS_DIR / f"{elements[0].experiment}-{stamp}"
        name = f"sweep-{elements[0].experiment}"
    undo = _Undo([*(el.run_dir / rundir.JOBS_DIR for el in elements), folder])
    try:
        return _queue(elements, profile, folder, name, array_parallelism)
    except BaseException:
        # A refused (or interrupted) submission must not leave a run folder `jobs status` calls unknown.
        undo.undo()
        raise


def _queue(elements: list[Element], profile: ClusterProfile, folder: Path, name: str,
           array_parallelism: int | None) -> list[Submitted]:
    specs = [_spec(el, _write_config(el), profile) for el in elements]
    comment = str(elements[0].run_dir) if len(elements) == 1 else str(folder)
    jobs = submit_specs(specs, profile, folder, name, comment, array_parallelism)
    return _record(elements, jobs, profile, folder)


def submit_specs(specs: list[NodeSpec], profile: ClusterProfile, folder: Path, name: str, comment: str,
                 array_parallelism: int | None) -> list[Any]:
    """One submitit job per spec (an array when there are several); SubmitError when sbatch refuses."""
    ex = _executor(profile, folder, name, comment, array_parallelism)
    stdio = _detached_stdio() if profile.executor == "local" else contextlib.nullcontext()
    try:
        with stdio:
            if len(specs) == 1:
                return [ex.submit(NodeJob(specs[0]))]
            jobs = []
            with ex.batch():
                for spec in specs:
                    jobs.append(ex.submit(NodeJob(spec)))
            return jobs
    except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise SubmitError(f"sbatch refused the job: {detail.strip()}") from None


def _record(elements: list[Element], jobs: list[Any], profile: ClusterProfile, folder: Path) -> list[Submitted]:
    out = []
    for el, job in zip(elements, jobs, strict=True):
        stdout, stderr = Path(job.paths.stdout), Path(job.paths.stderr)
        jobs_dir = el.run_dir / rundir.JOBS_DIR
        if stdout.parent.resolve() != jobs_dir.resolve():
            # Array element: its logs live in the sweep folder; link them from the run directory.
            for target in (stdout, stderr):
                link = jobs_dir / target.name
                link.unlink(missing_ok=True)
                link.symlink_to(target)
        # The local executor's id is its controller's pid; the trainer records it as local-<pid>.
        job_id = str(job.job_id) if profile.executor == "slurm" else f"local-{job.job_id}"
        record = {
            "job_id": job_id, "executor": profile.executor, "cluster": profile.name,
            "profile": profile.source, "submitted_at": time.time(), "source_config": el.source,
            "config": str(jobs_dir / SUBMITTED_CONFIG), "folder": str(folder), "stdout": str(stdout),
            "stderr": str(stderr),
        }
        if profile.executor == "local":
            record["pid"] = int(job.job_id)  # what `jobs status` and `jobs cancel` check and signal
        record_submission(el.run_dir, record)
        index_add(job_id, el.run_dir)
        out.append(Submitted(el, job_id, stdout, stderr, folder, job))
    return out


def summary(sub: Submitted) -> str:
    run = sub.element.run_dir
    lines = [
        f"submitted job {sub.job_id}: experiment {sub.element.experiment}",
        f"  run directory: {run}",
        f"  job log:       {sub.stdout}",
        f"  job errors:    {sub.stderr}",
        f"  status:        python -m jobs status {run}",
        f"  monitor:       python -m monitor --run {run} --http 127.0.0.1:9464   (make monitor RUN={run})",
        f"  cancel:        python -m jobs cancel {run}",
    ]
    return "\n".join(lines)


def dry_run_text(elements: list[Element], profile: ClusterProfile, array_parallelism: int | None) -> str:
    """The batch script and the trainer command, as they would be submitted."""
    if len(elements) == 1:
        folder = elements[0].run_dir / rundir.JOBS_DIR
        name, comment = elements[0].experiment, str(elements[0].run_dir)
    else:
        folder = Path(elements[0].cfg.runtime.output_root) / SWEEPS_DIR / f"{elements[0].experiment}-<time>"
        name, comment = f"sweep-{elements[0].experiment}", str(folder)
    parts = [f"# dry run: nothing was queued (cluster {profile.name}, executor {profile.executor})"]
    if profile.executor == "slurm":
        parts += ["# batch script submitit would write:",
                  batch_script(profile, folder, name, comment, len(elements), array_parallelism)]
    else:
        parts += [f"# local executor: runs `{submitit_command(folder)}` as a background process"]
    parts.append("# trainer command on the node, per element:")
    for el in elements:
        spec = _spec(el, el.run_dir / rundir.JOBS_DIR / SUBMITTED_CONFIG, profile)
        parts.append(f"#   {el.experiment}: {shlex.join(trainer_command(spec, el.cfg))}")
    return "\n".join(parts)


def wait(subs: list[Submitted], executor: str, poll_s: float = 5.0,
         stream: TextIO | None = None) -> dict[str, str]:
    """Block until every job left the queue (or its local process ended); run status per experiment.

    With `stream`, the jobs' logs (the trainer's progress lines among them) are copied to it as they
    grow, prefixed with the experiment when there are several jobs."""
    from .logs import Follower

    followers = [Follower(s.element.run_dir) for s in subs] if stream is not None else []

    def copy_logs() -> None:
        for sub, follower in zip(subs, followers, strict=False):
            for _, text in follower.poll():
                print(f"[{sub.element.experiment}] {text}" if len(subs) > 1 else text, file=stream)
        if stream is not None:
            stream.flush()

    while True:
        if executor == "local":
            running = [s for s in subs if s.job is not None and not s.job.done()]
        else:
            states = squeue_states([s.job_id for s in subs])
            running = [s for s in subs if s.job_id in states]
        copy_logs()
        if not running:
            break
        time.sleep(poll_s)
    copy_logs()
    result = {}
    for s in subs:
        run = rundir.read_json(rundir.RunPaths(s.element.run_dir).run) or {}
        result[s.element.experiment] = str(run.get("status", "unknown"))
    return result


def to_json(subs: list[Submitted]) -> str:
    return json.dumps([{"job_id": s.job_id, "experiment": s.element.experiment, "run_dir": str(s.element.run_dir),
                        "stdout": str(s.stdout), "stderr": str(s.stderr)} for s in subs], indent=2)
