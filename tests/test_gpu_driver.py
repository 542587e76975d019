"""jobs/gpu_driver.py: the node's NVIDIA driver against the image's minimum.

No GPU here: a stand-in `nvidia-smi` shell script put first on PATH answers the exact query the
module makes (and fails on any other), and a stand-in `apptainer` prints `inspect --json` output
in Apptainer's layout. Everything else (subprocesses, profile loading, the CLI) is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import gpu_driver
from jobs.gpu_driver import DriverError
from jobs.profile import load as load_profile

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


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


def _profile(tmp_path: Path, *, min_driver: str = "", image: Path | None = None) -> Path:
    data = yaml.safe_load((REPO / "configs" / "clusters" / "genius.yaml").read_text())
    data["container"]["image"] = str(image or tmp_path / "edgeflow.sif")
    data["image"]["min_driver"] = min_driver
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
    profile = load_profile(_profile(tmp_path, min_driver="470.57"))
    req = gpu_driver.requirement(profile, LABELS)
    assert req.min_driver == "525.60.13" and "label edgeflow.min_driver" in req.source
    assert (req.tensorflow, req.cuda) == ("2.21.0", "12.5")
    assert gpu_driver.requirement(profile, None).min_driver == "470.57"


def test_no_known_minimum_and_a_bad_label_are_errors(tmp_path):
    profile = load_profile(_profile(tmp_path, min_driver=""))
    with pytest.raises(DriverError, match="no minimum driver known"):
        gpu_driver.requirement(profile, {})
    with pytest.raises(DriverError, match="is not a driver version; rebuild it"):
        gpu_driver.requirement(profile, {"edgeflow.min_driver": "{{ min_driver }}"})


# --- the comparison and its message --------------------------------------------------------------


def _req(min_driver: str = "525.60.13") -> gpu_driver.Requirement:
    return gpu_driver.Requirement(min_driver=min_driver, source="label edgeflow.min_driver of the image",
                                  image="/scratch/edgeflow.sif", tensorflow="2.21.0", cuda="12.5",
                                  base="tensorflow/tensorflow:2.21.0-gpu")


@pytest.mark.parametrize("driver", ["525.60.13", "525.85.12", "535.54.03", "580.65.06"])
def test_new_enough_drivers_pass(driver):
    report = gpu_driver.check(driver, _req(), node="gpu01")
    assert report.driver == driver
    assert "OK for /scratch/edgeflow.sif" in report.summary()


def test_old_driver_names_the_image_to_rebuild_and_its_cuda_line():
    with pytest.raises(DriverError) as err:
        gpu_driver.check("470.82.01", _req(), cluster="genius", node="gpu01")
    message = str(err.value)
    assert "NVIDIA driver 470.82.01 on gpu01 is older than 525.60.13" in message
    assert "/scratch/edgeflow.sif (TensorFlow 2.21.0, CUDA 12.5" in message
    assert "supports the CUDA 11 line at most" in message
    assert "tensorflow/tensorflow:2.14.0-gpu" in message
    assert "make image CLUSTER=genius" in message


def test_just_below_the_minimum_fails():
    with pytest.raises(DriverError, match="older than 525.60.13"):
        gpu_driver.check("525.60.11", _req(), node="gpu01")


def test_a_driver_older_than_every_cuda_line_says_so():
    with pytest.raises(DriverError, match="older than every CUDA line"):
        gpu_driver.check("418.67", _req(), node="gpu01")


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
    assert f"older than 525.60.13, the minimum of image {image}" in old.stderr


def test_cli_with_profile_minimum_only(tmp_path, bin_dir):
    profile = _profile(tmp_path, min_driver="550.54.14")
    fake_nvidia_smi(bin_dir, "535.54.03\n")
    proc = _cli(tmp_path, bin_dir, "--cluster", str(profile), "--no-inspect")
    assert proc.returncode == 1
    assert "older than 550.54.14" in proc.stderr and "image.min_driver of" in proc.stderr


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
