"""Cluster profiles: `configs/clusters/NAME.yaml`, validated as strictly as experiment configs.

Light module: PyYAML, edgeflow.config and jobs.cuda_lines only. Every error names the dotted key
(``slurm.time_min``) and the profile file, so a typo never becomes a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from edgeflow.config import ConfigError, apply_overrides, build_section, check_name, read_mapping, require

from . import cuda_lines

REPO = Path(__file__).resolve().parents[1]
PROFILE_DIR_ENV = "EDGEFLOW_CLUSTERS_DIR"
# configs/clusters/TEMPLATE.yaml: what a new profile is copied from, never a cluster to submit to.
TEMPLATE = "TEMPLATE"
EXECUTORS = ("slurm", "local")
MONITOR_MODES = ("textfile", "pushgateway")
_DRIVER_RE = re.compile(r"^\d+(\.\d+){0,2}$")
_MAJOR_MINOR_RE = re.compile(r"^\d+\.\d+$")
# image.base may bootstrap from an archive saved elsewhere; image.source may name a finished image.
BASE_ARCHIVES = ("docker-archive:", "oci-archive:")
IMAGE_SOURCES = ("docker-archive:", "oci-archive:", "docker://", "oras://", "library://")
# Build arguments of container/edgeflow.def that jobs.image fills from the image section and the lock.
IMAGE_BUILD_ARGS = frozenset({
    "bootstrap", "base", "tensorflow", "cuda", "cudnn", "cuda_line", "min_driver", "native_driver",
    "cuda_compat", "edgeflow_version", "build_date", "cluster",
})


class ProfileError(ConfigError):
    """A cluster profile that cannot be used; the message names the file and the dotted key."""


@dataclass
class SlurmProfile:
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    nodes: int = 1
    # One trainer per task (train.distribute: multi_worker or auto); 1 runs one trainer per node,
    # which drives all the node's GPUs (the usual choice).
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 0.0          # 0: the partition's default
    time_min: int = 60
    # SLURM sends SIGUSR2 this many seconds before the time limit; the trainer needs that long to
    # finish its step and write a checkpoint.
    signal_delay_s: int = 120
    max_requeues: int = 3
    setup: list[str] = field(default_factory=list)
    # Passed through to sbatch as `#SBATCH --KEY=VALUE` (submitit's slurm_additional_parameters).
    additional: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContainerProfile:
    enabled: bool = False
    apptainer: str = "apptainer"
    image: str = ""
    binds: list[str] = field(default_factory=list)
    nv: bool = True
    # The interpreter inside the image that runs `-m edgeflow train`.
    python: str = "python"


@dataclass
class ImageProfile:
    """How `make image` builds the image; the TensorFlow version always comes from constraints.txt.

    Every key is explained in configs/clusters/TEMPLATE.yaml.
    """

    # "": tensorflow/tensorflow:<tensorflow of constraints.txt>-gpu (-gpu dropped when cuda is "");
    # or a pinned docker reference, or docker-archive:PATH / oci-archive:PATH of a base saved elsewhere.
    base: str = ""
    cuda: str = ""            # CUDA major.minor TensorFlow was built with; "" builds a CPU-only image
    cudnn: str = ""           # cuDNN major.minor of that build
    min_driver: str = ""      # "": the minimum of the CUDA line (or of its cuda-compat branches)
    cuda_compat: bool = False  # ship NVIDIA's cuda-compat libraries for older datacenter drivers
    # "": build from container/edgeflow.def; else a finished image to convert or pull instead of
    # building (docker-archive:, oci-archive:, docker://, oras://, library:// or a .sif path).
    source: str = ""
    build_flags: list[str] = field(default_factory=lambda: ["--fakeroot"])
    build_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MonitorProfile:
    sidecar: bool = False
    mode: str = "textfile"
    textfile_dir: str = ""
    pushgateway_url: str = ""


@dataclass
class ClusterProfile:
    name: str = ""
    executor: str = "slurm"
    slurm: SlurmProfile = field(default_factory=SlurmProfile)
    container: ContainerProfile = field(default_factory=ContainerProfile)
    image: ImageProfile = field(default_factory=ImageProfile)
    monitor: MonitorProfile = field(default_factory=MonitorProfile)
    # Where the profile was read from (set by the loader, not a YAML key).
    source: ClassVar[str] = ""

    @property
    def uses_container(self) -> bool:
        # validate() refuses a container for an executor that cannot run one (jobs/backends.py)
        return self.container.enabled

    @property
    def uses_gpus(self) -> bool:
        return self.slurm.gpus_per_node > 0


# Free-form mappings: edgeflow.config's builder types only scalars and lists, so these are taken out
# before it runs and checked here (string keys, scalar values).
_MAPPING_KEYS = (("slurm", "additional"), ("image", "build_args"))


def _take_mappings(raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    taken: dict[tuple[str, str], dict[str, Any]] = {}
    for section, key in _MAPPING_KEYS:
        sub = raw.get(section)
        if not isinstance(sub, dict) or key not in sub:
            continue
        value = sub.pop(key)
        dotted = f"{section}.{key}"
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ProfileError(f"{dotted}: expected a mapping, got {type(value).__name__} {value!r}")
        for k, v in value.items():
            if not isinstance(k, str):
                raise ProfileError(f"{dotted}: keys must be strings, got {k!r}")
            if not isinstance(v, (str, int, float, bool)):
                raise ProfileError(f"{dotted}.{k}: expected a string or number, got {type(v).__name__}")
        taken[(section, key)] = dict(value)
    return taken


def _validate_image(i: ImageProfile) -> None:
    """The image section: formats, then what NVIDIA's driver rules make impossible (jobs.cuda_lines)."""
    require(not i.base.strip() or (i.base == i.base.strip() and " " not in i.base), "image.base",
            f"must be an image reference without spaces, got {i.base!r}")
    require("://" not in i.base or i.base.startswith("docker://"), "image.base",
            f"must be a docker reference or {' / '.join(a + 'PATH' for a in BASE_ARCHIVES)}, got {i.base!r}")
    for key, value in (("image.cuda", i.cuda), ("image.cudnn", i.cudnn)):
        require(not value or bool(_MAJOR_MINOR_RE.match(value)), key,
                f"expected a major.minor version like '12.5' (quote it in YAML) or empty, got {value!r}")
    require(not i.cudnn or bool(i.cuda), "image.cudnn",
            "is set but image.cuda is empty (a CPU image has no cuDNN)")
    require(not i.cuda or bool(i.cudnn), "image.cudnn", f"must be given with image.cuda ({i.cuda})")
    require(not i.min_driver or bool(_DRIVER_RE.match(i.min_driver)), "image.min_driver",
            f"expected a driver version like '535.54.03' or empty, got {i.min_driver!r}")
    line = cuda_lines.line_of(i.cuda)
    if i.cuda:
        known = ", ".join(f"{k} ({'supported' if v.supported else 'not supported by this kit'})"
                          for k, v in cuda_lines.LINES.items())
        require(line is not None and line.supported, "image.cuda",
                f"CUDA {i.cuda} is not a line this kit builds images for; CUDA lines: {known}")
    else:
        require(not i.min_driver, "image.min_driver",
                "is set but image.cuda is empty (a CPU image needs no driver)")
        require(not i.cuda_compat, "image.cuda_compat", "needs image.cuda (a CPU image has no CUDA)")
    if line is not None and i.cuda_compat:
        require(bool(line.compat_branches), "image.cuda_compat",
                f"NVIDIA lists no driver branch below {line.min_driver} for CUDA {line.major} "
                "forward compatibility")
    if line is not None and i.min_driver:
        floor = line.compat_floor if i.cuda_compat else line.min_driver
        how = "with its cuda-compat package" if i.cuda_compat else "(NVIDIA's minimum for the line)"
        hint = "" if i.cuda_compat else (f"; older datacenter drivers from {line.compat_floor}: set "
                                         "image.cuda_compat: true")
        require(cuda_lines.parse_version(i.min_driver) >= cuda_lines.parse_version(floor), "image.min_driver",
                f"{i.min_driver} is below {floor}, the lowest driver that runs CUDA {i.cuda} {how}{hint}")
    require(not i.source or i.source.startswith(IMAGE_SOURCES) or i.source.endswith(".sif"), "image.source",
            "must be empty (build from the definition), a .sif path, or start with "
            f"{', '.join(IMAGE_SOURCES)}; got {i.source!r}")
    for k, flag in enumerate(i.build_flags):
        require(flag.startswith("-"), f"image.build_flags[{k}]",
                f"expected an apptainer build option, got {flag!r}")
    for key in i.build_args:
        require(key not in IMAGE_BUILD_ARGS, f"image.build_args.{key}",
                "is set by the image section or the lock file (one source of versions); "
                "build_args may add only other names")


