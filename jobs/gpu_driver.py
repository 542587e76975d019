"""Fail early when a GPU node's NVIDIA driver cannot run the image (light: no TensorFlow).

The node's driver comes from `nvidia-smi --query-gpu=driver_version --format=csv,noheader`; what the
image needs from its labels (`apptainer inspect --json --labels IMAGE`, written by
container/edgeflow.def from the cluster profile) and from the profile's image section. NVIDIA's
rules (jobs/cuda_lines.py): a driver at or above the CUDA line's minimum runs the image; an older
driver of a branch that NVIDIA's forward-compatibility package supports runs it only when the image
ships that package (image.cuda_compat) and the GPUs are datacenter GPUs, never GeForce/TITAN cards.
The profile's image.min_driver may raise the minimum (the higher of label and profile counts).

CLI: `python -m jobs.gpu_driver --cluster NAME [--image PATH] [--no-inspect]`; exit 0 when the driver
can run the image, 1 when it cannot (or cannot be read), 2 for a bad profile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from . import cuda_lines
from .profile import ClusterProfile, ProfileError
from .profile import load as load_profile

NVIDIA_SMI_ARGS = ("--query-gpu=driver_version", "--format=csv,noheader")
NVIDIA_SMI_NAMES = ("--query-gpu=name", "--format=csv,noheader")
LABEL_MIN_DRIVER = "edgeflow.min_driver"


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
    cuda_compat: bool = False   # the image ships NVIDIA's cuda-compat libraries
    native_driver: str = ""     # the CUDA line's own minimum (no cuda-compat needed from here up)

    @property
    def line(self) -> cuda_lines.CudaLine | None:
        return cuda_lines.line_of(self.cuda)

    @property
    def native_floor(self) -> str:
        """From here up the image runs without cuda-compat."""
        if self.cuda_compat and self.native_driver:
            return self.native_driver
        candidates = [v for v in (self.min_driver, self.native_driver) if v]
        return max(candidates, key=parse_driver_version)

    def supported(self) -> str:
        """The driver ranges this image runs on, for messages."""
        text = f"NVIDIA driver {self.native_floor} or newer"
        line = self.line
        if self.cuda_compat and line is not None:
            ranges = [f"{b}.x from {max(f, self.min_driver, key=parse_driver_version)}"
                      for b, f in line.compat_branches]
            text += f", or {' / '.join(ranges)} on datacenter GPUs through cuda-compat"
        return text


@dataclass(frozen=True)
class DriverReport:
    driver: str
    requirement: Requirement
    node: str
    through_compat: bool = False

    def summary(self) -> str:
        r = self.requirement
        how = (f"through cuda-compat (driver below {r.native_floor}, datacenter GPUs)" if self.through_compat
               else f">= {r.native_floor} ({r.source})")
        return f"NVIDIA driver {self.driver} on {self.node} {how}: OK for {r.image or 'the image'}"


def parse_driver_version(text: str) -> tuple[int, ...]:
    """'535.54.03' -> (535, 54, 3); ValueError for anything that is not a dotted number."""
    return cuda_lines.parse_version(text)


def _nvidia_smi(nvidia_smi: str, args: Sequence[str], timeout: float) -> tuple[str, list[str]]:
    """Run one nvidia-smi query; (executable, non-empty output lines); DriverError when it fails."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        raise DriverError(f"{nvidia_smi} not found on PATH: this node has no NVIDIA driver installed "
                          "(or is not a GPU node); run GPU jobs on a GPU partition")
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DriverError(f"{exe} did not answer within {timeout:.0f} s: the driver may be hung") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[0]
        raise DriverError(f"{exe} {' '.join(args)} failed (exit {proc.returncode}): {detail}")
    return exe, [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]


def node_gpu_names(nvidia_smi: str = "nvidia-smi", timeout: float = 60.0) -> list[str]:
    """The product names of the node's GPUs ('Tesla V100-SXM2-32GB', 'NVIDIA GeForce RTX 3090')."""
    return _nvidia_smi(nvidia_smi, NVIDIA_SMI_NAMES, timeout)[1]


