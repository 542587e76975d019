"""Build and check the Apptainer image of a cluster profile (`make image`, `make image-check`).

    python -m jobs.image build --cluster NAME [--source URI] [--dry-run]
    python -m jobs.image check --cluster NAME [--srun] [--config CFG]
    python -m jobs.image plan  --cluster NAME        # the build as JSON, nothing runs

The versions have one source each: TensorFlow from constraints.txt, everything else from the
profile's image section (jobs/profile.py; every key is explained in configs/clusters/TEMPLATE.yaml).
They reach container/edgeflow.def as build arguments, and the finished image's labels must equal
them. A build goes to a hidden file beside the target, is tested (`apptainer test`), gets its
sha256 written, and only then replaces the target, so a failed build leaves the old image in use.

Exit codes: 0 done, 1 the build or a check failed, 2 bad profile or definition, 127 no apptainer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata as md
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgeflow
from edgeflow import config as efconfig
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, atomic_write_text

from . import cuda_lines, deffile, gpu_driver
from .profile import BASE_ARCHIVES, IMAGE_SOURCES, ClusterProfile, ProfileError
from .profile import load as load_profile

REPO = Path(__file__).resolve().parents[1]
DEFINITION = REPO / "container" / "edgeflow.def"
LOCK = REPO / "constraints.txt"
CHECK_CONFIG = REPO / "configs" / "supernet_fc2_180x240.yaml"
EXIT_NO_APPTAINER = 127
MIN_APPTAINER = (1, 2)  # --build-arg and {{ var }} templating
SMOKE_IN_IMAGE = "/opt/edgeflow/smoke_test.py"
GPU_CHECK_MINUTES = 20
TIMED_STEPS = 20
TF_IMAGES = ("tensorflow/tensorflow", "docker.io/tensorflow/tensorflow",
             "index.docker.io/tensorflow/tensorflow")
# Labels a prebuilt image (image.source) must carry with exactly the profile's and lock's values.
VERSION_LABELS = ("tensorflow", "cuda", "cuda_line", "cudnn", "cuda_compat", "native_driver")


class ImageError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BuildPlan:
    cluster: str
    profile_source: str
    apptainer: str
    output: Path
    build_args: dict[str, str]
    flags: list[str]
    binds: list[str]
    source: str = ""                  # "": build from the definition
    extra_args: dict[str, str] = field(default_factory=dict)

    @property
    def staging(self) -> Path:
        # Beside the target (same filesystem, so the rename is atomic) and hidden.
        return self.output.with_name(f".{self.output.name}.building")

    @property
    def checksum_file(self) -> Path:
        return self.output.with_name(self.output.name + ".sha256")

    def command(self) -> list[str]:
        if self.source:
            # Converting or pulling a finished image runs no %post: no root, no fakeroot needed.
            return [self.apptainer, "build", str(self.staging), self.source]
        args = {**self.build_args, **self.extra_args}
        pairs = [a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")]
        # %test runs once, on the finished file, for every kind of source (below).
        flags = [f for f in self.flags if f != "--notest"] + ["--notest"]
        return [self.apptainer, "build", *flags, *pairs, str(self.staging), str(DEFINITION)]

    def expected_labels(self) -> dict[str, str]:
        a = self.build_args
        labels = {f"edgeflow.{k}": a[k] for k in (*VERSION_LABELS, "min_driver", "cluster")}
        labels.update({"edgeflow.version": a["edgeflow_version"], "edgeflow.base_image": a["base"]})
        return labels

    def describe(self) -> str:
        a = self.build_args
        gpu = a["cuda"] != "none"
        if self.source:
            what = f"convert/pull the finished image {self.source} (no %post; its labels are checked)"
        else:
            what = f"build {DEFINITION.relative_to(REPO)} on base {a['base']} (bootstrap {a['bootstrap']})"
        if gpu:
            driver = f">= {a['native_driver']} (CUDA {a['cuda_line']} line)"
            if a["cuda_compat"] == "1":
                driver += f"; from {a['min_driver']} on datacenter GPUs through cuda-compat"
            elif a["min_driver"] != a["native_driver"]:
                driver = f">= {a['min_driver']} (image.min_driver)"
            versions = f"TensorFlow {a['tensorflow']} (constraints.txt), CUDA {a['cuda']}, cuDNN {a['cudnn']}"
        else:
            driver = "none (CPU-only image)"
            versions = f"TensorFlow {a['tensorflow']} (constraints.txt), no CUDA"
        binds = ", ".join(self.binds) or "(none; the launcher adds the data and output folders)"
        lines = [
            f"image for cluster {self.cluster} ({self.profile_source})",
            f"  what:          {what}",
            f"  versions:      {versions}",
            f"  target driver: {driver}",
            f"  edgeflow:      {a['edgeflow_version']}, build date {a['build_date']}",
            f"  binds at run:  {binds}",
            f"  output:        {self.output} (built as {self.staging.name}, then renamed)",
            f"  command:       {shlex.join(self.command())}",
        ]
        if self.extra_args:
            lines.insert(4, f"  extra args:    {', '.join(f'{k}={v}' for k, v in self.extra_args.items())}")
        return "\n".join(lines)


def image_path(profile: ClusterProfile) -> Path:
    """The profile's container.image; a profile without one builds into build/edgeflow-NAME.sif."""
    if profile.container.image:
        return Path(os.path.expanduser(os.path.expandvars(profile.container.image)))
    return REPO / "build" / f"edgeflow-{profile.name}.sif"