def validate(p: ClusterProfile) -> ClusterProfile:
    """Reject impossible values; returns the profile so it can be chained."""
    s, c, i, m = p.slurm, p.container, p.image, p.monitor
    check_name(p.name, "name")
    require(p.executor in EXECUTORS, "executor", f"must be one of {', '.join(EXECUTORS)}, got {p.executor!r}")
    require(s.nodes >= 1, "slurm.nodes", f"must be >= 1, got {s.nodes}")
    require(s.tasks_per_node >= 1, "slurm.tasks_per_node", f"must be >= 1, got {s.tasks_per_node}")
    require(not s.gpus_per_node or s.gpus_per_node % s.tasks_per_node == 0, "slurm.gpus_per_node",
            f"{s.gpus_per_node} GPUs cannot be split evenly between {s.tasks_per_node} tasks per node "
            f"(slurm.tasks_per_node)")
    require(s.gpus_per_node >= 0, "slurm.gpus_per_node", f"must be >= 0, got {s.gpus_per_node}")
    require(s.cpus_per_task >= 1, "slurm.cpus_per_task", f"must be >= 1, got {s.cpus_per_task}")
    require(s.mem_gb >= 0, "slurm.mem_gb", f"must be >= 0 (0 = partition default), got {s.mem_gb}")
    require(s.time_min >= 1, "slurm.time_min", f"must be >= 1, got {s.time_min}")
    require(s.signal_delay_s >= 0, "slurm.signal_delay_s", f"must be >= 0, got {s.signal_delay_s}")
    require(s.signal_delay_s < s.time_min * 60, "slurm.signal_delay_s",
             f"{s.signal_delay_s} s is not shorter than slurm.time_min ({s.time_min} min): "
             "the job would be signalled before it starts")
    require(s.max_requeues >= 0, "slurm.max_requeues", f"must be >= 0, got {s.max_requeues}")
    for k, line in enumerate(s.setup):
        require("\n" not in line, f"slurm.setup[{k}]", "one shell line per item, no newlines")
    for key in s.additional:
        require(bool(re.match(r"^[a-z][a-z0-9_-]*$", key)), f"slurm.additional.{key}",
                 "must be an sbatch long option name without dashes, e.g. mail_type")
    if p.executor == "local":
        require(not c.enabled, "container.enabled",
                 "the local executor runs the trainer directly; set executor: slurm to use a container")
    if c.enabled:
        require(bool(c.apptainer), "container.apptainer", "must name the apptainer executable")
        require(bool(c.image), "container.image", "must be the path of the .sif image when container.enabled")
        require(bool(c.python), "container.python", "must name the interpreter inside the image")
    for k, bind in enumerate(c.binds):
        require(bool(bind) and not bind.startswith(":"), f"container.binds[{k}]",
                 f"expected SRC[:DST[:OPTS]], got {bind!r}")
    _validate_image(i)
    require(m.mode in MONITOR_MODES, "monitor.mode",
             f"must be one of {', '.join(MONITOR_MODES)}, got {m.mode!r}")
    if m.sidecar and m.mode == "textfile":
        require(bool(m.textfile_dir), "monitor.textfile_dir",
                 "must name the node_exporter textfile folder when monitor.sidecar is on")
    if m.sidecar and m.mode == "pushgateway":
        require(m.pushgateway_url.startswith(("http://", "https://")), "monitor.pushgateway_url",
                 f"must be an http(s) URL when monitor.sidecar is on, got {m.pushgateway_url!r}")
    return p


