"""Experiment configuration: one YAML file, validated at load time.

Light module: no TensorFlow. Every error names the dotted key (``train.batch_size``) so a typo in a
config never turns into a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The 12-arch evaluation pool of SPEC §5; every option of every block appears at least once.
DEFAULT_EVAL_POOL: tuple[str, ...] = (
    "000000000", "111111111", "222222222", "012012012", "210210210", "120120120",
    "000021222", "200210002", "022202100", "000220202", "222101210", "021110010",
)

# A folder named like a held-out test split is never used for model selection ("latest" is fine).
TEST_SPLIT_PATTERN = re.compile(r"(^|[^a-z])test(ing|set)?([^a-z]|$)")


def is_test_split_name(path: str) -> bool:
    # Only the split folder itself: a parent like /scratch/test_project/ says nothing about the split.
    return bool(TEST_SPLIT_PATTERN.search(Path(path).name.lower()))


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with the dotted key."""


@dataclass
class RuntimeConfig:
    experiment_name: str = "edgeflownas_supernet_fc2_180x240"
    output_root: str = "outputs"
    seed: int = 42
    heartbeat_seconds: float = 30.0


@dataclass
class DataConfig:
    train_dir: str = "data/FlyingChairs2/train"
    # Empty string: carve a fixed holdout of `holdout_samples` from train_dir instead.
    val_dir: str = "data/FlyingChairs2/val"
    holdout_samples: int = 0
    holdout_seed: int = 2024
    input_height: int = 180
    input_width: int = 240
    flow_clip: float = 50.0
    # 0 means "as many as the machine has" (tf.data AUTOTUNE).
    num_parallel_calls: int = 0
    prefetch_batches: int = 0


@dataclass
class TrainConfig:
    num_epochs: int = 200
    batch_size: int = 32
    micro_batch_size: int = 0  # 0: the whole batch at once
    archs_per_step: int = 3
    lr: float = 1e-4
    lr_schedule: str = "cosine"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 4e-5
    grad_clip_global_norm: float = 200.0
    max_nonfinite_steps: int = 20
    mixed_precision: bool = False
    jit_compile: bool = False


@dataclass
class EvalConfig:
    every_epochs: int = 1
    batch_size: int = 32
    bn_recal_batches: int = 8
    eval_batches_per_arch: int = 20
    pool: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_POOL))
    early_stop_patience: int = 15
    min_delta: float = 0.002
    min_epochs_before_early_stop: int = 30


@dataclass
class CheckpointConfig:
    # Resume this experiment from its own latest checkpoint when one exists.
    resume: bool = True
    # Start a new experiment from another run's weights (a name under runtime.output_root).
    resume_experiment_name: str = ""
    resume_checkpoint: str = "latest"
    reset_early_stop_on_resume: bool = False