def locked_tensorflow(lock: Path = LOCK) -> str:
    try:
        version = deffile.read_constraints(lock).get("tensorflow", "")
    except (OSError, deffile.DefFileError) as exc:
        raise ImageError(f"{lock}: {exc}", EXIT_BAD_INPUT) from None
    if not version:
        raise ImageError(f"{lock} pins no tensorflow==X: the image's TensorFlow comes from it",
                         EXIT_BAD_INPUT)
    return version


def wheel_cuda(tensorflow: str) -> tuple[str, str] | None:
    """(CUDA, cuDNN) major.minor of the installed TensorFlow wheel's and-cuda extra, read from its
    metadata (no import); None when the venv has no TensorFlow at the locked version."""
    try:
        if md.version("tensorflow") != tensorflow:
            return None
        requires = md.requires("tensorflow") or []
    except md.PackageNotFoundError:
        return None
    found: dict[str, str] = {}
    for text in requires:
        match = re.match(r"^(nvidia-cuda-runtime|nvidia-cudnn)-cu\d+\b[^;]*>=\s*(\d+\.\d+)", text)
        if match and "and-cuda" in text:
            found[match.group(1)] = match.group(2)
    if len(found) != 2:
        return None
    return found["nvidia-cuda-runtime"], found["nvidia-cudnn"]


def _base(profile: ClusterProfile, tensorflow: str) -> tuple[str, str]:
    """(bootstrap, From) of the definition; ImageError naming image.base when it cannot be right."""
    i, where = profile.image, profile.source or profile.name
    base = i.base or f"tensorflow/tensorflow:{tensorflow}{'-gpu' if i.cuda else ''}"
    for prefix in BASE_ARCHIVES:
        if base.startswith(prefix):
            path = Path(os.path.expanduser(base[len(prefix):]))
            if not path.is_file():
                raise ImageError(f"{where}: image.base {base!r}: no such archive {path}", EXIT_BAD_INPUT)
            return prefix.rstrip(":"), str(path.resolve())
    ref = deffile.parse_image_ref(base)
    if not ref.pinned:
        raise ImageError(f"{where}: image.base {base!r} is not pinned: give an exact version tag such as "
                         f"tensorflow/tensorflow:{tensorflow}-gpu (not latest) or a digest", EXIT_BAD_INPUT)
    if ref.name in TF_IMAGES and ref.tag:
        release, _, variant = ref.tag.partition("-")
        if release != tensorflow:
            # %post would refuse it after the download; say so before.
            raise ImageError(f"{where}: image.base {base!r} ships TensorFlow {release}, constraints.txt pins "
                             f"tensorflow=={tensorflow}: use tensorflow/tensorflow:{tensorflow}"
                             f"{'-gpu' if i.cuda else ''} (or leave image.base empty)", EXIT_BAD_INPUT)
        if bool(i.cuda) != (variant == "gpu"):
            kind = "GPU" if variant == "gpu" else "CPU"
            raise ImageError(f"{where}: image.base {base!r} is a {kind} image but image.cuda is "
                             f"{i.cuda or 'empty'}: set both for a GPU image, neither for a CPU one",
                             EXIT_BAD_INPUT)
    return "docker", base.removeprefix("docker://")


