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
