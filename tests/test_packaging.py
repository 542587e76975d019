"""The installed names: one `edgeflow` command, and launcher/sidecar packages no other project takes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import PYTHON


def outside(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    # -P: no current directory on sys.path, so only what is installed is importable.
    return subprocess.run([PYTHON, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_launcher_and_sidecar_are_installed_under_unambiguous_names(tmp_path: Path) -> None:
    ok = outside(tmp_path, "import edgeflow_jobs.supervise, edgeflow_jobs.cli, edgeflow_monitor.sidecar; print('ok')")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr
    for generic in ("jobs", "monitor"):
        missing = outside(tmp_path, f"import {generic}")
        assert missing.returncode != 0 and "No module named" in missing.stderr, generic


def test_the_edgeflow_command_reaches_every_part(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("edgeflow")
    for args, expected in ((["--help"], "import-v1"), (["jobs", "--help"], "python -m jobs"),
                           (["monitor", "--help"], "--pushgateway")):
        proc = subprocess.run([str(command), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and expected in proc.stdout, (args, proc.stderr)