def from_dict(raw: Any, *, source: str = "") -> ClusterProfile:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProfileError("profile: top level must be a mapping")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    mappings = _take_mappings(raw)
    try:
        profile = build_section(ClusterProfile, raw, "")
    except ProfileError:
        raise
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None
    for (section, key), value in mappings.items():
        setattr(getattr(profile, section), key, value)
    profile.source = source
    try:
        return validate(profile)
    except ProfileError:
        raise
    except ConfigError as exc:
        raise ProfileError(str(exc)) from None


def profile_dirs() -> list[Path]:
    """Where a profile NAME is looked up: $EDGEFLOW_CLUSTERS_DIR, ./configs/clusters, the repo's."""
    dirs = []
    if os.environ.get(PROFILE_DIR_ENV):
        dirs.append(Path(os.environ[PROFILE_DIR_ENV]))
    dirs += [Path.cwd() / "configs" / "clusters", REPO / "configs" / "clusters"]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def known_profiles() -> list[str]:
    """The profile names --cluster takes (the template is not one)."""
    names = {p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.y*ml")}
    return sorted(n for n in names if n.upper() != TEMPLATE)


def resolve_path(name_or_path: str | Path) -> Path:
    """A profile name (`genius`) or a path to a YAML file; ProfileError listing known names."""
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        if candidate.is_file():
            return candidate
        raise ProfileError(f"cluster profile {text}: no such file")
    if text.upper() == TEMPLATE:
        raise ProfileError(f"cluster profile {text!r} is the template for new cluster profiles, not a cluster: "
                           f"copy configs/clusters/{TEMPLATE}.yaml to configs/clusters/NAME.yaml, fill it in "
                           f"(docs/container.md) and use --cluster NAME; known profiles: "
                           f"{', '.join(known_profiles()) or 'none'}")
    for d in profile_dirs():
        for ext in (".yaml", ".yml"):
            path = d / f"{text}{ext}"
            if path.is_file():
                return path
    raise ProfileError(f"cluster profile {text!r}: not found in {', '.join(str(d) for d in profile_dirs())}; "
                       f"known profiles: {', '.join(known_profiles()) or 'none'}")


def load(name_or_path: str | Path, overrides: list[str] | None = None) -> ClusterProfile:
    """Load, override (``slurm.time_min=5``) and validate a profile; ProfileError names file and key."""
    path = resolve_path(name_or_path)
    raw = read_mapping(path, "cluster profile", ProfileError)
    try:
        apply_overrides(raw, overrides or [])
        return from_dict(raw, source=str(path))
    except ConfigError as exc:
        raise ProfileError(f"cluster profile {path}: {exc}") from None


def to_dict(p: ClusterProfile) -> dict[str, Any]:
    return dataclasses.asdict(p)


def dump(p: ClusterProfile) -> str:
    return yaml.safe_dump(to_dict(p), sort_keys=False)
