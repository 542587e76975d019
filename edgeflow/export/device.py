"""A deployment device: the Arm Ethos-U target Vela compiles for, the input size, and the limits a
subnet must meet to run there (docs/search.md, "Searching for a device").

A device is a small YAML file (`configs/devices/*.yaml`):

    accelerator: ethos-u55-64            # Vela's --accelerator-config
    vela_config: board.ini               # the board's Vela .ini, relative to this file (or Vela's own Arm/vela.ini)
    system_config: My_System             # a [System_Config.My_System] section of it
    memory_mode: My_Memory_Mode          # a [Memory_Mode.My_Memory_Mode] section of it
    arena_cache_kib: 1432                # optional: Vela's --arena-cache-size (overrides the memory mode's)
    optimise: Performance                # optional: Vela's --optimise (Performance or Size)
    input_size: [157, 203]               # height, width of the deployed network's input
    limits: {max_sram_kib: 1432, max_flash_kib: null, min_fps: null, cpu_ops: 0}

Everything is checked when the file is loaded, Vela's .ini included (its syntax, the two sections and,
when Vela is installed, Vela's own reading of them), so a typo costs a second, not a search. Light
module: no TensorFlow; the launcher can load a device on a login node.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.config import SAFE_NAME, ConfigError, build_section, read_mapping, shown
from edgeflow.export import vela as vela_mod

REPO = Path(__file__).resolve().parents[2]
DEVICE_DIRS = ("configs/devices",)
# The network down-samples by 16 (four stride-2 convolutions): a smaller side leaves nothing to convolve.
MIN_SIDE = 16
OPTIMISE = ("Performance", "Size")
LIMIT_NAMES = ("max_sram_kib", "max_flash_kib", "min_fps", "cpu_ops")


class DeviceError(ConfigError):
    """A device file that cannot be used: the message names the file and the key."""


@dataclass
class LimitsSpec:
    max_sram_kib: float | None = None   # SRAM Vela's plan needs (arena and cache), KiB
    max_flash_kib: float | None = None  # flash for the weights and the command stream, KiB
    min_fps: float | None = None        # Vela's estimated inferences per second
    cpu_ops: int | None = None          # operators left to the CPU (0: everything on the NPU)


@dataclass
class DeviceSpec:
    accelerator: str = ""
    vela_config: str = ""
    system_config: str = ""
    memory_mode: str = ""
    input_size: list[int] = field(default_factory=list)
    name: str | None = None
    description: str = ""
    arena_cache_kib: float | None = None
    optimise: str = "Performance"
    limits: LimitsSpec = field(default_factory=LimitsSpec)


@dataclass(frozen=True)
class Violation:
    """One limit an arch breaks: `g` > 0 is pymoo's normalised constraint value."""

    limit: str
    bound: float
    value: float
    g: float

    def text(self) -> str:
        what = {"max_sram_kib": f"needs {self.value:.1f} KiB SRAM",
                "max_flash_kib": f"needs {self.value:.1f} KiB flash",
                "min_fps": f"runs {self.value:.2f} inferences/s",
                "cpu_ops": f"leaves {int(self.value)} operators to the CPU"}.get(self.limit, f"{self.value:g}")
        return f"{self.limit} {self.bound:g}: {what}"


