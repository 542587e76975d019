"""jobs/gpu_driver.py: the node's NVIDIA driver against the image's minimum.

No GPU here: a stand-in `nvidia-smi` shell script put first on PATH answers the exact query the
module makes (and fails on any other), and a stand-in `apptainer` prints `inspect --json` output
in Apptainer's layout. Everything else (subprocesses, profile loading, the CLI) is real.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from jobs import gpu_driver
from jobs.gpu_driver import DriverError
from jobs.profile import load as load_profile
from tests.helpers import PYTHON, REPO


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture()
def bin_dir(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}:/usr/bin:/bin")
    return d


def fake_nvidia_smi(bin_dir: Path, output: str, code: int = 0) -> None:
    (bin_dir / "nvidia-smi.out").write_text(output)
    _script(bin_dir / "nvidia-smi", f"""#!/bin/sh
if [ "$*" != "--query-gpu=driver_version --format=csv,noheader" ]; then
    echo "stand-in nvidia-smi: unexpected arguments: $*" >&2; exit 64
fi
cat "{bin_dir / 'nvidia-smi.out'}"
exit {code}
""")


def fake_apptainer(bin_dir: Path, labels: dict | None, *, raw: str = "") -> None:
    payload = raw or json.dumps({"data": {"attributes": {"labels": labels}}, "type": "container"})
    _script(bin_dir / "apptainer", f"""#!/bin/sh
