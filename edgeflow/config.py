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

# The 12-arch evaluation pool of protocol §5; every option of every block appears at least once.
DEFAULT_EVAL_POOL: tuple[str, ...] = (
    "000000000", "111111111", "222222222", "012012012", "210210210", "120120120",
    "000021222", "200210002", "022202100", "000220202", "222101210", "021110010",
)

# A folder named like a held-out test split is never used for model selection ("latest" is fine).
TEST_SPLIT_PATTERN = re.compile(r"(^|[^a-z])test(ing|set)?([^a-z]|$)")


def is_test_split_name(path: str) -> bool:
    # Only the split folder itself: a parent like /scratch/test_project/ says nothing about the split.
    # Both the name given and the folder it resolves to: a symlink `val -> .../test` is a test split.
    names = {Path(path).name, Path(path).resolve().name}
    return any(TEST_SPLIT_PATTERN.search(name.lower()) for name in names)


# Names that become a folder, a file name or a Prometheus label (experiment, sweep, profile names):
# no '/', no '.' or '..', no leading dot (hidden from `monitor --root`), no spaces, newlines or ':'.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_name(value: str, key: str) -> None:
    """Refuse a name that is not SAFE_NAME, naming the dotted key."""
    if not SAFE_NAME.match(value) or set(value) == {"."}:
        raise ConfigError(f"{key}: must be a non-empty name of at most 128 letters, digits, '_', '-' or '.' "
                          f"(not starting with '.' or '-'), got {value!r}")


# A decimal float literal as people write it (no nan/inf, no underscores): what `_coerce` accepts as a
# number when YAML left it a string.
FLOAT_LITERAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# eval.bn_mode: how evaluation treats batch norm (docs/import.md).
BN_MODES = ("recalibrate", "batch_stats")


PREFLIGHT_DEEP_MODES = ("auto", "full", "sample", "headers")  # not "off": YAML reads that as false


class ConfigError(ValueError):
    """A config value that cannot be used; the message starts with the dotted key."""


@dataclass
class RuntimeConfig:
    experiment_name: str = "edgeflownas_supernet_fc2_180x240"
    output_root: str = "outputs"
    seed: int = 42
    heartbeat_seconds: float = 30.0
    # Off a terminal (SLURM logs), one progress line per this many seconds inside an epoch.
    progress_seconds: float = 60.0


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
    # "png": decode the FC2 files every epoch; "packed": read the decode-once pack in packed_dir
    # (made by `python -m edgeflow pack`), same batches bit for bit.
    format: str = "png"
    packed_dir: str = ""
    # Copy (or hard-link) the pack to $SLURM_TMPDIR / $TMPDIR before reading it.
    stage_to_local: bool = False
    # The launcher's gate (and `preflight` without --deep/--headers-only) decodes samples: "auto" every
    # sample of a split of at most 5,000, else `preflight_sample` of them; "full", "sample", "headers".
    preflight_deep: str = "auto"
    preflight_sample: int = 1000
    # Invalid samples that may be excluded (preflight, the gate and the trainer's start refuse more).
    allow_excluded_samples: int = 0
    # Resume although the sample set differs from the run's (a new order from the next epoch).
    allow_changed_samples: bool = False


# train.mixed_precision value -> the model's compute dtype name.
PRECISIONS = {False: "float32", "false": "float32", "float32": "float32", True: "float16", "float16": "float16",
              "bfloat16": "bfloat16"}


def compute_precision(mixed_precision: bool | str) -> str:
    """The compute dtype name ("float32", "float16", "bfloat16") of a train.mixed_precision value."""
    try:
        return PRECISIONS[mixed_precision]
    except (KeyError, TypeError):
        raise ConfigError(f"train.mixed_precision: must be false, float16 (or true) or bfloat16, "
                          f"got {mixed_precision!r}") from None


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
    # false (float32) | float16 (with loss scaling; `true` means float16) | bfloat16 (no loss scaling).
    mixed_precision: bool | str = False
    # tf.distribute (docs/distribute.md): none | mirrored (one node) | multi_worker (SLURM tasks) | auto.
    distribute: str = "none"
    distribute_mode: str = "arch_parallel"  # arch_parallel (3 or 3m replicas) | data_parallel
    sync_batch_norm: bool = False  # data_parallel: cross-replica BN batch statistics
    # multi_worker: how long a task waits for all its peers at the start before it gives up (exit 2).
    worker_timeout_s: float = 300.0
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
    # "recalibrate": this project's protocol (BN statistics recalibrated per arch, then inference
    # mode); "batch_stats": the original trainer's (BN in training mode on each eval batch, moving
    # statistics untouched), to compare with numbers that trainer logged.
    bn_mode: str = "recalibrate"


