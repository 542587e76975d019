"""container/: the Apptainer definition checked statically, its commands run outside the container.

Apptainer cannot be installed here. The definition is parsed by container/deffile.py; %runscript,
%test and the version check of %post run with bash on this machine (paths of %files mapped back to
the repository); `make image` / `make image-check` run for real against a stand-in `apptainer`
(a small Python script put first on PATH) that records its arguments, renders the labels with the
same templating and writes a fake image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
sys.path.insert(0, str(REPO / "container"))
import deffile  # noqa: E402

from jobs import gpu_driver  # noqa: E402

DEF = REPO / "container" / "edgeflow.def"
REQUIRED_SECTIONS = {"arguments", "labels", "files", "post", "environment", "runscript", "test", "help"}
VENV_BIN = str(Path(PYTHON).parent)
# Bootstrap tools: present in every environment, left out of `pip freeze`, never pinned.
BOOTSTRAP = {"pip", "setuptools", "wheel"}


@pytest.fixture(scope="module")
def definition() -> deffile.DefFile:
    return deffile.load(DEF)


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    return deffile.read_constraints(REPO / "constraints.txt")


def _pyproject(key: str) -> str:
    """A top-level `key = value` of pyproject.toml (tomllib is not in Python 3.10)."""
    match = re.search(rf"^{key}\s*=\s*(.+)$", (REPO / "pyproject.toml").read_text(), re.M)
    assert match, f"pyproject.toml has no {key}"
    value = match.group(1).strip()
    return value.strip('"') if value.startswith('"') else value


def _from_files(body: str, definition: deffile.DefFile) -> str:
    """Replace the image paths of %files destinations by their sources in the repository."""
    for src, dst in sorted(definition.files, key=lambda f: -len(f[1])):
        body = body.replace(dst, str(REPO / src))
    return body


def _run_bash(script: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script, "section", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- the definition, statically ----------------------------------------------------------------


def test_header_is_docker_bootstrap_from_a_pinned_tensorflow_gpu_image(definition, constraints):
    assert definition.header["bootstrap"] == "docker"
    assert definition.header["from"] == definition.arguments["base"]
    ref = deffile.parse_image_ref(definition.header["from"])
    assert ref.name == "tensorflow/tensorflow"
    assert ref.pinned and ref.tag != "latest"
    assert ref.tag == f"{constraints['tensorflow']}-gpu"


def test_every_required_section_is_there(definition):
    missing = REQUIRED_SECTIONS - set(definition.sections)
    assert not missing, f"edgeflow.def lacks %{', %'.join(sorted(missing))}"
    for name in REQUIRED_SECTIONS:
        assert definition.section(name).body.strip(), f"%{name} is empty"


def test_labels_agree_with_the_pins_and_with_the_tensorflow_wheel(definition, constraints):
    labels = definition.labels
    tf_pin = constraints["tensorflow"]
    base_tag = deffile.parse_image_ref(definition.arguments["base"]).tag
    assert labels["edgeflow.tensorflow"] == tf_pin == base_tag.split("-")[0]
    # The installed tensorflow==2.21.0 wheel states its CUDA libraries in its and-cuda extra.
    cuda_reqs = {}
    for text in md.requires("tensorflow") or []:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}):
            cuda_reqs[req.name] = req.specifier
    runtime = str(cuda_reqs["nvidia-cuda-runtime-cu12"]).split(">=")[1].split(",")[0]
    cudnn = str(cuda_reqs["nvidia-cudnn-cu12"]).split(">=")[1].split(",")[0]
    assert labels["edgeflow.cuda"] == ".".join(runtime.split(".")[:2])
    assert labels["edgeflow.cudnn"] == ".".join(cudnn.split(".")[:2])
    assert labels["edgeflow.cuda_line"] == labels["edgeflow.cuda"].split(".")[0]
    assert labels["edgeflow.min_driver"] == gpu_driver.CUDA_LINES[labels["edgeflow.cuda_line"]][0]
    assert labels["edgeflow.version"] == _pyproject("version") == md.version("edgeflow")
    assert labels["edgeflow.base_image"] == definition.arguments["base"]
    assert "edgeflow.build_date" in labels


def test_build_args_fill_the_labels():
    d = deffile.load(DEF, {"min_driver": "535.54.03", "build_date": "2026-11-26T10:00:00Z",
                           "base": "tensorflow/tensorflow:2.21.0-gpu@sha256:" + "a" * 64})
    assert d.labels["edgeflow.min_driver"] == "535.54.03"
    assert d.labels["edgeflow.build_date"] == "2026-11-26T10:00:00Z"
    assert d.header["from"].endswith("@sha256:" + "a" * 64)
    assert "{{" not in d.section("post").body


def test_the_image_installs_the_lock_ci_uses(definition):
    files = dict(definition.files)
    lock_in_image = files["constraints.txt"]
    post = definition.section("post").body
    installs = re.findall(r"^[^#\n]*pip install (.*)$", post, re.M)
    assert len(installs) == 1, installs
    words = installs[0].replace('"', "").split()
    assert words[words.index("-c") + 1] == lock_in_image
    project = [w for w in words if "[" in w]
    assert len(project) == 1
    src, extras = project[0].rstrip("]").split("[")
    assert files["pyproject.toml"] == f"{src}/pyproject.toml"
    # Makefile: pip install -c constraints.txt -e '.[train,jobs,monitor,dev]'; the image leaves out dev.
    make_extras = re.search(r"-c constraints.txt -e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text()).group(1)
    assert set(extras.split(",")) == set(make_extras.split(",")) - {"dev"}
    # Every package pyproject installs is copied in.
    for pattern in json.loads(_pyproject("include")):
        package = pattern.rstrip("*")
        assert files[package] == f"{src}/{package}"


def test_every_files_source_exists(definition):
    for src, _ in definition.files:
        assert (REPO / src).exists(), f"%files copies {src}, which is not in the repository"


def test_constraints_equal_the_venv(constraints):
    frozen = subprocess.run([PYTHON, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    venv = {}
    for line in frozen.splitlines():
        if line.startswith(("-e", "#")) or not line.strip():
            continue
        name, _, version = line.partition("==")
        venv[deffile.normalize_name(name)] = version
    assert constraints == venv


def test_every_runtime_dependency_is_pinned(constraints):
    """Walk the installed requirements of edgeflow[train,jobs,monitor]: nothing floats in the image."""
    todo = [("edgeflow", {"train", "jobs", "monitor"})]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = deffile.normalize_name(name)
        if key in seen:
            continue
        seen.add(key)
        for text in md.requires(name) or []:
            req = Requirement(text)
            env = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(e) for e in env):
                todo.append((req.name, set(req.extras)))
    runtime = seen - {"edgeflow"} - BOOTSTRAP
    assert "tensorflow" in runtime and "submitit" in runtime and "watchdog" in runtime
    unpinned = sorted(runtime - set(constraints))
    assert not unpinned, f"runtime dependencies without a pin in constraints.txt: {unpinned}"
    for key in runtime:
        assert md.version(key) == constraints[key], key


# --- the sections' commands, run here -----------------------------------------------------------


def test_runscript_runs_edgeflow_outside_the_container(definition, tmp_path):
    body = definition.section("runscript").body
    help_ = _run_bash(body, "--help", cwd=tmp_path)
    assert help_.returncode == 0, help_.stderr
    assert "arch-info" in help_.stdout and "train" in help_.stdout
    info = _run_bash(body, "arch-info", "--arch", "000021222", "--brief", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["arch"] == "000021222"
    assert data["output_shapes"]["1/1"] == [192, 240, 4]
    bad = _run_bash(body, "no-such-command", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_runscript_ignores_an_edgeflow_folder_in_the_working_directory(definition, tmp_path):
    shadow = tmp_path / "edgeflow"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("raise SystemExit('the checkout in the working directory ran')\n")
    proc = _run_bash(definition.section("runscript").body, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "arch-info" in proc.stdout


def test_test_section_trains_one_step_on_cpu(definition, tmp_path):
    proc = _run_bash(_from_files(definition.section("test").body, definition), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GPUs: 0" in proc.stdout
    match = re.search(r"outputs \[(.*?)\], loss ([0-9.]+), grad norm ([0-9.]+)", proc.stdout)
    assert match, proc.stdout
    assert "(2, 48, 64, 4)" in match.group(1)
    assert float(match.group(3)) > 0
    assert "smoke test passed" in proc.stdout


def test_smoke_test_fails_without_a_gpu_when_one_is_required(tmp_path):
    proc = subprocess.run([PYTHON, str(REPO / "container" / "smoke_test.py"), "--require-gpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "sees no GPU" in proc.stderr


def test_post_version_check_passes_with_this_tensorflow_and_catches_a_wrong_label(definition, tmp_path):
    post = definition.section("post").body.replace("\\\n", " ")
    line = next(ln for ln in post.splitlines() if "smoke_test.py --build-only" in ln)
    proc = _run_bash(_from_files(line.strip(), definition), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tensorflow 2.21.0" in proc.stdout
    wrong = _run_bash(_from_files(line.strip().replace("--cuda 12.5", "--cuda 11.8"), definition), cwd=tmp_path)
    assert wrong.returncode == 1
    assert "labelled CUDA 11.8" in wrong.stderr


def test_environment_section_sets_the_image_for_run_json(definition, tmp_path):
    script = definition.section("environment").body + '\nprintf "%s|%s" "$EDGEFLOW_IMAGE" "$PYTHONNOUSERSITE"'
    env = {"PATH": os.environ["PATH"], "APPTAINER_CONTAINER": "/images/edgeflow.sif"}
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout == "/images/edgeflow.sif|1"


# --- the parser's errors --------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("From: x:1\n%post\n  true\n", "no 'Bootstrap:'"),
    ("Bootstrap: docker\nFrom: x:1\n%postt\n  true\n", "unknown section %postt"),
    ("Bootstrap: docker\n%post\n  a\n%post\n  b\n", "section %post given twice"),
    ("Bootstrap: docker\nFrom: {{ base }}\n", "no value for base"),
    ("Bootstrap docker\n", "expected a header line"),
    ("Bootstrap: docker\nBootstrap: docker\n", "given twice"),
    ("Bootstrap: docker\n%arguments\n  not an assignment\n", "expected NAME=value"),
    ("Bootstrap: docker\n%labels\n  a 1\n  a 2\n", "label 'a' given twice"),
])
def test_bad_definitions_are_errors(text, message):
    with pytest.raises(deffile.DefFileError, match=re.escape(message)):
        d = deffile.parse(text, path="bad.def")
        d.labels  # noqa: B018  (labels are parsed on access)


def test_unknown_build_arg_is_an_error():
    with pytest.raises(deffile.DefFileError, match="build args cuda_version are not used"):
        deffile.load(DEF, {"cuda_version": "12.4"})


def test_missing_definition_names_the_file(tmp_path):
    with pytest.raises(deffile.DefFileError, match="nothing.def: cannot read"):
        deffile.load(tmp_path / "nothing.def")


@pytest.mark.parametrize("ref, name, tag, pinned", [
    ("tensorflow/tensorflow:2.21.0-gpu", "tensorflow/tensorflow", "2.21.0-gpu", True),
    ("docker://tensorflow/tensorflow:latest-gpu", "tensorflow/tensorflow", "latest-gpu", False),
    ("tensorflow/tensorflow:nightly-gpu", "tensorflow/tensorflow", "nightly-gpu", False),
    ("tensorflow/tensorflow:latest", "tensorflow/tensorflow", "latest", False),
    ("tensorflow/tensorflow", "tensorflow/tensorflow", "", False),
    ("localhost:5000/tf", "localhost:5000/tf", "", False),
    ("tf@sha256:" + "0" * 64, "tf", "", True),
])
def test_image_references(ref, name, tag, pinned):
    parsed = deffile.parse_image_ref(ref)
    assert (parsed.name, parsed.tag, parsed.pinned) == (name, tag, pinned)


def test_bad_digest_and_bad_constraint_lines(tmp_path):
    with pytest.raises(deffile.DefFileError, match="sha256:<64 hex digits>"):
        deffile.parse_image_ref("tf@sha256:abc")
    bad = tmp_path / "c.txt"
    bad.write_text("numpy==2.4.6\nrequests>=2\n")
    with pytest.raises(deffile.DefFileError, match=r"c.txt:2: expected 'name==version'"):
        deffile.read_constraints(bad)


# --- make image / make image-check ---------------------------------------------------------------

STAND_IN = '''#!{python}
"""Stand-in apptainer: records its calls; `build` renders the labels like Apptainer and writes them
as the "image"; `inspect` prints them in Apptainer's JSON layout; `test` and `exec` succeed."""
import json, os, sys
sys.path.insert(0, {container!r})
import deffile
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
if args == ["--version"]:
    print(os.environ.get("STAND_IN_VERSION", "apptainer version 1.3.4"))