def plan_build(profile: ClusterProfile, *, source: str | None = None, build_date: str | None = None,
               lock: Path = LOCK) -> BuildPlan:
    """Everything `apptainer build` gets, checked against the lock and the definition before anything runs."""
    i, where = profile.image, profile.source or profile.name
    tensorflow = locked_tensorflow(lock)
    bootstrap, base = _base(profile, tensorflow)
    line = cuda_lines.line_of(i.cuda)
    default_min = "none"
    if line is not None:
        wheel = wheel_cuda(tensorflow)
        if wheel is not None and wheel != (i.cuda, i.cudnn):
            raise ImageError(f"{where}: image.cuda {i.cuda} / image.cudnn {i.cudnn} disagree with TensorFlow "
                             f"{tensorflow}'s own CUDA libraries (its and-cuda extra asks for CUDA "
                             f"{wheel[0]}, cuDNN {wheel[1]}): set image.cuda: \"{wheel[0]}\" and "
                             f"image.cudnn: \"{wheel[1]}\"", EXIT_BAD_INPUT)
        default_min = line.compat_floor if i.cuda_compat else line.min_driver
    build_args = {
        "bootstrap": bootstrap,
        "base": base,
        "tensorflow": tensorflow,
        "cuda": i.cuda or "none",
        "cudnn": i.cudnn or "none",
        "cuda_line": line.major if line else "none",
        "min_driver": (i.min_driver or default_min) if line else "none",
        "native_driver": line.min_driver if line else "none",
        "cuda_compat": "1" if i.cuda_compat else "0",
        "edgeflow_version": edgeflow.__version__,
        "build_date": build_date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cluster": profile.name,
    }
    extra = {k: str(v) for k, v in i.build_args.items()}
    source = i.source if source is None else source
    if source:
        if not (source.startswith(IMAGE_SOURCES) or source.endswith(".sif")):
            raise ImageError(f"--source {source!r}: expected a .sif path or {', '.join(IMAGE_SOURCES)}URI",
                             EXIT_BAD_INPUT)
        local = source.split(":", 1)[1] if source.startswith(BASE_ARCHIVES) else source
        if "://" not in source and not Path(os.path.expanduser(local)).is_file():
            raise ImageError(f"{where}: image source {source!r}: no such file {local}", EXIT_BAD_INPUT)
    else:
        try:
            deffile.load(DEFINITION, {**build_args, **extra})
        except deffile.DefFileError as exc:
            raise ImageError(f"{exc} (image.build_args of {where})", EXIT_BAD_INPUT) from None
    return BuildPlan(cluster=profile.name, profile_source=where,
                     apptainer=profile.container.apptainer or "apptainer", output=image_path(profile),
                     build_args=build_args, flags=list(i.build_flags),
                     binds=list(profile.container.binds), source=source, extra_args=extra)


def require_apptainer(command: str) -> str:
    """The apptainer executable, at least MIN_APPTAINER; ImageError with what to do otherwise."""
    want = ".".join(map(str, MIN_APPTAINER))
    exe = shutil.which(command)
    if exe is None:
        raise ImageError(
            f"{command} is not installed (not found on PATH), so no image can be built or checked here.\n"
            f"Install Apptainer >= {want} (https://apptainer.org/docs/admin/main/installation.html), "
            "`module load apptainer` on a cluster, or run this on a node that has it; container.apptainer in "
            "the cluster profile names the command. docs/container.md lists ways to get an image without "
            "building on this machine (image.source).", EXIT_NO_APPTAINER)
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    text = (proc.stdout + proc.stderr).strip()
    match = re.search(r"apptainer version (\d+)\.(\d+)", text)
    if proc.returncode != 0 or match is None or (int(match.group(1)), int(match.group(2))) < MIN_APPTAINER:
        raise ImageError(f"{exe} --version printed {text!r}: edgeflow.def needs Apptainer >= {want} "
                         "for --build-arg templating")
    return exe


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd, **kwargs)


def label_problems(plan: BuildPlan, labels: dict[str, str]) -> list[str]:
    """Where the image's labels disagree with the plan; a converted image is held to the versions only."""
    expected = plan.expected_labels()
    keys = [f"edgeflow.{k}" for k in VERSION_LABELS] + ["edgeflow.version"] if plan.source else list(expected)
    problems = [f"{k}={labels.get(k, '(missing)')!r}, expected {expected[k]!r}"
                for k in keys if labels.get(k) != expected[k]]
    if plan.source and plan.build_args["min_driver"] != "none":
        # A converted image may need less than the cluster offers, never more.
        have, limit = labels.get("edgeflow.min_driver", ""), plan.build_args["min_driver"]
        try:
            if gpu_driver.parse_driver_version(have) > gpu_driver.parse_driver_version(limit):
                problems.append(f"edgeflow.min_driver={have!r} is above the cluster's {limit}")
        except ValueError:
            problems.append(f"edgeflow.min_driver={have!r} is not a driver version")
    return problems


