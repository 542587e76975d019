"""Build and check the Apptainer image with a cluster profile's settings (behind build.sh / check.sh).

    python container/image.py build CLUSTER [--dry-run]   # make image CLUSTER=...
    python container/image.py check CLUSTER               # make image-check CLUSTER=...
    python container/image.py gpu-smoke CLUSTER           # the GPU part of check, on a GPU node

The profile (configs/clusters/CLUSTER.yaml, read by jobs.profile) gives the base image, the minimum
driver, extra build args and flags (image.*), the apptainer executable and the image path
(container.*). Exit codes: 0 done, 1 the build or a check failed, 2 bad profile or definition,
127 apptainer is not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script: the repository's packages import even when edgeflow is not pip-installed.
sys.path.insert(1, str(REPO))

import deffile  # noqa: E402  (container/, this script's folder)

import edgeflow  # noqa: E402
from jobs import gpu_driver  # noqa: E402
from jobs.profile import ClusterProfile, ProfileError  # noqa: E402
from jobs.profile import load as load_profile  # noqa: E402

DEFINITION = REPO / "container" / "edgeflow.def"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_APPTAINER = 0, 1, 2, 127
MIN_APPTAINER = (1, 2)  # --build-arg and {{ var }} templating
SMOKE_IN_IMAGE = "/opt/edgeflow/smoke_test.py"
GPU_SMOKE_MINUTES = 20
TF_IMAGES = ("tensorflow/tensorflow", "docker.io/tensorflow/tensorflow", "index.docker.io/tensorflow/tensorflow")


class ImageError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildPlan:
    apptainer: str
    definition: Path
    output: Path
    build_args: dict[str, str]
    flags: list[str]

    @property
    def staging(self) -> Path:
        # Built beside the target and renamed at the end: jobs still reading the old image keep it,
        # and a failed build leaves it untouched.
        return self.output.with_name(f".{self.output.name}.building")

    def command(self) -> list[str]:
        args = [a for k, v in self.build_args.items() for a in ("--build-arg", f"{k}={v}")]
        return [self.apptainer, "build", *self.flags, *args, str(self.staging), str(self.definition)]


def image_path(profile: ClusterProfile) -> Path:
    """The profile's container.image; a profile without one builds into build/edgeflow-NAME.sif."""
    if profile.container.image:
        return Path(os.path.expanduser(os.path.expandvars(profile.container.image)))
    return REPO / "build" / f"edgeflow-{profile.name}.sif"


def plan_build(profile: ClusterProfile, *, build_date: str | None = None) -> BuildPlan:
    """Everything `apptainer build` gets, checked against the definition before anything runs."""
    ref = deffile.parse_image_ref(profile.image.base)
    if not ref.pinned:
        raise ImageError(f"{profile.source}: image.base {profile.image.base!r} is not pinned: give an exact "
                         "version tag such as tensorflow/tensorflow:2.21.0-gpu (not latest) or a digest",
                         EXIT_BAD_INPUT)
    pinned_tf = deffile.read_constraints(REPO / "constraints.txt").get("tensorflow", "")
    if ref.name in TF_IMAGES and ref.tag and ref.tag.split("-")[0] != pinned_tf:
        # %post would refuse it after the download; say so before.
        raise ImageError(f"{profile.source}: image.base {profile.image.base!r} ships TensorFlow "
                         f"{ref.tag.split('-')[0]}, constraints.txt pins tensorflow=={pinned_tf}: use "
                         f"tensorflow/tensorflow:{pinned_tf}-gpu", EXIT_BAD_INPUT)
    build_args = {
        "base": profile.image.base,
        "edgeflow_version": edgeflow.__version__,
        "build_date": build_date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if profile.image.min_driver:
        build_args["min_driver"] = profile.image.min_driver
    build_args.update({k: str(v) for k, v in profile.image.build_args.items()})
    try:
        deffile.load(DEFINITION, build_args)
    except deffile.DefFileError as exc:
        raise ImageError(f"{exc} (image.build_args of {profile.source})", EXIT_BAD_INPUT) from None
    return BuildPlan(apptainer=profile.container.apptainer or "apptainer", definition=DEFINITION,
                     output=image_path(profile), build_args=build_args, flags=list(profile.image.build_flags))


def require_apptainer(command: str) -> str:
    """The apptainer executable, at least MIN_APPTAINER; ImageError with what to do otherwise."""
    exe = shutil.which(command)
    if exe is None:
        raise ImageError(
            f"{command} is not installed (not found on PATH), so no image can be built or checked here.\n"
            f"Install Apptainer >= {'.'.join(map(str, MIN_APPTAINER))} (https://apptainer.org/docs/admin/main/"
            "installation.html), `module load apptainer` on a cluster, or run this on a node that has it; "
            "container.apptainer in the cluster profile names the command.", EXIT_NO_APPTAINER)
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip()
    match = re.search(r"apptainer version (\d+)\.(\d+)", text)
    if proc.returncode != 0 or match is None:
        raise ImageError(f"{exe} --version printed {text!r}: edgeflow.def needs Apptainer >= "
                         f"{'.'.join(map(str, MIN_APPTAINER))} for --build-arg templating")
    if (int(match.group(1)), int(match.group(2))) < MIN_APPTAINER:
        raise ImageError(f"{text}: edgeflow.def needs Apptainer >= {'.'.join(map(str, MIN_APPTAINER))} "
                         "for --build-arg templating")
    return exe


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, **kwargs)


