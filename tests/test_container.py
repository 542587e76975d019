"""container/: the Apptainer definition checked statically against the profiles and the lock, and its
section commands run outside the container.

Apptainer cannot be installed here. The definition is parsed by jobs/deffile.py with the build
arguments jobs/image.py derives from a cluster profile and constraints.txt; %runscript, %test,
%environment and the version check of %post run with bash on this machine (paths of %files mapped
back to the repository). Building and checking through `make` is in tests/test_image.py.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from jobs import cuda_lines, deffile
from jobs import image as jimage
from jobs.profile import load as load_profile

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DEF = REPO / "container" / "edgeflow.def"
REQUIRED_SECTIONS = {"labels", "files", "post", "environment", "runscript", "test", "help"}
VENV_BIN = str(Path(PYTHON).parent)
# Bootstrap tools: present in every environment, left out of `pip freeze`, never pinned.
BOOTSTRAP = {"pip", "setuptools", "wheel"}
# A dotted number not part of a longer word: 2.21.0, 12.5, 525.60.13 (not 3bf863cc.pub, not x.y).
VERSION_LITERAL = re.compile(r"(?<![\w.])\d+\.\d+(?:\.\d+)*(?![\w])")
PROFILES = ("genius", "ci")


def _plan(name: str) -> jimage.BuildPlan:
    return jimage.plan_build(load_profile(name), build_date="2026-11-26T10:00:00Z")


@pytest.fixture(scope="module")
def definition() -> deffile.DefFile:
    return deffile.load(DEF, _plan("genius").build_args)


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    return deffile.read_constraints(REPO / "constraints.txt")


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


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


def test_no_version_literal_is_left_in_the_definition():
    text = DEF.read_text()
    found = [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1) for m in VERSION_LITERAL.finditer(line)]
    assert not found, f"edgeflow.def has version literals (line, text): {found}; take them as build arguments"
    # The check itself finds what it is meant to find.
    assert VERSION_LITERAL.findall("TensorFlow 2.21.0, CUDA 12.5, driver 525.60.13, 3bf863cc.pub x.y") == [
        "2.21.0", "12.5", "525.60.13"]


def test_the_definition_takes_every_version_as_a_build_argument():
    names = deffile.template_names(DEF.read_text())
    assert {"bootstrap", "base", "tensorflow", "cuda", "cudnn", "min_driver", "native_driver", "cuda_compat",
            "edgeflow_version", "build_date", "cluster"} <= names
    # No defaults: a build without the arguments is an error, never a silent old version.
    with pytest.raises(deffile.DefFileError, match="no value for"):
        deffile.load(DEF)


@pytest.mark.parametrize("name", PROFILES)
def test_labels_checks_smoke_flags_and_help_derive_from_the_build_arguments(name):
    plan = _plan(name)
    args = plan.build_args
    d = deffile.load(DEF, args)
    assert d.header["bootstrap"] == args["bootstrap"] == "docker"
    assert d.header["from"] == args["base"]
    for key, value in plan.expected_labels().items():
        assert d.labels[key] == value, key
    assert d.labels["edgeflow.build_date"] == "2026-11-26T10:00:00Z"
    post = d.section("post").body.replace("\\\n", " ")
    assert f'if [ "$base_tf" != "{args["tensorflow"]}" ]' in post
    smoke = next(ln for ln in post.splitlines() if "smoke_test.py --build-only" in ln)
    for flag in ("tensorflow", "cuda", "cudnn"):
        assert f"--{flag}={args[flag]}" in smoke
    assert f"--edgeflow={args['edgeflow_version']}" in smoke
    help_ = d.section("help").body
    assert f"TensorFlow {args['tensorflow']}, CUDA {args['cuda']}, cuDNN {args['cudnn']}" in help_
    assert f"driver {args['min_driver']} or newer" in help_ and f"CLUSTER={name}" in help_
    assert "{{" not in json.dumps(d.labels) + post + help_


def test_two_profiles_give_different_images_from_one_definition():
    gpu, cpu = _plan("genius").build_args, _plan("ci").build_args
    assert gpu["tensorflow"] == cpu["tensorflow"]  # one lock
    assert (gpu["base"], gpu["cuda"], gpu["min_driver"]) == ("tensorflow/tensorflow:2.21.0-gpu", "12.5", "525.60.13")
    assert (cpu["base"], cpu["cuda"], cpu["min_driver"]) == ("tensorflow/tensorflow:2.21.0", "none", "none")


def test_the_tensorflow_version_comes_from_the_lock(tmp_path):
    lock = tmp_path / "constraints.txt"
    lock.write_text((REPO / "constraints.txt").read_text().replace("tensorflow==2.21.0", "tensorflow==2.20.0"))
    plan = jimage.plan_build(load_profile("genius"), lock=lock)
    assert plan.build_args["tensorflow"] == "2.20.0"
    assert plan.build_args["base"] == "tensorflow/tensorflow:2.20.0-gpu"
    assert deffile.load(DEF, plan.build_args).labels["edgeflow.tensorflow"] == "2.20.0"


def test_genius_states_the_facts_of_this_tensorflow(constraints):
    """image.cuda / image.cudnn / image.min_driver of the shipped GPU profile against the wheel and NVIDIA."""
    genius = load_profile("genius").image
    cuda_reqs = {}
    for text in md.requires("tensorflow") or []:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": "and-cuda"}):
            cuda_reqs[req.name] = req.specifier
    runtime = str(cuda_reqs["nvidia-cuda-runtime-cu12"]).split(">=")[1].split(",")[0]
    cudnn = str(cuda_reqs["nvidia-cudnn-cu12"]).split(">=")[1].split(",")[0]
    assert genius.cuda == ".".join(runtime.split(".")[:2])
    assert genius.cudnn == ".".join(cudnn.split(".")[:2])
    assert genius.min_driver == cuda_lines.LINES[genius.cuda.split(".")[0]].min_driver == "525.60.13"
    assert md.version("tensorflow") == constraints["tensorflow"]


def test_every_required_section_is_there(definition):
    missing = REQUIRED_SECTIONS - set(definition.sections)
    assert not missing, f"edgeflow.def lacks %{', %'.join(sorted(missing))}"
    for name in REQUIRED_SECTIONS:
        assert definition.section(name).body.strip(), f"%{name} is empty"
    assert "smoke_test.py" in definition.section("test").body


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
    # (the Makefile may continue the line with a backslash)
    make_extras = re.search(r"-c constraints.txt\s*(?:\\\s*)?-e '\.\[([a-z,]+)\]'",
                            (REPO / "Makefile").read_text()).group(1)
    assert set(extras.split(",")) == set(make_extras.split(",")) - {"dev"}
    # Every folder pyproject installs a package from is copied in (edgeflow_jobs comes from jobs/, ...).
    setuptools = _pyproject()["tool"]["setuptools"]
    dirs = setuptools["package-dir"]
    for package in setuptools["packages"]:
        top = package.split(".")[0]
        folder = dirs.get(top, top)
        assert files[folder] == f"{src}/{folder}", package


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_post_version_check_passes_with_this_tensorflow_and_catches_a_wrong_label(definition, tmp_path):
    post = definition.section("post").body.replace("\\\n", " ")
    line = next(ln for ln in post.splitlines() if "smoke_test.py --build-only" in ln)
    proc = _run_bash(_from_files(line.strip(), definition), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tensorflow 2.21.0" in proc.stdout
    wrong = _run_bash(_from_files(line.strip().replace("--cuda=12.5", "--cuda=11.8"), definition), cwd=tmp_path)
    assert wrong.returncode == 1
    assert "labelled CUDA 11.8" in wrong.stderr


def test_environment_section_sets_the_image_for_run_json(definition, tmp_path):
    script = definition.section("environment").body + '\nprintf "%s|%s" "$EDGEFLOW_IMAGE" "$PYTHONNOUSERSITE"'
    env = {"PATH": os.environ["PATH"], "APPTAINER_CONTAINER": "/images/edgeflow.sif"}
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout == "/images/edgeflow.sif|1"


@pytest.mark.parametrize("driver, compat_used", [("470.82.01", True), ("525.60.13", False), ("550.54.14", False),
                                                 (None, False)])
def test_environment_loads_cuda_compat_only_below_the_lines_driver(definition, tmp_path, driver, compat_used):
    """The image's cuda-compat libraries and the node's /proc/driver/nvidia/version mapped into tmp_path."""
    compat = tmp_path / "cuda-compat"
    compat.mkdir()
    version = tmp_path / "nvidia-version"
    if driver:
        version.write_text(f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Tue Jun  6 22:20:39 UTC 2023\n"
                           "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
    body = (definition.section("environment").body.replace("/opt/edgeflow/cuda-compat", str(compat))
            .replace("/proc/driver/nvidia/version", str(version)))
    env = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": "/.singularity.d/libs"}
    proc = subprocess.run(["sh", "-c", body + '\nprintf "%s" "$LD_LIBRARY_PATH"'], env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = f"{compat}:/.singularity.d/libs" if compat_used else "/.singularity.d/libs"
    assert proc.stdout == expected


def test_post_installs_cuda_compat_for_the_images_cuda_only_when_asked(tmp_path):
    profile = tmp_path / "compat.yaml"
    profile.write_text((REPO / "configs/clusters/genius.yaml").read_text()
                       .replace('min_driver: "525.60.13"', 'min_driver: "470.57.02"')
                       .replace("cuda_compat: false", "cuda_compat: true"))
    args = jimage.plan_build(load_profile(profile)).build_args
    assert (args["cuda_compat"], args["min_driver"], args["native_driver"]) == ("1", "470.57.02", "525.60.13")
    d = deffile.load(DEF, args)
    post = d.section("post").body
    block = post[post.index('if [ "1" = 1 ]'):]
    assert "cuda-compat-$(echo '12.5' | tr . -)" in block and "/usr/local/cuda-12.5/compat" in block
    assert subprocess.run(["sh", "-n", "-c", post], capture_output=True).returncode == 0
    assert d.labels["edgeflow.cuda_compat"] == "1"
    assert 'if [ "0" = 1 ]' in deffile.load(DEF, _plan("genius").build_args).section("post").body


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
        deffile.load(DEF, {**_plan("genius").build_args, "cuda_version": "12.4"})


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