@dataclass
class Config:
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runtime.output_root) / self.runtime.experiment_name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotated type; int is accepted where float is expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            # YAML reads 000021222 as a number (and 012012012 as octal): arch codes must be quoted.
            hint = " (quote it in YAML, e.g. '000021222')" if isinstance(value, int) else ""
            raise ConfigError(f"{key}: expected a string, got {value!r}{hint}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def build_section(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            close = [n for n in names if _similar(str(key), n)]
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown key{hint}; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_section(tp, raw[f.name], key)
        else:
            kwargs[f.name] = _coerce(raw[f.name], tp, key)
    return cls(**kwargs)


def _similar(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if a == b or a.replace("-", "_") == b:
        return True
    if abs(len(a) - len(b)) > 2:
        return False
    # Cheap edit-distance bound: enough to suggest the key behind a one- or two-letter typo.
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] <= 2


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate(cfg: Config) -> Config:
    """Reject impossible values; returns cfg so it can be chained."""
    r, d, t, e, c = cfg.runtime, cfg.data, cfg.train, cfg.eval, cfg.checkpoint
    require(bool(r.experiment_name) and "/" not in r.experiment_name, "runtime.experiment_name",
             f"must be a non-empty name without '/', got {r.experiment_name!r}")
    require(bool(r.output_root), "runtime.output_root", "must not be empty")
    require(r.seed >= 0, "runtime.seed", f"must be >= 0, got {r.seed}")
    require(r.heartbeat_seconds > 0, "runtime.heartbeat_seconds", f"must be > 0, got {r.heartbeat_seconds}")

    require(bool(d.train_dir), "data.train_dir", "must name a folder")
    require(bool(d.val_dir) or d.holdout_samples > 0, "data.val_dir",
             "is empty and data.holdout_samples is 0: there would be no evaluation split")
    require(not (d.val_dir and d.holdout_samples > 0), "data.holdout_samples",
             "must be 0 when data.val_dir is set (choose one evaluation split)")
    require(d.holdout_samples >= 0, "data.holdout_samples", f"must be >= 0, got {d.holdout_samples}")
    if d.val_dir:
        require(not is_test_split_name(d.val_dir), "data.val_dir",
                 f"{d.val_dir!r} is named like a test split; a test set is never used for selection")
    require(d.input_height >= 16 and d.input_width >= 16, "data.input_height",
             f"input must be at least 16x16, got {d.input_height}x{d.input_width}")
    require(d.input_height % 2 == 0 and d.input_width % 2 == 0, "data.input_height",
             f"input size must be even, got {d.input_height}x{d.input_width}")
    require(d.flow_clip > 0, "data.flow_clip", f"must be > 0, got {d.flow_clip}")
    require(d.num_parallel_calls >= 0, "data.num_parallel_calls", "must be >= 0 (0 = autotune)")
    require(d.prefetch_batches >= 0, "data.prefetch_batches", "must be >= 0 (0 = autotune)")

    require(t.num_epochs >= 1, "train.num_epochs", f"must be >= 1, got {t.num_epochs}")
    require(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    require(t.micro_batch_size >= 0, "train.micro_batch_size", f"must be >= 0, got {t.micro_batch_size}")
    require(t.micro_batch_size == 0 or t.batch_size % t.micro_batch_size == 0, "train.micro_batch_size",
             f"{t.micro_batch_size} does not divide train.batch_size {t.batch_size}")
    require(t.archs_per_step == 3, "train.archs_per_step",
             f"strict fairness over 3 options needs exactly 3 archs per step, got {t.archs_per_step}")
    require(t.lr > 0 and math.isfinite(t.lr), "train.lr", f"must be a positive number, got {t.lr}")
    require(t.lr_schedule in ("cosine", "constant"), "train.lr_schedule",
             f"must be 'cosine' or 'constant', got {t.lr_schedule!r}")
    require(0 <= t.adam_beta1 < 1, "train.adam_beta1", f"must be in [0, 1), got {t.adam_beta1}")
    require(0 <= t.adam_beta2 < 1, "train.adam_beta2", f"must be in [0, 1), got {t.adam_beta2}")
    require(t.adam_epsilon > 0, "train.adam_epsilon", f"must be > 0, got {t.adam_epsilon}")
    require(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    require(t.grad_clip_global_norm > 0, "train.grad_clip_global_norm",
             f"must be > 0, got {t.grad_clip_global_norm}")
    require(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", f"must be >= 1, got {t.max_nonfinite_steps}")

    require(e.every_epochs >= 1, "eval.every_epochs", f"must be >= 1, got {e.every_epochs}")
    require(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}")
    require(e.bn_recal_batches >= 1, "eval.bn_recal_batches",
             f"must be >= 1 (BN recalibration is not optional), got {e.bn_recal_batches}")
    require(e.eval_batches_per_arch >= 1, "eval.eval_batches_per_arch",
             f"must be >= 1, got {e.eval_batches_per_arch}")
    require(len(e.pool) >= 1, "eval.pool", "must list at least one arch code")
    for i, code in enumerate(e.pool):
        require(len(code) == 9 and set(code) <= set("012"), f"eval.pool[{i}]",
                 f"arch code must be 9 digits in 0-2, got {code!r}")
    require(len(set(e.pool)) == len(e.pool), "eval.pool", "lists an arch code twice")
    require(e.early_stop_patience >= 1, "eval.early_stop_patience", f"must be >= 1, got {e.early_stop_patience}")
    require(e.min_delta >= 0, "eval.min_delta", f"must be >= 0, got {e.min_delta}")
    require(e.min_epochs_before_early_stop >= 0, "eval.min_epochs_before_early_stop", "must be >= 0")

    require(c.resume_checkpoint in ("latest", "best"), "checkpoint.resume_checkpoint",
             f"must be 'latest' or 'best', got {c.resume_checkpoint!r}")
    require(c.resume_experiment_name != r.experiment_name, "checkpoint.resume_experiment_name",
             "names this experiment itself; leave it empty to resume in place")
    return cfg


def from_dict(raw: Any) -> Config:
    return validate(build_section(Config, raw, ""))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a raw config mapping; values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {text!r}: {exc}") from None
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            sub = node.setdefault(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{'.'.join(parts[:depth + 1])}: is a value, cannot set {key}")
            node = sub
        node[parts[-1]] = value
    return raw


def read_mapping(path: Path, what: str = "config", error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file: {}); errors name `what` and the path."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{what} {path}: top level must be a mapping")
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config file. Raises ConfigError naming the file and key."""
    path = Path(path)
    raw = read_mapping(path)
    try:
        return from_dict(apply_overrides(raw, overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