def build(profile: ClusterProfile, *, dry_run: bool = False) -> int:
    plan = plan_build(profile)
    if dry_run:
        print(shlex.join(plan.command()))
        print(f"then rename {plan.staging} -> {plan.output}")
        return EXIT_OK
    plan.apptainer = require_apptainer(plan.apptainer)
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    plan.staging.unlink(missing_ok=True)
    print(f"building {plan.output} for cluster {profile.name} from {profile.image.base} "
          f"(cache: {os.environ.get('APPTAINER_CACHEDIR', '~/.apptainer/cache')})", flush=True)
    # %files sources are relative to the working directory of the build.
    proc = run(plan.command(), cwd=REPO)
    if proc.returncode != 0 or not plan.staging.is_file():
        plan.staging.unlink(missing_ok=True)
        print(f"image build FAILED (exit {proc.returncode}); {plan.output} is unchanged", file=sys.stderr)
        return EXIT_FAILED
    os.replace(plan.staging, plan.output)
    checksum = sha256(plan.output)
    plan.output.with_name(plan.output.name + ".sha256").write_text(f"{checksum}  {plan.output.name}\n")
    labels = gpu_driver.image_labels(str(plan.output), plan.apptainer)
    print(f"\nimage: {plan.output} ({plan.output.stat().st_size / 2**20:.0f} MiB)")
    print("labels:")
    for key in sorted(labels):
        print(f"  {key}: {labels[key]}")
    print(f"sha256: {checksum} (also in {plan.output.name}.sha256)")
    print(f"next: make image-check CLUSTER={profile.name}")
    return EXIT_OK


def gpu_smoke(profile: ClusterProfile, apptainer: str) -> int:
    """On a GPU node: the driver check, then one training step of an arch on the GPU in the image."""
    image = str(image_path(profile))
    try:
        report = gpu_driver.check(gpu_driver.node_driver_version(),
                                  gpu_driver.requirement(profile, gpu_driver.image_labels(image, apptainer)),
                                  cluster=profile.name)
    except gpu_driver.DriverError as exc:
        print(f"GPU smoke FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary(), flush=True)
    proc = run([apptainer, "exec", "--nv", image, "python3", SMOKE_IN_IMAGE, "--require-gpu"])
    return EXIT_OK if proc.returncode == 0 else EXIT_FAILED


def srun_command(profile: ClusterProfile) -> list[str]:
    """Run this script's gpu-smoke on one GPU of the profile's partition."""
    s = profile.slurm
    cmd = ["srun", "--job-name=edgeflow-image-check", "--nodes=1", "--ntasks=1", "--gres=gpu:1",
           f"--cpus-per-task={s.cpus_per_task}", f"--time={GPU_SMOKE_MINUTES}"]
    for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                        ("constraint", s.constraint)):
        if value:
            cmd.append(f"--{flag}={value}")
    return cmd + [sys.executable, str(Path(__file__).resolve()), "gpu-smoke", profile.source or profile.name]


def check(profile: ClusterProfile) -> int:
    apptainer = require_apptainer(profile.container.apptainer or "apptainer")
    image = image_path(profile)
    if not image.is_file():
        raise ImageError(f"image {image} does not exist: build it with `make image CLUSTER={profile.name}`")
    sums = image.with_name(image.name + ".sha256")
    if sums.is_file():
        recorded = sums.read_text().split()[0]
        actual = sha256(image)
        if recorded != actual:
            raise ImageError(f"{image}: sha256 {actual} differs from {sums} ({recorded}): the image changed "
                             "since it was built; rebuild it")
        print(f"sha256 matches {sums.name}: {actual}")
    nv = ["--nv"] if profile.container.nv else []
    if run([apptainer, "test", *nv, str(image)]).returncode != 0:
        print(f"apptainer test FAILED for {image}", file=sys.stderr)
        return EXIT_FAILED
    if not (profile.container.nv and profile.uses_gpus):
        print(f"profile {profile.name} runs without GPUs (slurm.gpus_per_node=0 or container.nv=false): "
              "no GPU smoke job")
        return EXIT_OK
    if shutil.which("nvidia-smi"):
        code = gpu_smoke(profile, apptainer)
    elif shutil.which("srun"):
        print("no GPU on this node: running the GPU smoke job through SLURM", flush=True)
        code = EXIT_OK if run(srun_command(profile), cwd=REPO).returncode == 0 else EXIT_FAILED
    else:
        raise ImageError("no nvidia-smi and no srun here: run `make image-check` on a GPU node or a SLURM "
                         "login node")
    print(f"image check {'passed' if code == EXIT_OK else 'FAILED'}: {image}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="container/image.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "check", "gpu-smoke", "plan"))
    parser.add_argument("cluster", help="cluster profile name (configs/clusters/NAME.yaml) or path")
    parser.add_argument("--dry-run", action="store_true", help="build: print the command only")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.cluster)
        if args.action == "plan":
            plan = plan_build(profile)
            print(json.dumps({"command": plan.command(), "output": str(plan.output),
                              "build_args": plan.build_args}, indent=2))
            return EXIT_OK
        if args.action == "build":
            return build(profile, dry_run=args.dry_run)
        if args.action == "check":
            return check(profile)
        return gpu_smoke(profile, require_apptainer(profile.container.apptainer or "apptainer"))
    except ProfileError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ImageError, gpu_driver.DriverError) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, ImageError) else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
