"""Fail early when a GPU node's NVIDIA driver is too old for the image (light: no TensorFlow).

The node's driver comes from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`; the
image's minimum from its `edgeflow.min_driver` label (`apptainer inspect --json --labels IMAGE`,
written by container/edgeflow.def) and the cluster profile's `image.min_driver`. When both are
known the higher one counts: the profile may know a stricter need of its cluster.

CLI: `python -m jobs.gpu_driver --cluster NAME [--image PATH] [--no-inspect]`; exit 0 when the driver
is new enough, 1 when it is not (or cannot be read), 2 for a bad profile.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from jobs.profile import ClusterProfile, ProfileError
from jobs.profile import load as load_profile

NVIDIA_SMI_ARGS = ("--query-gpu=driver_version", "--format=csv,noheader")
LABEL_MIN_DRIVER = "edgeflow.min_driver"

# CUDA line -> (minimum Linux driver for any toolkit of that line through minor-version
# compatibility, per NVIDIA's CUDA Toolkit release notes; the newest TensorFlow GPU image on it).
CUDA_LINES: dict[str, tuple[str, str]] = {
    "12": ("525.60.13", "tensorflow/tensorflow:2.21.0-gpu (CUDA 12.5)"),
    "11": ("450.80.02", "tensorflow/tensorflow:2.14.0-gpu (CUDA 11.8)"),
}
_VERSION_RE = re.compile(r"^\d+(\.\d+){0,3}$")


class DriverError(RuntimeError):
    """The node's driver cannot run the image, or cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Requirement:
    min_driver: str
    source: str       # where min_driver came from, for the message
    image: str
    tensorflow: str   # from the image's labels when known
    cuda: str
    base: str


@dataclass(frozen=True)
class DriverReport:
    driver: str
    requirement: Requirement
    node: str

    def summary(self) -> str:
        r = self.requirement
        return (f"NVIDIA driver {self.driver} on {self.node} >= {r.min_driver} ({r.source}): "
                f"OK for {r.image or 'the image'}")


def parse_driver_version(text: str) -> tuple[int, ...]:
    """'535.54.03' -> (535, 54, 3); ValueError for anything that is not a dotted number."""
    text = text.strip()
    if not _VERSION_RE.match(text):
        raise ValueError(f"not a driver version: {text!r}")
    return tuple(int(p) for p in text.split("."))


def node_driver_version(nvidia_smi: str = "nvidia-smi", timeout: float = 60.0) -> str:
    """The node's driver version (the lowest one if GPUs disagree); DriverError when unreadable."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        raise DriverError(f"{nvidia_smi} not found on PATH: this node has no NVIDIA driver installed "
                          "(or is not a GPU node); run GPU jobs on a GPU partition")
    try:
        proc = subprocess.run([exe, *NVIDIA_SMI_ARGS], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DriverError(f"{exe} did not answer within {timeout:.0f} s: the driver may be hung") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[0]
        raise DriverError(f"{exe} {' '.join(NVIDIA_SMI_ARGS)} failed (exit {proc.returncode}): {detail}")
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise DriverError(f"{exe} printed no driver version: this node has no visible GPU")
    try:
        versions = sorted(lines, key=parse_driver_version)
    except ValueError:
        raise DriverError(f"{exe} printed {proc.stdout.strip()!r}, expected one driver version per GPU "
                          "like 535.54.03") from None
    return versions[0]


def image_labels(image: str, apptainer: str = "apptainer", timeout: float = 300.0) -> dict[str, str]:
    """Labels of a SIF image from `apptainer inspect --json --labels`; DriverError when unreadable."""
    if not Path(image).is_file():
        raise DriverError(f"image {image} does not exist: build it with `make image CLUSTER=...`")
    exe = shutil.which(apptainer)
    if exe is None:
        raise DriverError(f"{apptainer} not found on PATH: cannot read the labels of {image}")
    try:
        proc = subprocess.run([exe, "inspect", "--json", "--labels", image],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DriverError(f"{apptainer} inspect {image} did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise DriverError(f"{apptainer} inspect {image} failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip() or proc.stdout.strip()}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise DriverError(f"{apptainer} inspect --json {image} printed no JSON: {proc.stdout[:200]!r}") from None
    labels = data.get("data", {}).get("attributes", {}).get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict):
        raise DriverError(f"{apptainer} inspect --json {image}: no data.attributes.labels in its output")
    return {str(k): str(v) for k, v in labels.items()}


def requirement(profile: ClusterProfile, labels: dict[str, str] | None) -> Requirement:
    """The driver the image needs: its label and the profile's image.min_driver, the higher of both."""
    image = profile.container.image
    labels = labels or {}
    candidates: list[tuple[str, str]] = []
    label_value = labels.get(LABEL_MIN_DRIVER, "").strip()
    if label_value:
        try:
            parse_driver_version(label_value)
        except ValueError:
            raise DriverError(f"image {image}: label {LABEL_MIN_DRIVER}={label_value!r} is not a driver "
                              "version; rebuild it with `make image`") from None
        candidates.append((label_value, f"label {LABEL_MIN_DRIVER} of the image"))
    if profile.image.min_driver:
        candidates.append((profile.image.min_driver, f"image.min_driver of {profile.source or profile.name}"))
    if not candidates:
        raise DriverError(f"no minimum driver known for {image or 'the image'}: it has no {LABEL_MIN_DRIVER} "
                          f"label (or it was not inspected) and image.min_driver is empty in "
                          f"{profile.source or profile.name}")
    min_driver, source = max(candidates, key=lambda c: parse_driver_version(c[0]))
    return Requirement(min_driver=min_driver, source=source, image=image,
                       tensorflow=labels.get("edgeflow.tensorflow", ""),
                       cuda=labels.get("edgeflow.cuda", ""),
                       base=labels.get("edgeflow.base_image", profile.image.base))


