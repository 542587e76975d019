"""The front door: `make help` lists every target, and `make test`'s service step says what it does."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.helpers import REPO


def test_make_help_lists_every_target() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):(?!=)", makefile, re.M)}
    assert {"setup", "demo", "test", "report", "status"} <= targets
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = {m.group(1) for m in re.finditer(r"^(?:sudo )?make ([a-z][a-z0-9-]*)", out.stdout, re.M)}
    assert targets <= listed, f"not in make help: {sorted(targets - listed)}"
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    assert targets - {"$(VENV)/.installed"} <= phony, sorted(targets - phony)


def test_test_services_step_says_what_skips_and_how(tmp_path) -> None:
    # A PATH without any service: report only (EDGEFLOW_NO_SERVICES=1 starts nothing, as for a non-root user).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    out = subprocess.run([str(bin_dir / "bash"), "scripts/test-services.sh"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, env={"PATH": str(bin_dir), "EDGEFLOW_NO_SERVICES": "1"})
    assert out.returncode == 0, out.stderr
    assert "services missing: SLURM (sinfo does not answer) prometheus promtool" in out.stdout, out.stdout
    assert "sudo make services" in out.stdout


def test_docs_exit_code_table_is_the_one_of_the_code() -> None:
    from edgeflow import rundir

    text = (REPO / "docs" / "training.md").read_text()
    table = text[text.index("## Exit codes"):]
    rows = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", table, re.M)}
    assert rows == set(rundir.EXIT_CODE_MEANING), rows


def test_make_submit_passes_each_set_as_an_override(tmp_path) -> None:
    import shlex

    sets = "train.num_epochs=2 eval.pool=['000000000','111111111']"
    out = subprocess.run(["make", "-s", "-n", "submit", "CONFIG=configs/demo.yaml", "CLUSTER=ci", f"SET={sets}"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if "-m jobs submit" in ln]
    args = shlex.split(line)
    assert args[args.index("submit"):] == ["submit", "--config", "configs/demo.yaml", "--cluster", "ci",
                                           "--set", "train.num_epochs=2",
                                           "--set", "eval.pool=['000000000','111111111']"]
    # STAGES="a b": a chain of stages in place of CONFIG, SET for every stage
    out = subprocess.run(["make", "-s", "-n", "submit", "STAGES=fc2.yaml ft3d.yaml", "CLUSTER=ci", "SET=train.lr=1e-4"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    (line,) = [ln for ln in out.stdout.splitlines() if "-m jobs submit" in ln]
    args = shlex.split(line)
    assert args[args.index("submit"):] == ["submit", "--stages", "fc2.yaml", "ft3d.yaml", "--cluster", "ci",
                                           "--set", "train.lr=1e-4"]
    # and they reach the launcher, which checks them like any --set
    typo = subprocess.run(["make", "-s", "submit", "CLUSTER=local", "SET=train.bach_size=2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert typo.returncode != 0 and "train.bach_size: unknown key" in typo.stderr, typo.stderr


def test_readme_says_how_to_reach_the_installed_commands_and_the_data() -> None:
    import sys
    from pathlib import Path

    from edgeflow.cli import COMMANDS

    text = (REPO / "README.md").read_text()
    for needed in ("python3-venv", "source .venv/bin/activate", ".venv/bin/edgeflow", "FlyingChairs2",
                   "lmb.informatik.uni-freiburg.de", "--set data.train_dir=", "No module named matplotlib"):
        assert needed in text, needed
    # Every command the README shows exists: make targets, edgeflow commands.
    makefile = (REPO / "Makefile").read_text()
    targets = {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):(?!=)", makefile, re.M)}
    shown = set(re.findall(r"(?:^|[`(]|sudo )make ([a-z][a-z0-9-]*)", text, re.M))
    assert shown and shown <= targets, sorted(shown - targets)
    commands = set(re.findall(r"(?:^|`)(?:\.venv/bin/)?(?:edgeflow|python -m edgeflow) +([a-z][a-z0-9-]*)",
                              text, re.M))
    assert {"report", "preflight", "train"} <= commands and commands <= set(COMMANDS) | {"jobs", "monitor"}, \
        sorted(commands - set(COMMANDS))
    # The installed command the README points at is there and runs.
    installed = Path(sys.executable).parent / "edgeflow"
    out = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "report" in out.stdout, out.stderr


def test_the_node_gate_says_one_line_unless_something_is_to_see(tmp_path, demo_data) -> None:
    from edgeflow import config
    from jobs.gate import run_gate
    from tests.helpers import tiny_config

    clean = run_gate(config.load(tiny_config(tmp_path, demo_data, name="clean")))
    assert clean.ok and clean.brief == "preflight: OK: 24 training and 8 validation samples (val_dir)"
    assert "split" in clean.report and clean.brief != clean.report  # the login node shows the table
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    broken = data / "train" / "0000003-img_0.png"
    broken.write_bytes(broken.read_bytes()[:100])
    excused = run_gate(config.load(tiny_config(tmp_path, data, name="excused"), ["data.allow_excluded_samples=1"]))
    assert excused.ok and excused.brief == excused.report and "0000003-img_0.png" in excused.brief
    # The demo shows the table once: the launcher's gate prints it, the demo does not run its own preflight.
    demo = (REPO / "scripts" / "demo.sh").read_text()
    assert "edgeflow preflight" not in demo and demo.rstrip().endswith('<<<"$REPORT")"')