@dataclass
class CheckpointConfig:
    # Resume this experiment from its own latest checkpoint when one exists.
    resume: bool = True
    # Start a new experiment from another run's weights (a name under runtime.output_root).
    resume_experiment_name: str = ""
    resume_checkpoint: str = "latest"
    reset_early_stop_on_resume: bool = False
    # Start a new experiment from the weights of the run directory at this path (any edgeflow run,
    # e.g. one made by `import-v1`); its `resume_checkpoint` is read, optimizer and schedule start fresh.
    init_from: str = ""


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
        # The first alternative that accepts the value (e.g. `bool | str`: true/false or a name).
        for arg in args[:-1]:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        return _coerce(value, args[-1], key)
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
        if isinstance(value, str) and FLOAT_LITERAL.match(value.strip()):
            # YAML 1.1 reads `1e-4` (no dot in the mantissa) as a string; it is the number it looks like.
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            # .inf/.nan pass every `>= 0` check below and poison the run later.
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
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
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
    check_name(r.experiment_name, "runtime.experiment_name")
    require(bool(r.output_root), "runtime.output_root", "must not be empty")
    require(r.seed >= 0, "runtime.seed", f"must be >= 0, got {r.seed}")
    require(r.heartbeat_seconds > 0, "runtime.heartbeat_seconds", f"must be > 0, got {r.heartbeat_seconds}")
    require(r.progress_seconds > 0, "runtime.progress_seconds", f"must be > 0, got {r.progress_seconds}")

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
    require(d.format in ("png", "packed"), "data.format", f"must be 'png' or 'packed', got {d.format!r}")
    require(d.format != "packed" or bool(d.packed_dir), "data.packed_dir",
            "must name the pack's folder when data.format is 'packed' (make it with `python -m edgeflow pack`)")
    require(d.preflight_deep in PREFLIGHT_DEEP_MODES, "data.preflight_deep",
            f"must be one of {', '.join(PREFLIGHT_DEEP_MODES)}, got {d.preflight_deep!r}")
    require(d.preflight_sample >= 1, "data.preflight_sample", f"must be >= 1, got {d.preflight_sample}")
    require(d.allow_excluded_samples >= 0, "data.allow_excluded_samples",
            f"must be >= 0, got {d.allow_excluded_samples}")
    require(not d.stage_to_local or d.format == "packed", "data.stage_to_local",
            "stages a pack: it needs data.format: packed")

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
    require(t.mixed_precision in PRECISIONS, "train.mixed_precision",
            f"must be false, float16 (or true) or bfloat16, got {t.mixed_precision!r}")
    require(t.distribute in ("none", "mirrored", "multi_worker", "auto"), "train.distribute",
            f"must be none, mirrored, multi_worker or auto, got {t.distribute!r}")
    require(t.distribute_mode in ("arch_parallel", "data_parallel"), "train.distribute_mode",
            f"must be arch_parallel or data_parallel, got {t.distribute_mode!r}")
    require(t.worker_timeout_s > 0, "train.worker_timeout_s", f"must be > 0, got {t.worker_timeout_s}")
    require(not t.sync_batch_norm or t.distribute_mode == "data_parallel", "train.sync_batch_norm",
            "only applies to train.distribute_mode: data_parallel (arch_parallel replicas see the whole batch)")

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
    require(e.bn_mode in BN_MODES, "eval.bn_mode", f"must be one of {', '.join(BN_MODES)}, got {e.bn_mode!r}")

    require(c.resume_checkpoint in ("latest", "best"), "checkpoint.resume_checkpoint",
             f"must be 'latest' or 'best', got {c.resume_checkpoint!r}")
    if c.resume_experiment_name:
        check_name(c.resume_experiment_name, "checkpoint.resume_experiment_name")
    require(c.resume_experiment_name != r.experiment_name, "checkpoint.resume_experiment_name",
             "names this experiment itself; leave it empty to resume in place")
    require(not (c.init_from and c.resume_experiment_name), "checkpoint.init_from",
            "and checkpoint.resume_experiment_name both name a warm-start source; set only one")
    require(c.init_from.strip() == c.init_from, "checkpoint.init_from",
            f"has leading or trailing spaces: {c.init_from!r}")
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


class DuplicateKeyError(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the base class reports it
                break
            if first is not None:
                raise DuplicateKeyError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                        f"(first given at line {first})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def read_mapping(path: Path, what: str = "config", error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file: {}); errors name `what` and the path."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise error(f"{what} {path}: nested too deeply to be a config") from None
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
