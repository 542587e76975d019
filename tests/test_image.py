"""`make image` and `make image-check` for a cluster profile, run for real against stand-ins.

Apptainer cannot be installed here and the machine has no GPU, so tests/bin/apptainer (renders the
definition with the build arguments it is given and writes the labels as the "image") and
tests/bin/nvidia-smi (answers the driver and GPU-name queries from the environment) stand in for
them, first on PATH. Everything else is real: make, the profile loader, jobs.image, jobs.gpu_driver,
and in one test the smoke test with TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgeflow import config as efconfig
from jobs import profile as jprofile

REPO = Path(__file__).resolve().parents[1]
STAND_INS = REPO / "tests" / "bin"
VENV_BIN = str(Path(sys.executable).parent)
DEF = str(REPO / "container" / "edgeflow.def")


def _write_profile(tmp_path: Path, base: str, name: str, **changes: dict) -> tuple[Path, Path]:
    """A copy of configs/clusters/<base>.yaml whose image goes to tmp_path; `changes` per section."""
    data = yaml.safe_load((REPO / "configs" / "clusters" / f"{base}.yaml").read_text())
    sif = tmp_path / name / "edgeflow.sif"
    data["name"] = name
    data["container"]["image"] = str(sif)
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, sif


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = os.pathsep.join([str(STAND_INS), VENV_BIN, "/usr/bin", "/bin"])
    e["APPTAINER_STANDIN_LOG"] = str(tmp_path / "apptainer.log")
    e["APPTAINER_STANDIN_PYTHON"] = sys.executable
    for key in ("NVIDIA_SMI_STANDIN_DRIVERS", "NVIDIA_SMI_STANDIN_GPUS", "APPTAINER_STANDIN_FAIL",
                "APPTAINER_STANDIN_TEST_FAIL"):
        e.pop(key, None)
    return e


def _make(target: str, cluster: Path, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", target, f"CLUSTER={cluster}", f"PYTHON={sys.executable}"],
                          cwd=REPO, env={**env, **extra}, capture_output=True, text=True, timeout=300)


def _image(cluster: Path, env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs.image", *args, "--cluster", str(cluster)], cwd=REPO,
                          env={**env, **extra}, capture_output=True, text=True, timeout=300)


def _calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["APPTAINER_STANDIN_LOG"])
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def _build_call(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    (call,) = [c for c in _calls(env) if c[:1] == ["build"]]
    args = dict(call[i + 1].split("=", 1) for i, a in enumerate(call) if a == "--build-arg")
    return call, args


# --- make image ---------------------------------------------------------------------------------------


def test_make_image_builds_two_profiles_with_their_own_versions(tmp_path, env):
    """The stand-in records the build arguments; the labels it renders from the definition equal them."""
    gpu, gpu_sif = _write_profile(tmp_path, "genius", "gpu")
    compat, compat_sif = _write_profile(tmp_path, "genius", "oldgpu",
                                        image={"cuda_compat": True, "min_driver": "470.57.02"})
    seen = {}
    for cluster, sif in ((gpu, gpu_sif), (compat, compat_sif)):
        Path(env["APPTAINER_STANDIN_LOG"]).unlink(missing_ok=True)
        proc = _make("image", cluster, env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        call, args = _build_call(env)
        assert call[-1] == DEF and call[-2] == str(sif.parent / ".edgeflow.sif.building")
        assert "--fakeroot" in call and "--notest" in call
        image = json.loads(sif.read_text())
        assert image["cwd"] == str(REPO)  # %files sources are relative to the repository
        labels = image["labels"]
        for key in ("tensorflow", "cuda", "cudnn", "min_driver", "native_driver", "cuda_compat", "cluster"):
            assert labels[f"edgeflow.{key}"] == args[key], key
        assert labels["edgeflow.base_image"] == args["base"] == "tensorflow/tensorflow:2.21.0-gpu"
        # The plan is printed before anything runs, the test runs on the staged file, then the rename.
        out = proc.stdout
        assert out.index("image for cluster") < out.index("+ ") and "target driver:" in out
        test_call = [c for c in _calls(env) if c[:1] == ["test"]]
        assert test_call == [["test", str(sif.parent / ".edgeflow.sif.building")]]
        checksum = hashlib.sha256(sif.read_bytes()).hexdigest()
        assert (sif.parent / "edgeflow.sif.sha256").read_text() == f"{checksum}  edgeflow.sif\n"
        assert f"sha256: {checksum}" in out and not list(sif.parent.glob(".*building"))
        seen[cluster.stem] = (args, out)
    (g, g_out), (c, c_out) = seen["gpu"], seen["oldgpu"]
    assert (g["min_driver"], g["cuda_compat"]) == ("525.60.13", "0")
    assert (c["min_driver"], c["cuda_compat"], c["native_driver"]) == ("470.57.02", "1", "525.60.13")
    assert "target driver: >= 525.60.13 (CUDA 12 line)\n" in g_out
    assert "from 470.57.02 on datacenter GPUs through cuda-compat" in c_out
    assert "binds at run:  /scratch, /data" in g_out


def test_a_failed_build_or_test_keeps_the_previous_image(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "ci", "ci2")
    sif.parent.mkdir(parents=True)
    sif.write_text("previous image")
    for flag in ("APPTAINER_STANDIN_FAIL", "APPTAINER_STANDIN_TEST_FAIL"):
        proc = _make("image", cluster, env, **{flag: "1"})
        assert proc.returncode != 0
        assert "FAILED" in proc.stderr and f"{sif} is unchanged" in proc.stderr
        assert sif.read_text() == "previous image"
        assert not list(sif.parent.glob(".*building")) and not (sif.parent / "edgeflow.sif.sha256").exists()


def test_make_image_says_apptainer_is_missing(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "ci", "ci3")
    proc = _make("image", cluster, {**env, "PATH": f"{VENV_BIN}:/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "apptainer is not installed" in proc.stderr and "image.source" in proc.stderr
    assert "Error 127" in proc.stderr  # make's report of the exit code
    assert "image for cluster ci3" in proc.stdout  # the plan came first
    assert not sif.exists()


def test_old_apptainer_is_refused(tmp_path, env):
    cluster, _ = _write_profile(tmp_path, "ci", "ci4")
    proc = _make("image", cluster, env, APPTAINER_STANDIN_VERSION="1.1.9")
    assert proc.returncode != 0 and "needs Apptainer >= 1.2" in proc.stderr
    assert not [c for c in _calls(env) if c[:1] == ["build"]]


@pytest.mark.parametrize("image, message", [
    ({"base": "tensorflow/tensorflow:latest-gpu"}, "image.base 'tensorflow/tensorflow:latest-gpu' is not pinned"),
    ({"base": "tensorflow/tensorflow:2.20.0-gpu"}, "ships TensorFlow 2.20.0, constraints.txt pins tensorflow==2.21.0"),
    ({"base": "tensorflow/tensorflow:2.21.0"}, "is a CPU image but image.cuda is 12.5"),
    ({"cuda": "12.4"}, "image.cuda 12.4 / image.cudnn 9.3 disagree with TensorFlow 2.21.0's own CUDA libraries"),
    ({"build_args": {"PIP_INDEX": "x"}}, "build args PIP_INDEX are not used by the definition"),
    ({"base": "docker-archive:/nonexistent/tf.tar"}, "no such archive /nonexistent/tf.tar"),
])
def test_bad_build_settings_are_refused_before_building(tmp_path, env, image, message):
    cluster, sif = _write_profile(tmp_path, "genius", "bad", image=image)
    proc = _make("image", cluster, env)
    assert proc.returncode != 0 and "Error 2" in proc.stderr
    assert message in proc.stderr
    assert not _calls(env) and not sif.exists()


@pytest.mark.parametrize("image, message", [
    ({"cuda_version": "12.5"}, "image.cuda_version: unknown key; known keys: base, build_args"),
    ({"cuda": 12.5}, "image.cuda: expected a string"),
    ({"cuda_compat": "yes"}, "image.cuda_compat: expected true or false"),
    ({"build_flags": "--fakeroot"}, "image.build_flags: expected a list"),
    ({"min_driver": "525.60"}, "image.min_driver: 525.60 is below 525.60.13, the lowest driver that runs CUDA 12.5"),
    ({"min_driver": "470.57.02"}, "older datacenter drivers from 470.57.02: set image.cuda_compat: true"),
    ({"min_driver": "470.42.01", "cuda_compat": True}, "image.min_driver: 470.42.01 is below 470.57.02"),
    ({"cuda": "10.2"}, "image.cuda: CUDA 10.2 is not a line this kit builds images for"),
    ({"cuda": "11.8", "min_driver": ""}, r"CUDA lines: 12 \(supported\), 11 \(not supported by this kit\)"),
    ({"cuda": "12"}, "image.cuda: expected a major.minor version like '12.5'"),
    ({"cuda": "", "cudnn": "", "min_driver": "", "cuda_compat": True}, "image.cuda_compat: needs image.cuda"),
    ({"cudnn": ""}, "image.cudnn: must be given with image.cuda"),
    ({"source": "ftp://host/edgeflow.sif.gz"}, "image.source: must be empty"),
    ({"base": "quay.io://tf"}, "image.base: must be a docker reference"),
    ({"build_flags": ["fakeroot"]}, r"image.build_flags\[0\]: expected an apptainer build option"),
    ({"build_args": {"cuda": "12.4"}}, "image.build_args.cuda: is set by the image section or the lock file"),
])
def test_a_profile_with_a_bad_image_key_is_refused(tmp_path, image, message):
    cluster, _ = _write_profile(tmp_path, "genius", "bad", image=image)
    with pytest.raises(jprofile.ProfileError, match=message) as err:
        jprofile.load(cluster)
    assert str(cluster) in str(err.value)


def test_make_image_refuses_a_bad_profile_with_the_dotted_key(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "genius", "bad", image={"min_driver": "525.60"})
    proc = _make("image", cluster, env)
    assert proc.returncode != 0 and "Error 2" in proc.stderr
    assert f"cluster profile {cluster}: image.min_driver: 525.60 is below 525.60.13" in proc.stderr
    assert not _calls(env)


def test_the_template_profile_explains_every_key():
    path = REPO / "configs" / "clusters" / "TEMPLATE.yaml"
    loaded = jprofile.load(path)
    assert loaded.image.cuda and loaded.uses_gpus
    raw = yaml.safe_load(path.read_text())
    text = path.read_text()
    for name, value in jprofile.to_dict(loaded).items():
        assert name in raw, f"TEMPLATE.yaml lacks {name}"
        keys = value.keys() if isinstance(value, dict) else []
        for key in keys:
            assert key in raw[name], f"TEMPLATE.yaml lacks {name}.{key}"
            line = next(ln for ln in text.splitlines() if re.match(rf"^\s+{key}:", ln))
            assert "#" in line, f"TEMPLATE.yaml: {name}.{key} has no explanation"


# --- other ways to get the image -------------------------------------------------------------------


def test_a_finished_image_is_converted_and_held_to_the_profile(tmp_path, env):
    """image.source / --source: no %post, no fakeroot, no build args; labels checked, %test run."""
    made_elsewhere, elsewhere_sif = _write_profile(tmp_path, "genius", "elsewhere")
    assert _make("image", made_elsewhere, env).returncode == 0
    archive = tmp_path / "edgeflow-oci.tar"
    archive.write_bytes(elsewhere_sif.read_bytes())

    cluster, sif = _write_profile(tmp_path, "genius", "target", image={"source": f"oci-archive:{archive}"})
    Path(env["APPTAINER_STANDIN_LOG"]).unlink()
    proc = _make("image", cluster, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"convert/pull the finished image oci-archive:{archive}" in proc.stdout
    call, args = _build_call(env)
    assert call == ["build", str(sif.parent / ".edgeflow.sif.building"), f"oci-archive:{archive}"] and not args
    assert ["test", str(sif.parent / ".edgeflow.sif.building")] in _calls(env)
    assert json.loads(sif.read_text())["labels"]["edgeflow.cluster"] == "elsewhere"

    # A prebuilt image from a registry, by the CLI flag; a CPU image does not pass for a GPU cluster.
    registry = tmp_path / "registry"
    registry.mkdir()
    cpu_profile, cpu_sif = _write_profile(tmp_path, "ci", "cpu")
    assert _make("image", cpu_profile, env).returncode == 0
    (registry / "ghcr.io_me_edgeflow_cpu").write_bytes(cpu_sif.read_bytes())
    sif.write_text("previous image")
    proc = _image(cluster, env, "build", "--source", "oras://ghcr.io/me/edgeflow:cpu",
                  APPTAINER_STANDIN_REGISTRY=str(registry))
    assert proc.returncode == 1
    assert "labels disagree" in proc.stderr and "edgeflow.cuda='none', expected '12.5'" in proc.stderr
    assert sif.read_text() == "previous image"
    proc = _image(cluster, env, "build", "--source", "docker://example.org/edgeflow:1")
    assert proc.returncode == 1 and "no network" in proc.stderr


def test_a_base_saved_elsewhere_bootstraps_from_the_archive(tmp_path, env):
    archive = tmp_path / "tf-gpu.tar"
    archive.write_bytes(b"docker save output")
    cluster, sif = _write_profile(tmp_path, "genius", "arch", image={"base": f"docker-archive:{archive}"})
    proc = _make("image", cluster, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, args = _build_call(env)
    assert (args["bootstrap"], args["base"]) == ("docker-archive", str(archive))
    assert json.loads(sif.read_text())["labels"]["edgeflow.base_image"] == str(archive)


# --- make image-check -------------------------------------------------------------------------------


def test_image_check_of_a_cpu_profile_tests_the_image_and_its_checksum(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "ci", "cpu")
    assert _make("image", cluster, env).returncode == 0
    checksum = hashlib.sha256(sif.read_bytes()).hexdigest()
    proc = _make("image-check", cluster, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"sha256 matches edgeflow.sif.sha256: {checksum}" in proc.stdout and "no GPU check" in proc.stdout
    assert ["test", str(sif)] in _calls(env)
    sif.write_text(sif.read_text() + " ")
    changed = _make("image-check", cluster, env)
    assert changed.returncode != 0 and "differs from" in changed.stderr


def test_image_check_without_a_gpu_refuses_clearly(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "genius", "gpu")
    assert _make("image", cluster, env).returncode == 0
    Path(env["APPTAINER_STANDIN_LOG"]).unlink()
    no_gpu = {**env, "PATH": os.pathsep.join([str(tmp_path / "onlyapptainer"), VENV_BIN, "/usr/bin", "/bin"])}
    (tmp_path / "onlyapptainer").mkdir()
    (tmp_path / "onlyapptainer" / "apptainer").symlink_to(STAND_INS / "apptainer")
    proc = _make("image-check", cluster, no_gpu)
    assert proc.returncode != 0
    assert "no NVIDIA GPU on" in proc.stderr and "must run on a GPU node of gpu" in proc.stderr
    assert "--srun" in proc.stderr
    assert not _calls(env), "nothing runs in the image without a GPU"


def test_image_check_refuses_an_old_driver_naming_the_supported_range(tmp_path, env):
    cluster, sif = _write_profile(tmp_path, "genius", "gpu")
    assert _make("image", cluster, env).returncode == 0
    Path(env["APPTAINER_STANDIN_LOG"]).unlink()
    proc = _make("image-check", cluster, env, NVIDIA_SMI_STANDIN_DRIVERS="470.82.01 470.82.01")
    assert proc.returncode != 0
    assert "NVIDIA driver 470.82.01" in proc.stderr and "cannot run image" in proc.stderr
    assert "Supported: NVIDIA driver 525.60.13 or newer." in proc.stderr
    assert "set image.cuda_compat: true" in proc.stderr
    assert not [c for c in _calls(env) if c[:1] in (["test"], ["exec"])]


def test_image_check_with_cuda_compat_refuses_consumer_gpus(tmp_path, env):
    cluster, _ = _write_profile(tmp_path, "genius", "oldgpu", image={"cuda_compat": True, "min_driver": ""})
    assert _make("image", cluster, env).returncode == 0
    proc = _make("image-check", cluster, env, NVIDIA_SMI_STANDIN_DRIVERS="470.82.01",
                 NVIDIA_SMI_STANDIN_GPUS="NVIDIA GeForce RTX 3090")
    assert proc.returncode != 0
    assert "Supported: NVIDIA driver 525.60.13 or newer, or 470.x from 470.57.02 on datacenter GPUs" in proc.stderr
    assert "consumer cards" in proc.stderr


@pytest.mark.slow
def test_image_check_on_an_old_datacenter_driver_goes_on_to_tensorflow(tmp_path, env):
    """Driver OK through cuda-compat; the smoke test then runs (here: on the host, no GPU) and refuses."""
    cluster, sif = _write_profile(tmp_path, "genius", "oldgpu", image={"cuda_compat": True, "min_driver": ""})
    assert _make("image", cluster, env).returncode == 0
    proc = _make("image-check", cluster, env, NVIDIA_SMI_STANDIN_DRIVERS="470.82.01",
                 NVIDIA_SMI_STANDIN_GPUS="Tesla V100-SXM2-32GB")
    assert "node GPUs: 1 x Tesla V100-SXM2-32GB; driver 470.82.01" in proc.stdout
    assert "through cuda-compat" in proc.stdout
    (exec_call,) = [c for c in _calls(env) if c[:1] == ["exec"]]
    assert exec_call[:6] == ["exec", "--nv", str(sif), "python3", "/opt/edgeflow/smoke_test.py", "--require-gpu"]
    # The timed step uses the supernet config's crop and (micro-)batch.
    cfg = efconfig.load(REPO / "configs" / "supernet_fc2_180x240.yaml")
    shape = {f"--height={cfg.data.input_height}", f"--width={cfg.data.input_width}",
             f"--batch={cfg.train.micro_batch_size or cfg.train.batch_size}", "--steps=20"}
    assert shape <= set(exec_call)
    assert proc.returncode != 0 and "TensorFlow sees no GPU" in proc.stderr
    assert "image check FAILED" in proc.stdout


def test_image_check_can_send_the_gpu_part_through_srun(tmp_path, env):
    cluster, _ = _write_profile(tmp_path, "genius", "gpu", slurm={"constraint": "v100", "qos": ""})
    assert _make("image", cluster, env).returncode == 0
    bin_dir = tmp_path / "srunbin"
    bin_dir.mkdir()
    args_file = tmp_path / "srun.args"
    (bin_dir / "srun").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {args_file}\n')
    (bin_dir / "srun").chmod(0o755)
    proc = _image(cluster, {**env, "PATH": f"{bin_dir}:{env['PATH']}"}, "check", "--srun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = args_file.read_text().splitlines()
    for flag in ("--gres=gpu:1", "--partition=gpu_p100", "--account=lp_my_project", "--constraint=v100", "--time=20"):
        assert flag in args
    assert "--qos=" not in " ".join(args)
    assert args[-7:] == ["-m", "jobs.image", "check", "--cluster", str(cluster), "--config",
                         str(REPO / "configs" / "supernet_fc2_180x240.yaml")]


def test_the_image_tools_load_no_tensorflow():
    code = "import sys, jobs.image, jobs.cuda_lines, jobs.deffile; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