elif args[0] == "build":
    if os.environ.get("STAND_IN_FAIL"):
        sys.exit("FATAL: stand-in build failure")
    build_args = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--build-arg")
    d = deffile.load(args[-1], build_args)
    with open(args[-2], "w") as f:
        json.dump(d.labels, f)
elif args[0] == "inspect":
    with open(args[-1]) as f:
        print(json.dumps({{"data": {{"attributes": {{"labels": json.load(f)}}}}, "type": "container"}}))
elif args[0] in ("test", "exec"):
    pass
else:
    sys.exit("stand-in apptainer: unexpected " + " ".join(args))
'''


@pytest.fixture()
def stand_in(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apptainer.log"
    exe = bin_dir / "apptainer"
    exe.write_text(STAND_IN.format(python=PYTHON, container=str(REPO / "container"), log=str(log)))
    exe.chmod(0o755)
    return bin_dir, log


def _profile(tmp_path: Path, **image) -> tuple[Path, Path]:
    sif = tmp_path / "images" / "edgeflow.sif"
    data = yaml.safe_load((REPO / "configs" / "clusters" / "ci.yaml").read_text())
    data["container"]["image"] = str(sif)
    data["image"].update(image)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, sif


def _make(target: str, cluster: Path | str, path: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", target, f"CLUSTER={cluster}"], cwd=REPO,
                          env={**os.environ, "PATH": path, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("target", ["image", "image-check"])
def test_make_says_apptainer_is_missing(target, tmp_path):
    profile, sif = _profile(tmp_path)
    proc = _make(target, profile, "/usr/bin:/bin")
    assert proc.returncode != 0
    assert "apptainer is not installed" in proc.stderr
    assert "Error 127" in proc.stderr  # make's report of the script's exit code
    assert not sif.exists()


def test_make_image_builds_with_the_profile_and_prints_labels_and_checksum(tmp_path, stand_in):
    bin_dir, log = stand_in
    profile, sif = _profile(tmp_path, base="tensorflow/tensorflow:2.21.0-gpu", min_driver="535.54.03",
                            build_flags=["--fakeroot", "--force"])
    proc = _make("image", profile, f"{bin_dir}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    build = next(c for c in calls if c["args"][0] == "build")
    assert build["cwd"] == str(REPO)
    args = build["args"]
    assert args[1:3] == ["--fakeroot", "--force"]
    assert "base=tensorflow/tensorflow:2.21.0-gpu" in args and "min_driver=535.54.03" in args
    assert args[-1] == str(REPO / "container" / "edgeflow.def")
    assert sif.is_file() and not list(sif.parent.glob(".*building"))
    labels = json.loads(sif.read_text())
    assert labels["edgeflow.min_driver"] == "535.54.03"
    assert labels["edgeflow.tensorflow"] == "2.21.0"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", labels["edgeflow.build_date"])
    checksum = hashlib.sha256(sif.read_bytes()).hexdigest()
    assert f"sha256: {checksum}" in proc.stdout
    assert "edgeflow.min_driver: 535.54.03" in proc.stdout
    assert (sif.parent / "edgeflow.sif.sha256").read_text() == f"{checksum}  edgeflow.sif\n"

    check = _make("image-check", profile, f"{bin_dir}:/usr/bin:/bin")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"sha256 matches edgeflow.sif.sha256: {checksum}" in check.stdout
    assert "no GPU smoke job" in check.stdout
    assert any(c["args"][:1] == ["test"] and c["args"][-1] == str(sif)
               for c in map(json.loads, log.read_text().splitlines()))

    sif.write_text(sif.read_text() + " ")
    changed = _make("image-check", profile, f"{bin_dir}:/usr/bin:/bin")
    assert changed.returncode != 0 and "differs from" in changed.stderr


def test_failed_build_keeps_the_previous_image(tmp_path, stand_in):
    bin_dir, _ = stand_in
    profile, sif = _profile(tmp_path)
    sif.parent.mkdir(parents=True)
    sif.write_text("previous image")
    proc = _make("image", profile, f"{bin_dir}:/usr/bin:/bin", STAND_IN_FAIL="1")
    assert proc.returncode != 0 and "image build FAILED" in proc.stderr
    assert sif.read_text() == "previous image"
    assert not list(sif.parent.glob(".*building"))


def test_old_apptainer_is_refused(tmp_path, stand_in):
    bin_dir, log = stand_in
    profile, sif = _profile(tmp_path)
    proc = _make("image", profile, f"{bin_dir}:/usr/bin:/bin", STAND_IN_VERSION="apptainer version 1.1.9")
    assert proc.returncode != 0 and "needs Apptainer >= 1.2" in proc.stderr
    assert not any(json.loads(c)["args"][0] == "build" for c in log.read_text().splitlines())


@pytest.mark.parametrize("image, message", [
    ({"base": "tensorflow/tensorflow:latest-gpu"}, "is not pinned"),
    ({"base": "tensorflow/tensorflow"}, "is not pinned"),
    ({"base": "tensorflow/tensorflow:2.20.0-gpu"}, "constraints.txt pins tensorflow==2.21.0"),
    ({"build_args": {"cuda": "12.4"}}, "build args cuda are not used by the definition"),
])
def test_bad_build_settings_are_refused_before_building(tmp_path, stand_in, image, message):
    bin_dir, log = stand_in
    profile, sif = _profile(tmp_path, **image)
    proc = _make("image", profile, f"{bin_dir}:/usr/bin:/bin")
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not log.exists() or not any(json.loads(c)["args"][0] == "build" for c in log.read_text().splitlines())


def _gpu_profile(tmp_path: Path) -> tuple[Path, Path]:
    profile, sif = _profile(tmp_path)
    data = yaml.safe_load(profile.read_text())
    data["slurm"].update(gpus_per_node=1, partition="gpu_a100", account="lp_x", constraint="a100")
    data["container"]["nv"] = True
    profile.write_text(yaml.safe_dump(data))
    return profile, sif


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line)["args"] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("driver, ok", [("535.54.03", True), ("470.82.01", False)])
def test_image_check_on_a_gpu_node_checks_the_driver_then_runs_the_gpu_smoke(tmp_path, stand_in, driver, ok):
    bin_dir, log = stand_in
    profile, sif = _gpu_profile(tmp_path)
    path = f"{bin_dir}:/usr/bin:/bin"
    assert _make("image", profile, path).returncode == 0
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho {driver}\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    proc = _make("image-check", profile, path)
    calls = _calls(log)
    assert ["test", "--nv", str(sif)] in calls
    smoke = ["exec", "--nv", str(sif), "python3", "/opt/edgeflow/smoke_test.py", "--require-gpu"]
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"NVIDIA driver {driver}" in proc.stdout and "image check passed" in proc.stdout
        assert smoke in calls
    else:
        assert proc.returncode != 0
        assert "older than 525.60.13" in proc.stderr and "make image CLUSTER=" in proc.stderr
        assert smoke not in calls


def test_image_check_without_a_gpu_sends_the_smoke_job_through_srun(tmp_path, stand_in):
    bin_dir, log = stand_in
    profile, sif = _gpu_profile(tmp_path)
    path = f"{bin_dir}:/usr/bin:/bin"
    assert _make("image", profile, path).returncode == 0
    srun_log = tmp_path / "srun.args"
    (bin_dir / "srun").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {srun_log}\n')
    (bin_dir / "srun").chmod(0o755)
    proc = _make("image-check", profile, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = srun_log.read_text().splitlines()
    for flag in ("--gres=gpu:1", "--partition=gpu_a100", "--account=lp_x", "--constraint=a100", "--time=20"):
        assert flag in args
    assert args[-3:] == [str(REPO / "container" / "image.py"), "gpu-smoke", str(profile)]
