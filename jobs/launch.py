"""The commands a job runs on the node, built from the submission's spec (pure functions).

No process is started here (that is jobs/supervise.py); the tests compare what these build.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeflow import jobenv
from edgeflow.config import Config, ConfigError, data_paths

from .backends import Dependency
from .profile import ClusterProfile

REPO = Path(__file__).resolve().parents[1]


class BindError(ConfigError):
    """A folder that cannot be written into `apptainer --bind` (which splits on ',' and ':')."""


@dataclass(frozen=True)
class NodeSpec:
    """Everything the node needs, fixed at submission (pickled by submitit)."""

    config_path: str       # the resolved config, <run_dir>/jobs/submitted_config.yaml
    run_dir: str
    experiment: str
    profile: ClusterProfile
    workdir: str           # the submission's working directory
    # The Python arguments to run instead of training (`rank`/`search` jobs: jobs/kinds.py).
    args: tuple[str, ...] = ()
    # Jobs that must have ended, their runs well, before this one starts (jobs/backends.py).
    after: tuple[Dependency, ...] = ()


def trainer_command(spec: NodeSpec, cfg: Config) -> list[str]:
    """The command that runs the trainer: inside the image for container profiles, else directly."""
    train = list(spec.args) or ["-m", "edgeflow", "train", "--config", spec.config_path]
    c = spec.profile.container
    if not spec.profile.uses_container:
        return [sys.executable, *train]
    cmd = [c.apptainer, "exec"]
    if c.nv:
        cmd.append("--nv")
    for bind in container_binds(spec, cfg):
        cmd += ["--bind", bind]
    # The working directory (often a checkout) is bound into the image; without this, its edgeflow/
    # would shadow the image's pinned one (Python >= 3.11 then leaves the cwd off sys.path).
    cmd += ["--env", "PYTHONSAFEPATH=1"]
    return [*cmd, c.image, c.python, *train]


def container_binds(spec: NodeSpec, cfg: Config) -> list[str]:
    """The profile's binds plus the run's folders (output root, data) that no bind covers yet."""
    binds = list(spec.profile.container.binds)
    covered = [b.split(":", 1)[0].rstrip("/") or "/" for b in binds]
    needed = [("runtime.output_root", Path(cfg.runtime.output_root))]
    # Every folder and file the data is read from (FC2 folders, a data set's root, eval splits, a pack).
    needed += [(key, Path(path)) for key, path in data_paths(cfg)]
    if cfg.checkpoint.init_from:  # the run a warm start (a chain's later stage) reads its weights from
        needed.append(("checkpoint.init_from", Path(cfg.checkpoint.init_from)))
    for key, path in needed:
        text = str(path.resolve())
        if any(text == c or text.startswith(c.rstrip("/") + "/") for c in covered):
            continue
        # --bind src[:dest[:opts]][,src...] has no escape: such a path would bind something else.
        bad = [ch for ch in ",:" if ch in text]
        if bad:
            raise BindError(f"{key}: {text} contains {' and '.join(repr(ch) for ch in bad)}, which "
                            f"`apptainer --bind` cannot take; move or symlink the folder to a path without "
                            f"them, or cover it with a container.binds entry of the profile")
        binds.append(text)
        covered.append(text)
    return binds


def trainer_env(spec: NodeSpec, job_id: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if spec.profile.uses_container:
        env[jobenv.IMAGE] = spec.profile.container.image
        # Apptainer passes the host environment, but APPTAINERENV_ wins over a --cleanenv in a wrapper.
        env["APPTAINERENV_" + jobenv.IMAGE] = spec.profile.container.image
    else:
        env.pop(jobenv.IMAGE, None)
        # Run the checkout that submitted the job, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if job_id:
        # The job id as the launcher recorded it; jobenv.job_id() prefers SLURM's own variables, so this
        # matters where there are none (the local executor).
        env[jobenv.LAUNCHER_JOB_ID] = job_id
    return env


def sidecar_command(spec: NodeSpec) -> list[str] | None:
    m = spec.profile.monitor
    if not m.sidecar:
        return None
    cmd = [sys.executable, "-m", "monitor", "--run", spec.run_dir]
    if m.mode == "textfile":
        cmd += ["--textfile", m.textfile_dir]
    else:
        cmd += ["--pushgateway", m.pushgateway_url]
    return cmd