def newest_cuda_line(driver: str) -> str | None:
    """The newest CUDA line of CUDA_LINES whose minimum driver `driver` meets."""
    version = parse_driver_version(driver)
    fitting = [line for line, (floor, _) in CUDA_LINES.items() if version >= parse_driver_version(floor)]
    return max(fitting, key=int) if fitting else None


def check(driver: str, req: Requirement, *, cluster: str = "", node: str = "") -> DriverReport:
    """Compare; DriverError saying which image to rebuild, for which CUDA line, when too old."""
    node = node or socket.gethostname()
    if parse_driver_version(driver) >= parse_driver_version(req.min_driver):
        return DriverReport(driver=driver, requirement=req, node=node)
    built = ", ".join(x for x in (f"TensorFlow {req.tensorflow}" if req.tensorflow else "",
                                  f"CUDA {req.cuda}" if req.cuda else "", req.base) if x)
    line = newest_cuda_line(driver)
    cluster_arg = cluster or "NAME"
    if line is None:
        fix = (f"This driver is older than every CUDA line TensorFlow 2 GPU images use "
               f"({', '.join(f'CUDA {k}: >= {v[0]}' for k, v in CUDA_LINES.items())}): ask the cluster's "
               "admins for nodes with a newer driver (slurm.constraint) instead.")
    else:
        base = CUDA_LINES[line][1]
        fix = (f"The driver supports the CUDA {line} line at most. Rebuild the image for this cluster: set "
               f"image.base to a TensorFlow GPU image of the CUDA {line} line, e.g. {base} (an older "
               f"TensorFlow also needs its own constraints.txt lock), then `make image CLUSTER={cluster_arg}`; "
               f"or run on nodes with driver >= {req.min_driver} (slurm.constraint).")
    raise DriverError(f"NVIDIA driver {driver} on {node} is older than {req.min_driver}, the minimum of image "
                      f"{req.image or '(unnamed)'} ({built}; from {req.source}). {fix}")


def check_node(profile: ClusterProfile, *, nvidia_smi: str = "nvidia-smi", inspect: bool = True) -> DriverReport:
    """The launcher's check on a GPU node before starting the container; DriverError when it must not run."""
    labels = image_labels(profile.container.image, profile.container.apptainer) if inspect else None
    req = requirement(profile, labels)
    return check(node_driver_version(nvidia_smi), req, cluster=profile.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.gpu_driver",
                                     description="Check this node's NVIDIA driver against the image.")
    parser.add_argument("--cluster", required=True, help="cluster profile name or YAML path")
    parser.add_argument("--image", default="", help="image to check (default: the profile's container.image)")
    parser.add_argument("--no-inspect", action="store_true",
                        help="do not read the image's labels; use the profile's image.min_driver only")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi executable")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.cluster)
    except ProfileError as exc:
        print(f"gpu_driver: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.image:
        profile.container.image = args.image
    try:
        report = check_node(profile, nvidia_smi=args.nvidia_smi, inspect=not args.no_inspect)
    except DriverError as exc:
        print(f"gpu_driver: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary())
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
