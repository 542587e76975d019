"""Sweeps: several configs and/or seeds in one call become the elements of one SLURM job array.

Each element gets its own experiment name (`<name>_s<seed>` when seeds are swept) and therefore its
own run directory; two elements that would share a run directory are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeflow import config as efconfig
from edgeflow.config import Config, ConfigError


@dataclass(frozen=True)
class Element:
    source: str            # the config file the user named
    overrides: tuple[str, ...]
    seed: int | None       # None: the config's own seed
    cfg: Config            # loaded, overridden, named, paths absolute, validated

    @property
    def experiment(self) -> str:
        return self.cfg.runtime.experiment_name

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def element_name(base: str, seed: int | None) -> str:
    return base if seed is None else f"{base}_s{seed}"


def absolutize(cfg: Config, base: Path) -> Config:
    """Make the folders absolute so the node (other cwd, or inside the image) finds the same ones."""
    def fix(path: str) -> str:
        return str((base / path).resolve()) if path else path

    cfg.runtime.output_root = fix(cfg.runtime.output_root)
    cfg.data.train_dir = fix(cfg.data.train_dir)
    cfg.data.val_dir = fix(cfg.data.val_dir)
    return efconfig.validate(cfg)


def expand(configs: list[str], seeds: list[int] | None, overrides: list[str],
           base: Path | None = None) -> list[Element]:
    """One element per (config, seed); ConfigError for bad configs or run-directory collisions."""
    base = Path.cwd() if base is None else base
    if not configs:
        raise ConfigError("--config: at least one config file is needed")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: a seed is listed twice: {seeds}")
    elements: list[Element] = []
    for source in configs:
        plain = efconfig.load(source, overrides)
        for seed in (seeds if seeds else [None]):
            extra = list(overrides)
            if seed is not None:
                name = element_name(plain.runtime.experiment_name, seed)
                extra += [f"runtime.seed={seed}", f"runtime.experiment_name={name}"]
            cfg = absolutize(efconfig.load(source, extra), base)
            elements.append(Element(source, tuple(extra), seed, cfg))
    seen: dict[Path, str] = {}
    for el in elements:
        if el.run_dir in seen:
            raise ConfigError(
                f"runtime.experiment_name: {seen[el.run_dir]} and {el.source} would both write to "
                f"{el.run_dir}; give each config its own experiment_name (or sweep --seeds)")
        seen[el.run_dir] = el.source
    return elements