[ "$1 $2 $3" = "inspect --json --labels" ] || {{ echo "unexpected: $*" >&2; exit 64; }}
cat <<'EOF'
{payload}
EOF
""")


def _profile(tmp_path: Path, *, image: Path | None = None, **image_keys: object) -> Path:
    data = yaml.safe_load((REPO / "configs" / "clusters" / "genius.yaml").read_text())
    data["container"]["image"] = str(image or tmp_path / "edgeflow.sif")
    data["image"].update(image_keys)
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


LABELS = {"edgeflow.min_driver": "525.60.13", "edgeflow.tensorflow": "2.21.0", "edgeflow.cuda": "12.5",
          "edgeflow.base_image": "tensorflow/tensorflow:2.21.0-gpu"}


# --- reading the node's driver ------------------------------------------------------------------


def test_driver_version_from_nvidia_smi(bin_dir):
    fake_nvidia_smi(bin_dir, "535.54.03\n")
    assert gpu_driver.node_driver_version() == "535.54.03"


def test_the_lowest_driver_counts_when_gpus_disagree(bin_dir):
    fake_nvidia_smi(bin_dir, "550.90.07\n535.104.05\n550.90.07\n")
    assert gpu_driver.node_driver_version() == "535.104.05"


@pytest.mark.parametrize("output, code, message", [
    ("", 0, "printed no driver version"),
    ("N/A\n", 0, "expected one driver version per GPU"),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", 9,
     "failed (exit 9): NVIDIA-SMI has failed"),
])
def test_unreadable_driver_is_an_error(bin_dir, output, code, message):
    fake_nvidia_smi(bin_dir, output, code)
    with pytest.raises(DriverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gpu_driver.node_driver_version()


def test_no_nvidia_smi_is_an_error(bin_dir):
    with pytest.raises(DriverError, match="nvidia-smi not found on PATH"):
        gpu_driver.node_driver_version()


@pytest.mark.parametrize("text, expected", [("535.54.03", (535, 54, 3)), ("525.60", (525, 60)), ("470", (470,))])
def test_parse_driver_version(text, expected):
    assert gpu_driver.parse_driver_version(text) == expected


@pytest.mark.parametrize("text", ["", "535.54.03a", "v535", "535..1"])
def test_parse_driver_version_rejects(text):
    with pytest.raises(ValueError, match="not a driver version"):
        gpu_driver.parse_driver_version(text)


# --- what the image needs ----------------------------------------------------------------------------


def test_labels_from_apptainer_inspect(tmp_path, bin_dir):
    image = tmp_path / "edgeflow.sif"
    image.write_bytes(b"sif")
    fake_apptainer(bin_dir, LABELS)
    assert gpu_driver.image_labels(str(image)) == LABELS


def test_missing_image_and_bad_inspect_output_are_errors(tmp_path, bin_dir):
    with pytest.raises(DriverError, match="does not exist: build it with `make image"):
        gpu_driver.image_labels(str(tmp_path / "none.sif"))
    image = tmp_path / "edgeflow.sif"
    image.write_bytes(b"sif")
    with pytest.raises(DriverError, match="apptainer not found on PATH"):
        gpu_driver.image_labels(str(image))
    fake_apptainer(bin_dir, None, raw="FATAL: not a SIF file")
    with pytest.raises(DriverError, match="printed no JSON"):
        gpu_driver.image_labels(str(image))
    fake_apptainer(bin_dir, None, raw='{"data": {}}')
    with pytest.raises(DriverError, match="no data.attributes.labels"):
        gpu_driver.image_labels(str(image))


def test_the_higher_of_label_and_profile_counts(tmp_path):
    profile = load_profile(_profile(tmp_path, min_driver="535.54.03"))
    req = gpu_driver.requirement(profile, LABELS)
    assert req.min_driver == "535.54.03" and "image.min_driver" in req.source
    assert req.native_floor == "535.54.03"
    profile = load_profile(_profile(tmp_path, min_driver=""))
    req = gpu_driver.requirement(profile, LABELS)
    assert req.min_driver == "525.60.13" and "label edgeflow.min_driver" in req.source
    assert (req.tensorflow, req.cuda) == ("2.21.0", "12.5")
    # Not inspected: the profile's CUDA line gives the minimum.
    req = gpu_driver.requirement(profile, None)
    assert req.min_driver == "525.60.13" and "NVIDIA's minimum for CUDA 12" in req.source


def test_a_compat_image_needs_less_than_its_line(tmp_path):
    profile = load_profile(_profile(tmp_path, min_driver="", cuda_compat=True))
    req = gpu_driver.requirement(profile, None)
    assert (req.min_driver, req.native_floor, req.cuda_compat) == ("470.57.02", "525.60.13", True)
    labels = {**LABELS, "edgeflow.min_driver": "470.57.02", "edgeflow.native_driver": "525.60.13",
              "edgeflow.cuda_compat": "1"}
    req = gpu_driver.requirement(load_profile(_profile(tmp_path, min_driver="")), labels)
    assert req.cuda_compat and req.min_driver == "470.57.02"
    assert "470.x from 470.57.02 on datacenter GPUs through cuda-compat" in req.supported()


def test_no_known_minimum_and_a_bad_label_are_errors(tmp_path):
    profile = load_profile(_profile(tmp_path, min_driver="", cuda="", cudnn=""))
    with pytest.raises(DriverError, match="no minimum driver known"):
        gpu_driver.requirement(profile, {})
    with pytest.raises(DriverError, match="is not a driver version; rebuild it"):
        gpu_driver.requirement(profile, {"edgeflow.min_driver": "{{ min_driver }}"})


# --- the comparison and its message --------------------------------------------------------------


def _req(min_driver: str = "525.60.13", compat: bool = False) -> gpu_driver.Requirement:
    return gpu_driver.Requirement(min_driver=min_driver, source="label edgeflow.min_driver of the image",
                                  image="/scratch/edgeflow.sif", tensorflow="2.21.0", cuda="12.5",
                                  base="tensorflow/tensorflow:2.21.0-gpu", cuda_compat=compat,
                                  native_driver="525.60.13")


@pytest.mark.parametrize("driver", ["525.60.13", "525.85.12", "535.54.03", "580.65.06"])
def test_new_enough_drivers_pass(driver):
    report = gpu_driver.check(driver, _req(), node="gpu01")
    assert report.driver == driver and not report.through_compat
    assert "OK for /scratch/edgeflow.sif" in report.summary()


def test_old_driver_names_the_supported_range_and_the_compat_way():
    with pytest.raises(DriverError) as err:
        gpu_driver.check("470.82.01", _req(), cluster="genius", node="gpu01")
    message = str(err.value)
    assert "NVIDIA driver 470.82.01 on gpu01 cannot run image /scratch/edgeflow.sif (TensorFlow 2.21.0, CUDA 12.5" \
        in message
    assert "Supported: NVIDIA driver 525.60.13 or newer." in message
    # R470 is a branch NVIDIA's forward compatibility supports: say how to use it.
    assert "set image.cuda_compat: true" in message and "make image CLUSTER=genius" in message


@pytest.mark.parametrize("driver", ["525.60.11", "470.42.01", "510.108.03", "418.67"])
def test_drivers_that_neither_way_supports_are_refused(driver):
    with pytest.raises(DriverError) as err:
        gpu_driver.check(driver, _req("470.57.02", compat=True), node="gpu01")
    message = str(err.value)
    assert "Supported: NVIDIA driver 525.60.13 or newer, or 470.x from 470.57.02 on datacenter GPUs" in message
    assert "Ask the cluster's admins for driver 525.60.13 or newer" in message


def test_a_compat_image_runs_on_an_old_datacenter_driver_only():
    report = gpu_driver.check("470.82.01", _req("470.57.02", compat=True), gpus=["Tesla V100-SXM2-32GB"],
                              node="gpu01")
    assert report.through_compat and "through cuda-compat" in report.summary()
    with pytest.raises(DriverError, match=r"GeForce RTX 3090\) are consumer cards: .*datacenter GPUs only"):
        gpu_driver.check("470.82.01", _req("470.57.02", compat=True), gpus=["NVIDIA GeForce RTX 3090"],
                         node="gpu01")
    # On a driver of the line itself the compat libraries stay unused, any GPU is fine.
    report = gpu_driver.check("535.54.03", _req("470.57.02", compat=True), gpus=["NVIDIA GeForce RTX 3090"])
    assert not report.through_compat


# --- the CLI, as the launcher or a user runs it on a node -------------------------------------------


def _cli(tmp_path: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run([PYTHON, "-m", "jobs.gpu_driver", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_passes_and_fails_on_the_node(tmp_path, bin_dir):
    image = tmp_path / "edgeflow.sif"
    image.write_bytes(b"sif")
    profile = _profile(tmp_path, image=image)
    fake_apptainer(bin_dir, LABELS)
    fake_nvidia_smi(bin_dir, "535.54.03\n")
    ok = _cli(tmp_path, bin_dir, "--cluster", str(profile))
    assert ok.returncode == 0, ok.stderr
    assert "NVIDIA driver 535.54.03" in ok.stdout and ">= 525.60.13" in ok.stdout
    fake_nvidia_smi(bin_dir, "470.82.01\n")
    old = _cli(tmp_path, bin_dir, "--cluster", str(profile))
    assert old.returncode == 1
    assert f"cannot run image {image}" in old.stderr and "Supported: NVIDIA driver 525.60.13 or newer" in old.stderr


def test_cli_with_profile_minimum_only(tmp_path, bin_dir):
    profile = _profile(tmp_path, min_driver="550.54.14")
    fake_nvidia_smi(bin_dir, "535.54.03\n")
    proc = _cli(tmp_path, bin_dir, "--cluster", str(profile), "--no-inspect")
    assert proc.returncode == 1
    assert "Supported: NVIDIA driver 550.54.14 or newer" in proc.stderr and "image.min_driver of" in proc.stderr


def test_cli_bad_profile_is_exit_2(tmp_path, bin_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nimage:\n  min_driver: soon\n")
    proc = _cli(tmp_path, bin_dir, "--cluster", str(bad))
    assert proc.returncode == 2
    assert "image.min_driver" in proc.stderr


def test_module_loads_no_tensorflow():
    code = "import sys, jobs.gpu_driver; print('tensorflow' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
