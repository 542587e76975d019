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
from typing import Any

from submitit.core.utils import FailedJobError, FailedSubmissionError

from edgeflow import config as efconfig
from edgeflow import rundir
from jobs.gate import GateResult, run_gate
from jobs.node import NodeJob, NodeSpec, trainer_command
from jobs.profile import ClusterProfile
from jobs.sweep import Element

SUBMITTED_CONFIG = "submitted_config.yaml"
SUBMISSIONS_FILE = "submissions.json"
SWEEPS_DIR = "_sweeps"
# Job id -> run directory, for `status JOB_ID` after SLURM has forgotten the job.
INDEX_ENV = "EDGEFLOW_JOBS_INDEX"


def index_path() -> Path:
    if os.environ.get(INDEX_ENV):
        return Path(os.environ[INDEX_ENV])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgeflow" / "jobs.jsonl"


def index_lookup(job_id: str) -> Path | None:
    try:
        lines = index_path().read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if str(entry.get("job_id")) == job_id:
            return Path(entry["run_dir"])
    return None


def _index_add(job_id: str, run_dir: Path) -> None:
    path = index_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({"job_id": job_id, "run_dir": str(run_dir), "time": time.time()}) + "\n")
    except OSError as exc:  # a read-only home must not fail a submission that already happened
        print(f"jobs: could not record job {job_id} in {path}: {exc}", file=sys.stderr)


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
        "ntasks_per_node": 1,
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
        from submitit.slurm.slurm import _convert_mem  # the same rounding submitit applies

        params["mem"] = _convert_mem(s.mem_gb)
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


# -- run-directory records -----------------------------------------------------------------------

def submissions(run_dir: Path) -> list[dict[str, Any]]:
    data = rundir.read_json(Path(run_dir) / rundir.JOBS_DIR / SUBMISSIONS_FILE)
    return list(data.get("submissions", [])) if data else []


def record_submission(run_dir: Path, record: dict[str, Any]) -> None:
    path = Path(run_dir) / rundir.JOBS_DIR / SUBMISSIONS_FILE
    entries = submissions(run_dir) + [record]
    rundir.atomic_write_json(path, {"submissions": entries})


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """State of each job id SLURM still knows (pending, running, ...); absent ids have left the queue."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, timeout=30)
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process is a zombie until reaped
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def active_jobs(run_dir: Path) -> dict[str, str]:
    """Jobs of earlier submissions to this run directory that are still queued or running."""
    records = submissions(run_dir)
    slurm_ids = [r["job_id"] for r in records if r.get("executor") == "slurm"]
    active = {jid: st for jid, st in squeue_states(slurm_ids).items() if st not in ("COMPLETED", "FAILED")}
    for r in records:
        if r.get("executor") == "local" and r.get("pid") and _pid_alive(int(r["pid"])):
            active[r["job_id"]] = "RUNNING"
    return active


# -- the gate and the submission -----------------------------------------------------------------

def gate_all(elements: list[Element]) -> list[tuple[Element, GateResult]]:
    return [(el, run_gate(el.cfg)) for el in elements]


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
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.slurm.max_requeues)
    ex.update_parameters(**slurm_parameters(profile, job_name, comment, array_parallelism))
    return ex


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
    specs = [_spec(el, _write_config(el), profile) for el in elements]
    if len(elements) == 1:
        folder = elements[0].run_dir / rundir.JOBS_DIR
        name = elements[0].experiment
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(elements[0].cfg.runtime.output_root) / SWEEPS_DIR / f"{elements[0].experiment}-{stamp}"
        name = f"sweep-{elements[0].experiment}"
    comment = str(elements[0].run_dir) if len(elements) == 1 else str(folder)
    ex = _executor(profile, folder, name, comment, array_parallelism)
    stdio = _detached_stdio() if profile.executor == "local" else contextlib.nullcontext()
    try:
        with stdio:
            if len(specs) == 1:
                jobs = [ex.submit(NodeJob(specs[0]))]
            else:
                jobs = []
                with ex.batch():
                    for spec in specs:
                        jobs.append(ex.submit(NodeJob(spec)))
    except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        raise SubmitError(f"sbatch refused the job: {detail.strip()}") from None
    return _record(elements, jobs, profile, folder)


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
        process = getattr(job, "_process", None)
        if process is not None:
            record["pid"] = process.pid
        record_submission(el.run_dir, record)
        _index_add(job_id, el.run_dir)
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


def wait(subs: list[Submitted], executor: str, poll_s: float = 5.0) -> dict[str, str]:
    """Block until every job left the queue (or its local process ended); run status per experiment."""
    while True:
        if executor == "local":
            running = [s for s in subs if s.job is not None and s.job._process is not None
                       and s.job._process.poll() is None]
        else:
            states = squeue_states([s.job_id for s in subs])
            running = [s for s in subs if s.job_id in states]
        if not running:
            break
        time.sleep(poll_s)
    result = {}
    for s in subs:
        run = rundir.read_json(rundir.RunPaths(s.element.run_dir).run) or {}
        result[s.element.experiment] = str(run.get("status", "unknown"))
    return result


def to_json(subs: list[Submitted]) -> str:
    return json.dumps([{"job_id": s.job_id, "experiment": s.element.experiment, "run_dir": str(s.element.run_dir),
                        "stdout": str(s.stdout), "stderr": str(s.stderr)} for s in subs], indent=2)