def build(profile: ClusterProfile, *, source: str | None = None, dry_run: bool = False) -> int:
    plan = plan_build(profile, source=source)
    print(plan.describe(), flush=True)
    if dry_run:
        return EXIT_OK
    plan.apptainer = require_apptainer(plan.apptainer)
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    plan.staging.unlink(missing_ok=True)
    print(f"apptainer cache: {os.environ.get('APPTAINER_CACHEDIR', '~/.apptainer/cache')}; build room: "
          f"{os.environ.get('APPTAINER_TMPDIR', os.environ.get('TMPDIR', '/tmp'))}", flush=True)
    try:
        # %files sources are relative to the working directory of the build.
        proc = run(plan.command(), cwd=REPO)
        if proc.returncode != 0 or not plan.staging.is_file():
            raise ImageError(f"image build FAILED (apptainer exit {proc.returncode}); "
                             f"{plan.output} is unchanged")
        labels = gpu_driver.image_labels(str(plan.staging), plan.apptainer)
        problems = label_problems(plan, labels)
        if problems:
            raise ImageError(f"the built image's labels disagree with {plan.profile_source} and "
                             f"constraints.txt: {'; '.join(problems)}; {plan.output} is unchanged")
        if run([plan.apptainer, "test", str(plan.staging)], cwd=REPO).returncode != 0:
            raise ImageError(f"apptainer test (the image's %test) FAILED; {plan.output} is unchanged")
        checksum = sha256(plan.staging)
        atomic_write_text(plan.checksum_file, f"{checksum}  {plan.output.name}\n")
        os.replace(plan.staging, plan.output)
    finally:
        plan.staging.unlink(missing_ok=True)
    print(f"\nimage: {plan.output} ({plan.output.stat().st_size / 2**20:.0f} MiB)")
    print("labels:")
    for key in sorted(labels):
        print(f"  {key}: {labels[key]}")
    print(f"sha256: {checksum} (also in {plan.checksum_file.name})")
    print(f"next, on a GPU node: make image-check CLUSTER={profile.name}")
    return EXIT_OK


def _step_shape(config: Path) -> list[str]:
    """Smoke-test options for one training step at the config's crop and (micro-)batch."""
    try:
        cfg = efconfig.load(config)
    except efconfig.ConfigError as exc:
        raise ImageError(str(exc), EXIT_BAD_INPUT) from None
    batch = cfg.train.micro_batch_size or cfg.train.batch_size
    # The trainer's whole step (3 archs, Adam) in the config's precision and XLA setting.
    return [f"--height={cfg.data.input_height}", f"--width={cfg.data.input_width}", f"--batch={batch}",
            f"--steps={TIMED_STEPS}", "--full-step", f"--precision={str(cfg.train.mixed_precision).lower()}",
            *(["--jit"] if cfg.train.jit_compile else [])]


def driver_check(profile: ClusterProfile, apptainer: str, image: Path) -> None:
    """On a GPU node: can this driver (and these GPUs) run the image? DriverError naming the range if not."""
    req = gpu_driver.requirement(profile, gpu_driver.image_labels(str(image), apptainer))
    driver = gpu_driver.node_driver_version()
    gpus = gpu_driver.node_gpu_names()
    print(f"node GPUs: {len(gpus)} x {', '.join(sorted(set(gpus)))}; driver {driver}", flush=True)
    print(gpu_driver.check(driver, req, gpus=gpus, cluster=profile.name).summary(), flush=True)


def srun_command(profile: ClusterProfile, config: Path) -> list[str]:
    """This check's GPU part on one GPU of the profile's partition."""
    s = profile.slurm
    cmd = ["srun", "--job-name=edgeflow-image-check", "--nodes=1", "--ntasks=1", "--gres=gpu:1",
           f"--cpus-per-task={s.cpus_per_task}", f"--time={GPU_CHECK_MINUTES}"]
    for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                        ("constraint", s.constraint)):
        if value:
            cmd.append(f"--{flag}={value}")
    return cmd + [sys.executable, "-m", "jobs.image", "check", "--cluster", profile.source or profile.name,
                  "--config", str(config)]


