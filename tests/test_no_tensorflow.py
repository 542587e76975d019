"""jobs/ and monitor/ work on a login node, where TensorFlow (and OpenCV) are not installed.

Each command runs in a subprocess whose PYTHONPATH starts with a `sitecustomize` that installs a
meta-path blocker: importing tensorflow, keras or cv2 raises ImportError, and every attempt is logged.
The test fails if a command fails or if anything even tried to import them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

BLOCKED = ("tensorflow", "keras", "tf_keras", "cv2")

SITECUSTOMIZE = textwrap.dedent(
    """
    import os
    import sys

    BLOCKED = {blocked!r}
    LOG = os.environ["NO_TF_LOG"]


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                with open(LOG, "a") as fh:
                    fh.write(name + "\\n")
                raise ImportError(f"{{name}} is not installed on this (simulated) login node")
            return None


    sys.meta_path.insert(0, _Blocker())
    """
).format(blocked=BLOCKED)


@pytest.fixture
def blocked_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    site = tmp_path_factory.mktemp("notf_site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = site / "attempts.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["NO_TF_LOG"] = str(log)
    return env, log


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_the_blocker_blocks(blocked_env: tuple[dict[str, str], Path]) -> None:
    env, log = blocked_env
    out = run(["-c", "import tensorflow"], env)
    assert out.returncode != 0 and "not installed on this (simulated) login node" in out.stderr
    assert log.read_text().split() == ["tensorflow"]


def test_jobs_and_monitor_run_without_tensorflow(blocked_env: tuple[dict[str, str], Path], demo_data: Path,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    env, log = blocked_env
    out_root = tmp_path_factory.mktemp("notf_out")
    help_ = run(["-m", "jobs", "--help"], env)
    assert help_.returncode == 0 and "submit" in help_.stdout, help_.stderr
    dry = run(["-m", "jobs", "submit", "--config", "configs/demo.yaml", "--cluster", "ci", "--dry-run",
               "--set", f"data.train_dir={demo_data / 'train'}", "--set", f"data.val_dir={demo_data / 'val'}",
               "--set", f"runtime.output_root={out_root}"], env)
    assert dry.returncode == 0, dry.stderr
    assert "preflight: OK" in dry.stdout and "#SBATCH --partition=debug" in dry.stdout
    modules = ["jobs.cli", "jobs.profile", "jobs.gate", "jobs.supervise", "jobs.submit", "jobs.sweep",
               "jobs.status", "jobs.gpu_driver"]
    imported = run(["-c", "import importlib, sys\n"
                          f"for m in {modules!r}: importlib.import_module(m)\n"
                          "assert 'tensorflow' not in sys.modules"], env)
    assert imported.returncode == 0, imported.stderr
    mon = run(["-m", "monitor", "--help"], env)
    assert mon.returncode == 0, mon.stderr
    assert not log.exists(), f"something tried to import {log.read_text().split()}"


# -- the `login` extra is enough ---------------------------------------------------------------------
# A login node installs `edgeflow[login]`. Instead of building a venv with only that (minutes), each
# command runs with every module refused that the base dependencies and the extra (with everything
# they require in turn, read from the installed metadata) do not provide: the standard library, the
# kit itself and those distributions' own top-level modules stay importable, anything else (TensorFlow,
# OpenCV, rich, matplotlib, Vela, ...) raises ImportError and is logged. A command that needs a
# module outside the extra then fails here, as it would on the login node.

ALLOW_ONLY = textwrap.dedent(
    """
    import os
    import sys

    ALLOWED = set({allowed!r}) | set(sys.stdlib_module_names)
    LOG = os.environ["NO_TF_LOG"]


    class _OnlyTheExtra:
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in ALLOWED:
                return None
            with open(LOG, "a") as fh:
                fh.write(name + "\\n")
            raise ImportError(f"{{name}} is not installed by edgeflow[login] (simulated login node)")


    sys.meta_path.insert(0, _OnlyTheExtra())
    """
)


def login_closure() -> set[str]:
    """Canonical names of the distributions `pip install edgeflow[login]` installs (besides edgeflow)."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    todo = [Requirement(r) for r in [*project["dependencies"], *extras["login"]]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "edgeflow":  # the extra names others of this project
            todo += [Requirement(r) for e in req.extras for r in extras[e]]
            continue
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return seen


@pytest.fixture
def login_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    import importlib.metadata as md

    from packaging.utils import canonicalize_name

    dists = login_closure()
    assert {"submitit", "pyyaml", "numpy", "prometheus-client", "watchdog", "pillow"} <= dists, dists
    assert not {"tensorflow", "opencv-python-headless", "ethos-u-vela", "matplotlib"} & dists, dists
    allowed = {top for top, owners in md.packages_distributions().items()
               if any(canonicalize_name(d) in dists | {"edgeflow"} for d in owners)}
    allowed |= {"edgeflow", "jobs", "monitor", "edgeflow_jobs", "edgeflow_monitor"}
    site = tmp_path_factory.mktemp("login_site")
    (site / "sitecustomize.py").write_text(ALLOW_ONLY.format(allowed=sorted(allowed)))
    log = site / "refused.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["NO_TF_LOG"] = str(log)
    return env, log


def test_the_login_extra_is_enough_for_the_launcher_the_preflight_and_the_monitor(
        login_env: tuple[dict[str, str], Path], demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    env, log = login_env
    blocked = run(["-c", "import tensorflow"], env)
    assert blocked.returncode != 0 and "not installed by edgeflow[login]" in blocked.stderr
    log.unlink()
    out_root = tmp_path_factory.mktemp("login_out")
    data = ["--set", f"data.train_dir={demo_data / 'train'}", "--set", f"data.val_dir={demo_data / 'val'}"]
    run_dir = out_root / "r"
    (run_dir / "jobs").mkdir(parents=True)
    (run_dir / "run.json").write_text('{"experiment": "r", "status": "completed"}')
    # Each command must work; optional imports a command does without (the stdlib's own probes among
    # them) may be refused, and are shown when a command fails.
    for args, expected in (
            (["-m", "jobs", "--help"], "submit"),
            (["-m", "jobs", "submit", "--config", "configs/demo.yaml", "--cluster", "ci", "--dry-run", *data,
              "--set", f"runtime.output_root={out_root}", "--seeds", "0", "1"], "#SBATCH --array=0-1"),
            (["-m", "jobs", "submit", "--config", "configs/demo.yaml", "--cluster", "local", "--dry-run", *data,
              "--set", f"runtime.output_root={out_root}"], "local executor"),
            (["-m", "edgeflow", "preflight", "--config", "configs/demo.yaml", *data], "preflight: OK"),
            (["-m", "jobs", "status", str(run_dir)], "status:     completed"),
            (["-m", "jobs", "list", "--root", str(out_root)], "completed"),
            (["-m", "monitor", "--help"], "--pushgateway"),
            (["-m", "monitor", "--run", str(run_dir), "--textfile", str(out_root / "prom"), "--once"], "")):
        out = run(args, env)
        refused = log.read_text().split() if log.exists() else []
        assert out.returncode == 0 and expected in out.stdout, (args, refused, out.stdout[-1500:], out.stderr[-1500:])
    assert (out_root / "prom" / "edgeflow_r.prom").is_file()
    refused = set(log.read_text().split()) if log.exists() else set()
    assert not {m.split(".")[0] for m in refused} & {"tensorflow", "cv2", "keras"}, refused
