"""Sweeps: several configs, seeds and/or grid values in one call become the elements of one job array.

Each element gets its own experiment name and therefore its own run directory: `<name>_s<seed>` when
seeds are swept, `<name>_lr3e-4_bs16` for the grid point train.lr=3e-4, train.batch_size=16 (grid
first, then the seed). Two elements that would share a run directory are refused.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from edgeflow import config as efconfig
from edgeflow.config import SAFE_NAME, Config, ConfigError

# Keys a grid may not sweep: the names come from the grid, and seeds from --seeds.
_NAMING_KEYS = ("runtime.experiment_name",)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Element:
    source: str            # the config file the user named
    overrides: tuple[str, ...]
    seed: int | None       # None: the config's own seed
    cfg: Config            # loaded, overridden, named, paths absolute, validated
    own: tuple[str, ...] = ()  # what this element alone sets (its grid point and seed)

    @property
    def experiment(self) -> str:
        return self.cfg.runtime.experiment_name

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


@dataclass(frozen=True)
class GridAxis:
    key: str
    values: tuple[str, ...]   # as typed; parsed like --set values
    label: str = ""           # what the element name shows before each value


def element_name(base: str, seed: int | None) -> str:
    return base if seed is None else f"{base}_s{seed}"


def absolutize(cfg: Config, base: Path) -> Config:
    """Make the folders absolute so the node (other cwd, or inside the image) finds the same ones."""
    def fix(path: str) -> str:
        return str((base / path).resolve()) if path else path

    cfg.runtime.output_root = fix(cfg.runtime.output_root)
    d = cfg.data
    d.train_dir, d.val_dir, d.root = fix(d.train_dir), fix(d.val_dir), fix(d.root)
    d.exclude_list, d.packed_dir = fix(d.exclude_list), fix(d.packed_dir)
    for split in cfg.eval.splits.values():
        split.root = fix(split.root)
    cfg.checkpoint.init_from = fix(cfg.checkpoint.init_from)
    return efconfig.validate(cfg)


def _label(key: str) -> str:
    """A short name for a key in element names: `lr` for train.lr, `bs` for train.batch_size."""
    last = key.rsplit(".", 1)[-1]
    words = [w for w in last.split("_") if w]
    return "".join(w[0] for w in words) if len(words) > 1 else last


def parse_grid(items: list[str], config: str, overrides: list[str], seeds: list[int] | None) -> list[GridAxis]:
    """`KEY=V1,V2,...` per --grid, each value checked like --set against `config` (ConfigError names the key)."""
    axes: list[GridAxis] = []
    set_keys = {o.partition("=")[0].strip() for o in overrides}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = tuple(v.strip() for v in text.split(","))
        if not sep or not key or not text.strip() or any(not v for v in values):
            raise ConfigError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,... (no empty values)")
        if key in (a.key for a in axes):
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if key in set_keys:
            raise ConfigError(f"--grid {key}: also given with --set; give it in one place")
        if key in _NAMING_KEYS or (seeds and key == "runtime.seed"):
            raise ConfigError(f"--grid {key}: cannot be swept here (element names come from the grid, seeds "
                              f"from --seeds)")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"--grid {key}: value {repeated[0]!r} is listed twice")
        for value in values:
            efconfig.load(config, [*overrides, f"{key}={value}"])  # a typo in the key or value stops here
        axes.append(GridAxis(key, values))
    labels = [_label(a.key) for a in axes]
    for k, axis in enumerate(axes):
        label = labels[k]
        if labels.count(label) > 1:  # two keys with one short name: the last part, or the whole key
            last = [a.key.rsplit(".", 1)[-1] for a in axes]
            label = last[k] if last.count(last[k]) == 1 else axis.key.replace(".", "-")
        axes[k] = GridAxis(axis.key, axis.values, label)
    return axes


def _points(axes: list[GridAxis]) -> list[tuple[tuple[str, ...], str]]:
    """Every grid point: its overrides and its name suffix (one empty point without a grid)."""
    points = []
    for combo in itertools.product(*(a.values for a in axes)):
        sets = tuple(f"{a.key}={v}" for a, v in zip(axes, combo, strict=True))
        suffix = "".join(f"_{a.label}{_UNSAFE.sub('-', v)}" for a, v in zip(axes, combo, strict=True))
        points.append((sets, suffix))
    return points


def expand(configs: list[str], seeds: list[int] | None, overrides: list[str],
           base: Path | None = None, grid: list[str] | None = None) -> list[Element]:
    """One element per (config, grid point, seed); ConfigError for bad configs, grids or collisions."""
    base = Path.cwd() if base is None else base
    if not configs:
        raise ConfigError("--config: at least one config file is needed")
    axes = parse_grid(grid or [], configs[0], overrides, seeds)
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice: {seeds}")
    elements: list[Element] = []
    for source in configs:
        plain = efconfig.load(source, overrides)
        for point, suffix in _points(axes):
            for seed in (seeds if seeds else [None]):
                own = list(point)
                if seed is not None:
                    own.append(f"runtime.seed={seed}")
                if suffix or seed is not None:
                    name = element_name(plain.runtime.experiment_name + suffix, seed)
                    if not SAFE_NAME.match(name):
                        raise ConfigError(f"--grid: the element {' '.join(own)} would be named {name!r}, which is "
                                          "not a usable name (at most 128 letters, digits, '_', '-' or '.'); "
                                          "use a shorter runtime.experiment_name or fewer grid keys")
                    own_name = [f"runtime.experiment_name={name}"]
                else:
                    own_name = []
                extra = [*overrides, *own, *own_name]
                cfg = absolutize(efconfig.load(source, extra), base)
                elements.append(Element(source, tuple(extra), seed, cfg, tuple(own)))
    seen: dict[Path, Element] = {}
    for el in elements:
        if el.run_dir in seen:
            other = seen[el.run_dir]
            if other.source == el.source:
                raise ConfigError(f"--grid: the elements {' '.join(other.own)} and {' '.join(el.own)} would both be "
                                  f"named {el.experiment} (write the values differently)")
            raise ConfigError(
                f"runtime.experiment_name: {other.source} and {el.source} would both write to "
                f"{el.run_dir}; give each config its own experiment_name (or sweep --seeds)")
        seen[el.run_dir] = el
    return elements
