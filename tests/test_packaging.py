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


def test_the_build_declares_every_package_folder_and_packages_every_monitor_file() -> None:
    """What setuptools warns about, checked without building: a folder with files to install that is
    not in `packages` ("Package ... is absent from the `packages` configuration", once per folder and
    build step), and a monitor file (rules, dashboards, Alertmanager routes) that would not be shipped."""
    import fnmatch
    import tomllib

    from tests.helpers import REPO

    st = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(st["packages"]), st.get("package-data", {})
    roots = {"edgeflow": REPO / "edgeflow", **{name: REPO / path for name, path in st["package-dir"].items()}}
    shipped: set[Path] = set()
    for name, root in roots.items():
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and "__pycache__" not in p.parts)]:
            dotted = ".".join([name, *folder.relative_to(root).parts])
            files = [f for f in folder.iterdir() if f.is_file()]
            wanted = [f for f in files if f.suffix == ".py" or
                      any(fnmatch.fnmatch(f.name, pattern) for pattern in data.get(dotted, []))]
            if wanted:
                assert dotted in packages, f"{folder.relative_to(REPO)} holds files to install: list {dotted}"
                shipped.update(wanted)
    monitor_files = {f for f in (REPO / "monitor").rglob("*") if f.is_file() and f.suffix not in (".py", ".pyc")}
    assert monitor_files, "no monitor files found"
    missing = sorted(str(f.relative_to(REPO)) for f in monitor_files - shipped)
    assert not missing, f"monitor files the build would not ship: {missing}"