@dataclass(frozen=True)
class Limits:
    max_sram_kib: float | None = None
    max_flash_kib: float | None = None
    min_fps: float | None = None
    cpu_ops: int | None = None

    def active(self) -> list[str]:
        return [name for name in LIMIT_NAMES if getattr(self, name) is not None]

    def constraints(self, figures: dict[str, Any]) -> list[float]:
        """pymoo inequality constraints (<= 0 is met), one per set limit, in LIMIT_NAMES order."""
        return [v.g for v in self._all(figures)]

    def violations(self, figures: dict[str, Any]) -> list[Violation]:
        return [v for v in self._all(figures) if v.g > 0]

    def _all(self, f: dict[str, Any]) -> list[Violation]:
        out = []
        if self.max_sram_kib is not None:
            out.append(Violation("max_sram_kib", self.max_sram_kib, f["vela_sram_kib"],
                                 (f["vela_sram_kib"] - self.max_sram_kib) / self.max_sram_kib))
        if self.max_flash_kib is not None:
            out.append(Violation("max_flash_kib", self.max_flash_kib, f["vela_flash_kib"],
                                 (f["vela_flash_kib"] - self.max_flash_kib) / self.max_flash_kib))
        if self.min_fps is not None:
            out.append(Violation("min_fps", self.min_fps, f["vela_fps"],
                                 (self.min_fps - f["vela_fps"]) / self.min_fps))
        if self.cpu_ops is not None:
            out.append(Violation("cpu_ops", self.cpu_ops, f["vela_cpu_ops"],
                                 (f["vela_cpu_ops"] - self.cpu_ops) / max(self.cpu_ops, 1)))
        return out

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Device:
    name: str
    path: Path
    file_sha256: str
    description: str
    accelerator: str
    vela_config: Path
    vela_config_sha256: str
    system_config: str
    memory_mode: str
    arena_cache_bytes: int | None
    optimise: str
    input_size: tuple[int, int]
    limits: Limits

    def vela_args(self) -> list[str]:
        """Vela's command-line options for this target (the model and --output-dir are the caller's)."""
        args = ["--accelerator-config", self.accelerator, "--config", str(self.vela_config),
                "--system-config", self.system_config, "--memory-mode", self.memory_mode,
                "--optimise", self.optimise]
        if self.arena_cache_bytes is not None:
            args += ["--arena-cache-size", str(self.arena_cache_bytes)]
        return args

    def target(self) -> dict[str, Any]:
        """Everything that decides Vela's figures for a given int8 model (the limits do not)."""
        return {"accelerator": self.accelerator, "vela_config_sha256": self.vela_config_sha256,
                "system_config": self.system_config, "memory_mode": self.memory_mode,
                "arena_cache_bytes": self.arena_cache_bytes, "optimise": self.optimise,
                "input_size": list(self.input_size)}

    @property
    def target_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.target(), sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.path), "file_sha256": self.file_sha256,
                "description": self.description, "vela_config": str(self.vela_config),
                **self.target(), "target_digest": self.target_digest, "limits": self.limits.record()}


def device_dirs() -> list[Path]:
    """Where a device NAME is looked up: ./configs/devices, then the repository's."""
    dirs: list[Path] = []
    for base in (Path.cwd(), REPO):
        for sub in DEVICE_DIRS:
            d = base / sub
            if d.resolve() not in [x.resolve() for x in dirs]:
                dirs.append(d)
    return dirs


def resolve(name_or_path: str | Path) -> Path:
    """A device name (`himax-wiseeye2`) or a path to its YAML file; DeviceError listing known names."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        if Path(text).is_file():
            return Path(text)
        raise DeviceError(f"--device {text}: no such file")
    for d in device_dirs():
        for ext in (".yaml", ".yml"):
            if (d / f"{text}{ext}").is_file():
                return d / f"{text}{ext}"
    known = sorted({p.stem for d in device_dirs() if d.is_dir() for p in d.glob("*.y*ml")})
    raise DeviceError(f"--device {text!r}: not found in {', '.join(str(d) for d in device_dirs())}; "
                      f"known devices: {', '.join(known) or 'none'}")


def _vela_config_path(text: str, folder: Path, where: str) -> Path:
    if not text.endswith(".ini"):
        raise DeviceError(f"{where}vela_config: Vela reads .ini files only, got {shown(text)}")
    local = (folder / text) if not Path(text).is_absolute() else Path(text)
    if local.is_file():
        return local.resolve()
    bundled = vela_mod.bundled_config(text)
    if bundled is not None:
        return bundled
    raise DeviceError(f"{where}vela_config: {text}: no such file (looked beside the device file, {folder}, "
                      f"and among Vela's own configurations)")


def _read_ini(path: Path, where: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceError(f"{where}vela_config {path}: cannot read: {exc}") from None
    except configparser.Error as exc:
        first = " ".join(str(exc).split())
        raise DeviceError(f"{where}vela_config {path}: not a valid .ini file: {first[:300]}") from None
    return parser


def _check_section(parser: configparser.ConfigParser, kind: str, name: str, path: Path, where: str) -> None:
    key = {"System_Config": "system_config", "Memory_Mode": "memory_mode"}[kind]
    if not name:
        raise DeviceError(f"{where}{key}: required (a [{kind}.NAME] section of {path.name})")
    section, seen = f"{kind}.{name}", list[str]()
    while True:
        if not parser.has_section(section):
            known = sorted(s.partition(".")[2] for s in parser.sections() if s.startswith(kind + "."))
            origin = "" if not seen else f" (inherited by [{seen[-1]}])"
            raise DeviceError(f"{where}{key}: {path.name} has no section [{section}]{origin}; its {kind} "
                              f"sections: {', '.join(known) or 'none'}")
        if section in seen:
            raise DeviceError(f"{where}{key}: [{section}] of {path.name} inherits from itself")
        seen.append(section)
        if not parser.has_option(section, "inherit"):
            return
        section = parser.get(section, "inherit")


def _check_with_vela(device: Device, where: str) -> None:
    """Vela's own reading of the .ini (values, ports, memory areas); skipped when Vela is not installed."""
    if not vela_mod.available():
        return
    from ethosu.vela.architecture_features import ArchitectureFeatures

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Vela prints its warnings
            ArchitectureFeatures(vela_config_files=[str(device.vela_config)], accelerator_config=device.accelerator,
                                 system_config=device.system_config, memory_mode=device.memory_mode,
                                 max_blockdep=ArchitectureFeatures.MAX_BLOCKDEP, verbose_config=False,
                                 arena_cache_size=device.arena_cache_bytes)
    except Exception as exc:  # noqa: BLE001 -- Vela raises its own errors, KeyError and ValueError here
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DeviceError(f"{where}Vela cannot use {device.vela_config.name} [{device.system_config} / "
                          f"{device.memory_mode}]: {type(exc).__name__}: {text[:300]}") from None