def node_driver_version(nvidia_smi: str = "nvidia-smi", timeout: float = 60.0) -> str:
    """The node's driver version (the lowest one if GPUs disagree); DriverError when unreadable."""
    exe, lines = _nvidia_smi(nvidia_smi, NVIDIA_SMI_ARGS, timeout)
    if not lines:
        raise DriverError(f"{exe} printed no driver version: this node has no visible GPU")
    try:
        versions = sorted(lines, key=parse_driver_version)
    except ValueError:
        raise DriverError(f"{exe} printed {' '.join(lines)!r}, expected one driver version per GPU "
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


def _label(labels: dict[str, str], key: str) -> str:
    """A label's value; "none" (what a CPU image records for CUDA and drivers) counts as unset."""
    value = labels.get(key, "").strip()
    return "" if value == "none" else value


def requirement(profile: ClusterProfile, labels: dict[str, str] | None) -> Requirement:
    """What the image needs: its labels (when inspected) and the profile's image section."""
    image, i = profile.container.image, profile.image
    labels = labels or {}
    where = profile.source or profile.name
    candidates: list[tuple[str, str]] = []
    for key in (LABEL_MIN_DRIVER, "edgeflow.native_driver"):
        value = _label(labels, key)
        try:
            if value:
                parse_driver_version(value)
        except ValueError:
            raise DriverError(f"image {image}: label {key}={value!r} is not a driver version; rebuild it "
                              "with `make image`") from None
    label_min = _label(labels, LABEL_MIN_DRIVER)
    if label_min:
        candidates.append((label_min, f"label {LABEL_MIN_DRIVER} of the image"))
    if i.min_driver:
        candidates.append((i.min_driver, f"image.min_driver of {where}"))
    cuda = _label(labels, "edgeflow.cuda") if labels else i.cuda
    line = cuda_lines.line_of(cuda)
    compat = _label(labels, "edgeflow.cuda_compat") == "1" if labels else i.cuda_compat
    if not candidates and line is not None:
        floor = line.compat_floor if compat else line.min_driver
        how = " with cuda-compat" if compat else ""
        candidates.append((floor, f"NVIDIA's minimum for CUDA {line.major}{how}"))
    if not candidates:
        raise DriverError(f"no minimum driver known for {image or 'the image'}: it has no {LABEL_MIN_DRIVER} "
                          f"label (or it was not inspected) and image.min_driver and image.cuda are empty in "
                          f"{where}")
    min_driver, source = max(candidates, key=lambda c: parse_driver_version(c[0]))
    native = _label(labels, "edgeflow.native_driver") or (line.min_driver if line else "")
    return Requirement(min_driver=min_driver, source=source, image=image,
                       tensorflow=_label(labels, "edgeflow.tensorflow"), cuda=cuda,
                       base=_label(labels, "edgeflow.base_image") or i.base,
                       cuda_compat=compat, native_driver=native)


def check(driver: str, req: Requirement, *, gpus: Sequence[str] = (), cluster: str = "",
          node: str = "") -> DriverReport:
    """Compare; DriverError naming the supported driver range and what to do when it cannot run.

    `gpus` (product names) matter only for the cuda-compat path, which NVIDIA supports on
    datacenter GPUs only.
    """
    node = node or socket.gethostname()
    version = parse_driver_version(driver)
    if version >= parse_driver_version(req.native_floor):
        return DriverReport(driver=driver, requirement=req, node=node)
    line = req.line
    branch_floor = cuda_lines.compat_branch_floor(line, driver) if line is not None else None
    cluster_arg = cluster or "NAME"
    built = ", ".join(x for x in (f"TensorFlow {req.tensorflow}" if req.tensorflow else "",
                                  f"CUDA {req.cuda}" if req.cuda else "", req.base) if x)
    head = (f"NVIDIA driver {driver} on {node} cannot run image {req.image or '(unnamed)'} ({built}; minimum "
            f"{req.min_driver} from {req.source}). Supported: {req.supported()}.")
    if req.cuda_compat and branch_floor is not None and version >= parse_driver_version(
            max(branch_floor, req.min_driver, key=parse_driver_version)):
        consumer = [g for g in gpus if cuda_lines.is_consumer_gpu(g)]
        if consumer:
            raise DriverError(f"{head} This node's GPUs ({', '.join(sorted(set(consumer)))}) are consumer "
                              "cards: NVIDIA's forward compatibility (cuda-compat) works on datacenter GPUs only. "
                              f"Run on nodes with datacenter GPUs or a driver >= {req.native_floor} "
                              "(slurm.constraint).")
        return DriverReport(driver=driver, requirement=req, node=node, through_compat=True)
    if branch_floor is not None and not req.cuda_compat and version >= parse_driver_version(branch_floor):
        fix = (f"Driver branch {version[0]} is one NVIDIA's forward compatibility supports for CUDA "
               f"{line.major if line else ''}: on datacenter GPUs set image.cuda_compat: true in the profile and "
               f"rebuild with `make image CLUSTER={cluster_arg}`; or run on nodes with driver >= {req.native_floor} "
               "(slurm.constraint).")
    else:
        fix = (f"Ask the cluster's admins for driver {req.native_floor} or newer on the GPU nodes, or run on "
               "nodes that have it (slurm.constraint). docs/container.md lists what each driver range can run.")
    raise DriverError(f"{head} {fix}")


def check_node(profile: ClusterProfile, *, nvidia_smi: str = "nvidia-smi", inspect: bool = True) -> DriverReport:
    """The launcher's check on a GPU node before starting the container; DriverError when it must not run."""
    labels = image_labels(profile.container.image, profile.container.apptainer) if inspect else None
    req = requirement(profile, labels)
    driver = node_driver_version(nvidia_smi)
    gpus = node_gpu_names(nvidia_smi) if req.cuda_compat else []
    return check(driver, req, gpus=gpus, cluster=profile.name)


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
