"""The one place a run's network (a supernet, or a stand-alone net) is built, and restored from a run's
checkpoint, outside training.

Light at import (TensorFlow loads in `build_model`), so a command can check its inputs -- the run
directory, its config, the checkpoint pointer, the data -- and fail with a one-line error before
paying for TensorFlow. Used by `eval`, `rank`, `search`, `export`; the trainer builds its own model
through `build_model` too, so both share the compute dtype rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeflow import config as config_mod
from edgeflow.config import Config, ConfigError
from edgeflow.data.samples import EvalSplit, Splits
from edgeflow.data.splits import resolve_splits
from edgeflow.rundir import RunPaths
from edgeflow.train.checkpoint import KEPT, CheckpointError, CheckpointStore, Pointer, is_kind

if TYPE_CHECKING:
    from edgeflow.model.fixed import FixedArchNet
    from edgeflow.model.supernet import Supernet


def build_supernet(cfg: Config) -> Supernet:
    """A fresh supernet in the config's compute dtype (mixed precision keeps float32 variables)."""
    from edgeflow.model.supernet import Supernet, compute_dtype_for

    return Supernet(seed=cfg.runtime.seed, compute_dtype=compute_dtype_for(cfg.train.mixed_precision))


def build_model(cfg: Config) -> Supernet | FixedArchNet:
    """The run's network: the supernet, or with train.arch that arch's stand-alone net (same seed rule,
    same compute dtype rule)."""
    if not cfg.train.arch:
        return build_supernet(cfg)
    from edgeflow.model.fixed import FixedArchNet
    from edgeflow.model.supernet import compute_dtype_for
    from edgeflow.space.arch import parse_arch

    return FixedArchNet(parse_arch(cfg.train.arch), seed=cfg.runtime.seed,
                        compute_dtype=compute_dtype_for(cfg.train.mixed_precision))


def require_supernet(cfg: Config, what: str) -> None:
    """ConfigError when the run is a stand-alone net's (train.arch): `what` works on a supernet only."""
    if cfg.train.arch:
        raise ConfigError(f"the run is a stand-alone net of arch {cfg.train.arch} (train.arch): {what} needs a "
                          f"supernet run")


def check_standalone_archs(cfg: Config, codes: list[str]) -> None:
    """ConfigError unless every code is the stand-alone run's own arch (a supernet run takes any)."""
    other = [c for c in codes if cfg.train.arch and c != cfg.train.arch]
    if other:
        raise ConfigError(f"arch {other[0]}: the run is a stand-alone net of arch {cfg.train.arch} "
                          f"(train.arch); only that arch can be evaluated or exported from it")


def restore_weights(model: Any, prefix: str | Path) -> None:
    """The model's weights and BN statistics from a checkpoint; optimizer slots are left unread."""
    import tensorflow as tf

    tf.train.Checkpoint(model=model).read(str(prefix)).expect_partial()


def warm_start(model: Any, prefix: str | Path, *, standalone: bool) -> None:
    """A new experiment's weights (and BN statistics) from another run's checkpoint, optimizer left out.

    A stand-alone net's checkpoint keys are the supernet's for its arch's layers, so from a supernet
    (or an imported) checkpoint it reads exactly those; every one of its variables must be there."""
    import tensorflow as tf

    status = tf.train.Checkpoint(model=model).read(str(prefix)).expect_partial()
    if standalone:
        status.assert_existing_objects_matched()


@dataclass
class RunHandle:
    cfg: Config
    paths: RunPaths
    pointer: Pointer
    checkpoint: str
    _splits: Splits | None = field(default=None, repr=False)

    @property
    def splits(self) -> Splits:
        """The run's data splits, scanned on first use (broken samples excluded and named)."""
        if self._splits is None:
            self._splits = resolve_splits(self.cfg, stage=True)
        return self._splits

    def eval_split(self, name: str | None = None) -> EvalSplit:
        """The evaluation split `name` (--split; default: the one the run selects on, eval.select_on)."""
        check_split_name(self.cfg, name)
        return self.splits.eval_split(name)

    @property
    def epoch(self) -> int | None:
        value = self.pointer.state.get("epoch")
        return int(value) if value is not None else None

    @property
    def bn_calibrated(self) -> bool:
        """False for an imported checkpoint: its depth-branch BN moving statistics belong to no arch."""
        return bool(self.pointer.state.get("bn_calibrated", True))

    @property
    def uncalibrated_bn(self) -> list[str]:
        """The moving-statistic variables marked not calibrated (empty for a trained checkpoint)."""
        return [str(name) for name in self.pointer.state.get("uncalibrated_bn") or []]

    def build_model(self) -> Supernet | FixedArchNet:
        """The run's network (a supernet, or its stand-alone net) with the checkpoint's weights."""
        model = build_model(self.cfg)
        restore_weights(model, self.pointer.prefix)
        return model


def split_names(cfg: Config) -> list[str]:
    """The evaluation splits of a config: its own ("val", when it has one) and those of eval.splits."""
    return ([config_mod.BUILTIN_SPLIT] if config_mod.has_builtin_split(cfg) else []) + list(cfg.eval.splits)


def check_split_name(cfg: Config, name: str | None) -> None:
    """ConfigError unless `name` (None: the default) is an evaluation split of the config."""
    if name is not None and name not in split_names(cfg):
        raise ConfigError(f"--split {name}: not an evaluation split of the run's config (its splits: "
                          f"{', '.join(split_names(cfg))}; add one under eval.splits, e.g. with --set "
                          f"eval.splits.{name}.dataset=sintel --set eval.splits.{name}.root=DIR)")


def open_run(run_dir: str | Path, checkpoint: str = "best", overrides: list[str] | None = None) -> RunHandle:
    """A run directory's config and checkpoint pointer, checked; ConfigError or CheckpointError when
    the folder is not a run or has no such checkpoint. Nothing is written."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise ConfigError(f"{paths.root} is not a run directory: {paths.config} does not exist")
    cfg = config_mod.load(paths.config, list(overrides or []))
    if not is_kind(checkpoint):
        raise ConfigError(f"--checkpoint must be 'best', 'latest' or a kept 'epoch-N' (checkpoint.keep_every), "
                          f"got {checkpoint!r}")
    pointer = CheckpointStore(paths.checkpoints).pointer(checkpoint) if paths.checkpoints.is_dir() else None
    if pointer is None:
        kept = CheckpointStore(paths.checkpoints).kept() if paths.checkpoints.is_dir() else []
        hint = f" (kept: {', '.join(kept)})" if kept and KEPT.match(checkpoint) else ""
        raise CheckpointError(f"{paths.checkpoints} has no '{checkpoint}' checkpoint{hint}")
    return RunHandle(cfg=cfg, paths=paths, pointer=pointer, checkpoint=checkpoint)