def check_input_size(height: int, width: int, what: str = "input_size") -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise DeviceError(f"{what} {height}x{width}: the network needs at least {MIN_SIDE}x{MIN_SIDE} "
                          f"(it down-samples by 16)")


def load(name_or_path: str | Path) -> Device:
    """Read and check a device file; DeviceError naming the file and the key of the first problem."""
    path = resolve(name_or_path)
    where = f"device {path}: "
    raw = read_mapping(path, "device", DeviceError)
    try:
        spec = build_section(DeviceSpec, raw, "")
    except ConfigError as exc:
        raise DeviceError(f"{where}{exc}") from None
    if spec.accelerator not in vela_mod.ACCELERATORS:
        raise DeviceError(f"{where}accelerator: must be one of {', '.join(vela_mod.ACCELERATORS)}, "
                          f"got {shown(spec.accelerator)}")
    if not spec.vela_config:
        raise DeviceError(f"{where}vela_config: required (the board's Vela .ini, or Arm/vela.ini for Vela's own)")
    if len(spec.input_size) != 2 or any(v <= 0 for v in spec.input_size):
        raise DeviceError(f"{where}input_size: expected [height, width], got {shown(spec.input_size)}")
    try:
        check_input_size(*spec.input_size)
    except DeviceError as exc:
        raise DeviceError(f"{where}{exc}") from None
    if spec.optimise not in OPTIMISE:
        raise DeviceError(f"{where}optimise: must be one of {', '.join(OPTIMISE)}, got {shown(spec.optimise)}")
    if spec.arena_cache_kib is not None and not spec.arena_cache_kib > 0:
        raise DeviceError(f"{where}arena_cache_kib: must be > 0, got {spec.arena_cache_kib}")
    lim = spec.limits
    for key in ("max_sram_kib", "max_flash_kib", "min_fps"):
        value = getattr(lim, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise DeviceError(f"{where}limits.{key}: must be > 0 (or null for no limit), got {value}")
    if lim.cpu_ops is not None and lim.cpu_ops < 0:
        raise DeviceError(f"{where}limits.cpu_ops: must be >= 0 (or null for no limit), got {lim.cpu_ops}")
    name = spec.name if spec.name is not None else path.stem
    if not SAFE_NAME.match(name):
        raise DeviceError(f"{where}name: letters, digits, '_', '-' and '.' only (it names a folder), "
                          f"got {shown(name)}")
    ini = _vela_config_path(spec.vela_config, path.parent, where)
    parser = _read_ini(ini, where)
    _check_section(parser, "System_Config", spec.system_config, ini, where)
    _check_section(parser, "Memory_Mode", spec.memory_mode, ini, where)
    device = Device(
        name=name, path=path.resolve(), file_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        description=spec.description, accelerator=spec.accelerator, vela_config=ini,
        vela_config_sha256=hashlib.sha256(ini.read_bytes()).hexdigest(), system_config=spec.system_config,
        memory_mode=spec.memory_mode,
        arena_cache_bytes=None if spec.arena_cache_kib is None else int(round(spec.arena_cache_kib * 1024)),
        optimise=spec.optimise, input_size=(int(spec.input_size[0]), int(spec.input_size[1])),
        limits=Limits(lim.max_sram_kib, lim.max_flash_kib, lim.min_fps, lim.cpu_ops))
    _check_with_vela(device, where)
    return device