def check(profile: ClusterProfile, *, use_srun: bool = False, config: Path = CHECK_CONFIG) -> int:
    image = image_path(profile)
    if not image.is_file():
        raise ImageError(f"image {image} does not exist: build it with `make image CLUSTER={profile.name}`")
    gpu_profile = profile.container.nv and profile.uses_gpus
    if gpu_profile and use_srun:
        if shutil.which("srun") is None:
            raise ImageError("--srun: srun not found on PATH: run this on a login node of the cluster")
        print("sending the image check to one GPU of the cluster through srun", flush=True)
        return EXIT_OK if run(srun_command(profile, config), cwd=REPO).returncode == 0 else EXIT_FAILED
    if gpu_profile and shutil.which("nvidia-smi") is None:
        raise ImageError(
            f"no NVIDIA GPU on {os.uname().nodename} (nvidia-smi not found): `make image-check` checks the "
            f"driver, TensorFlow's GPUs and a training step, so it must run on a GPU node of {profile.name}: "
            f"`srun --gres=gpu:1 -p {profile.slurm.partition or 'PARTITION'} --pty make image-check "
            f"CLUSTER={profile.name}`, or `python -m jobs.image check --cluster {profile.name} --srun` "
            "from here")
    apptainer = require_apptainer(profile.container.apptainer or "apptainer")
    sums = image.with_name(image.name + ".sha256")
    if sums.is_file():
        recorded, actual = sums.read_text().split()[0], sha256(image)
        if recorded != actual:
            raise ImageError(f"{image}: sha256 {actual} differs from {sums} ({recorded}): the image changed "
                             "since it was built; rebuild it")
        print(f"sha256 matches {sums.name}: {actual}")
    else:
        print(f"no {sums.name} beside the image: its content is not verified")
    if gpu_profile:
        # The driver first: an image the driver cannot run fails deep inside TensorFlow otherwise.
        driver_check(profile, apptainer, image)
    nv = ["--nv"] if gpu_profile else []
    code = EXIT_OK if run([apptainer, "test", *nv, str(image)]).returncode == 0 else EXIT_FAILED
    if not gpu_profile:
        print(f"profile {profile.name} runs without GPUs (slurm.gpus_per_node=0 or container.nv=false): "
              "no GPU check")
    elif code == EXIT_OK:
        # TensorFlow must see the GPUs; then one training step at the config's shape, timed.
        cmd = [apptainer, "exec", "--nv", str(image), "python3", SMOKE_IN_IMAGE, "--require-gpu",
               *_step_shape(config)]
        code = EXIT_OK if run(cmd).returncode == 0 else EXIT_FAILED
    print(f"image check {'passed' if code == EXIT_OK else 'FAILED'}: {image}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.image", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "check", "plan"),
                        help="build: make the image; check: test it (on a GPU node for GPU profiles); "
                             "plan: print the build as JSON")
    parser.add_argument("--cluster", required=True,
                        help="cluster profile name (configs/clusters/NAME.yaml) or path")
    parser.add_argument("--source", default=None,
                        help="build/plan: convert or pull this finished image instead of building the "
                             "definition (docker-archive:PATH, oci-archive:PATH, docker://, oras://, "
                             "library:// or a .sif); default: the profile's image.source")
    parser.add_argument("--dry-run", action="store_true",
                        help="build: print what would be built, run nothing")
    parser.add_argument("--srun", action="store_true",
                        help="check: run the GPU check through srun on one GPU of the profile's partition")
    parser.add_argument("--config", type=Path, default=CHECK_CONFIG,
                        help="check: experiment config whose crop and batch the timed training step uses")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.cluster)
        if args.action == "plan":
            plan = plan_build(profile, source=args.source)
            print(json.dumps({"command": plan.command(), "output": str(plan.output), "source": plan.source,
                              "build_args": plan.build_args, "labels": plan.expected_labels()}, indent=2))
            return EXIT_OK
        if args.action == "build":
            return build(profile, source=args.source, dry_run=args.dry_run)
        return check(profile, use_srun=args.srun, config=args.config)
    except ProfileError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except deffile.DefFileError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return exc.code
    except gpu_driver.DriverError as exc:
        print(f"image check FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
