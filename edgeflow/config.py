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
from collections.abc import Callable
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
# `\Z`, not `$`: `$` also matches before a final newline ("name\n" from a YAML `|` block).
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


# What an error message shows of a value: enough to recognise it, never a whole 10 MB string.
SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """repr(value), cut to SHOWN_CHARS characters with the full length said."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def check_name(value: str, key: str) -> None:
    """Refuse a name that is not SAFE_NAME, naming the dotted key."""
    if not SAFE_NAME.match(value) or set(value) == {"."}:
        raise ConfigError(f"{key}: must be a non-empty name of at most 128 letters, digits, '_', '-' or '.' "
                          f"(not starting with '.' or '-'), got {shown(value)}")


# A decimal float literal as people write it (no nan/inf, no underscores): what `_coerce` accepts as a
# number when YAML left it a string.
FLOAT_LITERAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


# eval.bn_mode: how evaluation treats batch norm (docs/training.md).
BN_MODES = ("recalibrate", "batch_stats")
# How a stand-alone (train.arch) net is evaluated: on its own moving statistics, as it is deployed.
STANDALONE_BN_MODE = "moving_stats"


PREFLIGHT_DEEP_MODES = ("auto", "full", "sample", "headers")  # not "off": YAML reads that as false

# data.dataset and eval.splits.<name>.dataset: the data sets edgeflow reads (docs/data.md).
DATASETS = ("fc2", "ft3d", "sintel")
FT3D_PASSES = ("clean", "final")
FT3D_DIRECTIONS = ("into_future", "into_past")
FT3D_CAMERAS = ("left", "right")
SINTEL_PASSES = ("clean", "final")
# An evaluation split's subsets per data set, the first the default: FC2's validation folder; Sintel's
# training pass; FT3D's TEST part in one pass (reported only: a test set is never selected on).
SPLIT_SUBSETS = {"fc2": ("val",), "sintel": ("final", "clean"), "ft3d": ("final", "clean")}
# The size Sintel is evaluated at: the centre 416x1024 crop of its 436x1024 frames, as the established
# comparisons report it (both sides a multiple of 16, so no label is resized).
SINTEL_EVAL_SIZE = (416, 1024)
BUILTIN_SPLIT = "val"  # the run's own evaluation split: data.val_dir, or the holdout of the training split
RESERVED_SPLIT_NAMES = ("train", BUILTIN_SPLIT)


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
class AugmentConfig:
    """Training augmentation (off by default: the FC2 protocol takes one random crop and nothing else).
    Every draw comes from the run's seeded per-epoch generators, so a resume is bit-exact."""

    # Photometric: the same random brightness, contrast, saturation and gamma for both frames.
    photometric: bool = False
    brightness: float = 0.2  # added, as a fraction of the value range, in [-b, b]
    contrast: float = 0.2    # factor in [1 - c, 1 + c] about the mean
    saturation: float = 0.2  # factor in [1 - s, 1 + s] about the grey value
    gamma: float = 0.1       # exponent in [1 - g, 1 + g]
    # Spatial: a random zoom into the crop (flow scaled with it) and flips (flow components negated).
    spatial: bool = False
    max_zoom: float = 1.5    # zoom factor in [1, max_zoom]
    hflip: float = 0.5       # probability of a left-right flip
    vflip: float = 0.0       # probability of an up-down flip
    # Occlusion (eraser): boxes of img_1 painted with its mean colour; the flow is unchanged.
    eraser: bool = False
    eraser_prob: float = 0.5  # probability that a sample gets boxes at all
    eraser_boxes: int = 2     # 1..eraser_boxes boxes
    eraser_min: float = 0.1   # box side as a fraction of the crop side, in [eraser_min, eraser_max]
    eraser_max: float = 0.25

    @property
    def enabled(self) -> bool:
        return self.photometric or self.spatial or self.eraser


@dataclass
class DataConfig:
    # fc2 (train_dir / val_dir folders) | ft3d | sintel (both under `root`, the data set's top folder).
    dataset: str = "fc2"
    root: str = ""
    # FlyingThings3D: which samples of its TRAIN part, and the divisor its flow is scaled by before
    # clipping (the established EdgeFlowNAS retraining's choice, recorded in the run).
    ft3d_passes: list[str] = field(default_factory=lambda: list(FT3D_PASSES))
    ft3d_directions: list[str] = field(default_factory=lambda: list(FT3D_DIRECTIONS))
    ft3d_cameras: list[str] = field(default_factory=lambda: ["left"])
    ft3d_flow_divisor: float = 12.5
    # MPI-Sintel: the training split's pass.
    sintel_pass: str = "final"
    # A file listing known-bad sample files to leave out on purpose (counted and recorded, never silently).
    exclude_list: str = ""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
                          f"got {shown(mixed_precision)}") from None


@dataclass
class TrainConfig:
    num_epochs: int = 200
    batch_size: int = 32
    micro_batch_size: int = 0  # 0: the whole batch at once
    lr: float = 1e-4
    lr_schedule: str = "cosine"
    lr_min: float = 0.0  # where the cosine ends (the original stand-alone recipe: 1e-6)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 4e-5
    grad_clip_global_norm: float = 200.0  # 0: no clipping
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
    # "" (the default): train the supernet. An arch code ("000021222"): train that subnet alone, a
    # stand-alone net of only its layers (docs/training.md, "Training one subnet on its own").
    arch: str = ""


@dataclass
class SplitConfig:
    """A named evaluation split: a data set, its subset, where it is and the size it is evaluated at."""

    dataset: str = "fc2"
    subset: str = ""   # fc2: val; sintel: final | clean; ft3d: final | clean (its TEST part). "": the first
    root: str = ""     # the data set's top folder ("": data.root when data.dataset is the same; fc2: data.val_dir)
    height: int = 0    # centre crop; 0: data.input_height (Sintel: 416)
    width: int = 0     # 0: data.input_width (Sintel: 1024)
    batches: int = 0   # eval batches of eval.batch_size; 0: every sample


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
    # More evaluation splits, by name (e.g. sintel-final): each evaluated with the pool after every
    # evaluation, and on request by eval/rank/search/export --split NAME.
    splits: dict[str, SplitConfig] = field(default_factory=dict)
    # The split early stopping and the best checkpoint follow: "val" (data.val_dir or the holdout) or a
    # name of `splits`.
    select_on: str = BUILTIN_SPLIT


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
    # Also keep the checkpoint of every K-th epoch (`epoch-K`, never rotated away); 0: off.
    keep_every: int = 0


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
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {shown(value)}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, str) and FLOAT_LITERAL.match(value.strip()):
            # YAML 1.1 reads `1e-4` (no dot in the mantissa) as a string; it is the number it looks like.
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}")
        if not math.isfinite(value):
            # .inf/.nan pass every `>= 0` check below and poison the run later.
            raise ConfigError(f"{key}: must be a finite number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            # YAML reads 000021222 as a number (and 012012012 as octal): arch codes must be quoted.
            hint = " (quote it in YAML, e.g. '000021222')" if isinstance(value, int) else ""
            raise ConfigError(f"{key}: expected a string, got {shown(value)}{hint}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def build_section(cls: type, raw: Any, prefix: str, problems: list[ConfigError] | None = None) -> Any:
    """The dataclass `cls` from a raw mapping, every value checked against its annotation.

    With `problems`, every unknown key and wrong type is appended there (the field keeps its default)
    so that all of them can be reported at once; without, the first raises."""
    def fail(exc: ConfigError) -> None:
        if problems is None:
            raise exc
        problems.append(exc)

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}"))
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            close = [n for n in names if _similar(str(key), n)]
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            fail(ConfigError(f"{shown_key(where)}: unknown key{hint}; known keys: {', '.join(sorted(names))}"))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        try:
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                kwargs[f.name] = build_section(tp, raw[f.name], key, problems)
            elif typing.get_origin(tp) is dict:
                kwargs[f.name] = _build_mapping(tp, raw[f.name], key, problems)
            else:
                kwargs[f.name] = _coerce(raw[f.name], tp, key)
        except ConfigError as exc:
            fail(exc)
    return cls(**kwargs)


def _build_mapping(tp: Any, raw: Any, key: str, problems: list[ConfigError] | None) -> dict[str, Any]:
    """A `dict[str, X]` field: names to values of X (a section when X is a dataclass), each checked."""
    _, item_tp = typing.get_args(tp)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping of names, got {type(raw).__name__} {shown(raw)}")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str):
            raise ConfigError(f"{key}: names must be strings, got {shown(name)}")
        where = f"{key}.{name}"
        if isinstance(item_tp, type) and dataclasses.is_dataclass(item_tp):
            out[name] = build_section(item_tp, value, where, problems)
        else:
            out[name] = _coerce(value, item_tp, where)
    return out


def shown_key(key: str) -> str:
    """A dotted key for a message (a key is user input too: a 10 MB key is cut like a value)."""
    return key if len(key) <= SHOWN_CHARS else shown(key)


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
    """Reject impossible values, all of them at once (one ConfigError listing each); returns cfg."""
    raise_all(value_problems(cfg))
    return cfg


def value_problems(cfg: Config) -> list[ConfigError]:
    """Every impossible value of a config whose keys and types are right."""
    problems: list[ConfigError] = []

    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            problems.append(ConfigError(f"{key}: {message}"))

    def name(value: str, key: str) -> None:
        try:
            check_name(value, key)
        except ConfigError as exc:
            problems.append(exc)

    r, d, t, e, c = cfg.runtime, cfg.data, cfg.train, cfg.eval, cfg.checkpoint
    name(r.experiment_name, "runtime.experiment_name")
    require(bool(r.output_root), "runtime.output_root", "must not be empty")
    require(r.seed >= 0, "runtime.seed", f"must be >= 0, got {r.seed}")
    require(r.heartbeat_seconds > 0, "runtime.heartbeat_seconds", f"must be > 0, got {r.heartbeat_seconds}")
    require(r.progress_seconds > 0, "runtime.progress_seconds", f"must be > 0, got {r.progress_seconds}")

    require(d.dataset in DATASETS, "data.dataset", f"must be one of {', '.join(DATASETS)}, got {shown(d.dataset)}")
    if d.dataset == "fc2":
        require(bool(d.train_dir), "data.train_dir", "must name a folder")
        require(bool(d.val_dir) or d.holdout_samples > 0 or e.select_on != BUILTIN_SPLIT, "data.val_dir",
                "is empty and data.holdout_samples is 0: there would be no evaluation split")
        require(not (d.val_dir and d.holdout_samples > 0), "data.holdout_samples",
                "must be 0 when data.val_dir is set (choose one evaluation split)")
    else:
        require(bool(d.root), "data.root", f"must name the {DATASET_NAMES[d.dataset]} folder (data.dataset is "
                                           f"{d.dataset})")
    require(d.holdout_samples >= 0, "data.holdout_samples", f"must be >= 0, got {d.holdout_samples}")
    if d.val_dir and d.dataset == "fc2":
        require(not is_test_split_name(d.val_dir), "data.val_dir",
                 f"{shown(d.val_dir)} is named like a test split; a test set is never used for selection")
    for key, values, choices in (("data.ft3d_passes", d.ft3d_passes, FT3D_PASSES),
                                 ("data.ft3d_directions", d.ft3d_directions, FT3D_DIRECTIONS),
                                 ("data.ft3d_cameras", d.ft3d_cameras, FT3D_CAMERAS)):
        require(bool(values) and set(values) <= set(choices) and len(set(values)) == len(values), key,
                f"must list one or both of {', '.join(choices)} once each, got {shown(values)}")
    require(d.ft3d_flow_divisor > 0, "data.ft3d_flow_divisor", f"must be > 0, got {d.ft3d_flow_divisor}")
    require(d.sintel_pass in SINTEL_PASSES, "data.sintel_pass",
            f"must be one of {', '.join(SINTEL_PASSES)}, got {shown(d.sintel_pass)}")
    augment_problems(d.augment, require)
    split_problems(cfg, require)
    require(d.input_height >= 16 and d.input_width >= 16, "data.input_height",
             f"input must be at least 16x16, got {d.input_height}x{d.input_width}")
    require(d.input_height % 2 == 0 and d.input_width % 2 == 0, "data.input_height",
             f"input size must be even, got {d.input_height}x{d.input_width}")
    require(d.flow_clip > 0, "data.flow_clip", f"must be > 0, got {d.flow_clip}")
    require(d.num_parallel_calls >= 0, "data.num_parallel_calls", "must be >= 0 (0 = autotune)")
    require(d.prefetch_batches >= 0, "data.prefetch_batches", "must be >= 0 (0 = autotune)")
    require(d.format in ("png", "packed"), "data.format", f"must be 'png' or 'packed', got {shown(d.format)}")
    require(d.format != "packed" or bool(d.packed_dir), "data.packed_dir",
            "must name the pack's folder when data.format is 'packed' (make it with `python -m edgeflow pack`)")
    require(d.preflight_deep in PREFLIGHT_DEEP_MODES, "data.preflight_deep",
            f"must be one of {', '.join(PREFLIGHT_DEEP_MODES)}, got {shown(d.preflight_deep)}")
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
    require(t.lr > 0 and math.isfinite(t.lr), "train.lr", f"must be a positive number, got {t.lr}")
    require(t.lr_schedule in ("cosine", "constant"), "train.lr_schedule",
             f"must be 'cosine' or 'constant', got {shown(t.lr_schedule)}")
    require(0 <= t.adam_beta1 < 1, "train.adam_beta1", f"must be in [0, 1), got {t.adam_beta1}")
    require(0 <= t.adam_beta2 < 1, "train.adam_beta2", f"must be in [0, 1), got {t.adam_beta2}")
    require(t.adam_epsilon > 0, "train.adam_epsilon", f"must be > 0, got {t.adam_epsilon}")
    require(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    # (a bad train.lr is its own problem: the bound is checked only against a good one)
    require(t.lr_min >= 0 and (t.lr <= 0 or t.lr_min <= t.lr), "train.lr_min",
            f"must be in [0, train.lr {t.lr}], got {t.lr_min}")
    require(t.grad_clip_global_norm >= 0, "train.grad_clip_global_norm",
             f"must be >= 0 (0: no clipping), got {t.grad_clip_global_norm}")
    require(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", f"must be >= 1, got {t.max_nonfinite_steps}")
    require(t.mixed_precision in PRECISIONS, "train.mixed_precision",
            f"must be false, float16 (or true) or bfloat16, got {shown(t.mixed_precision)}")
    require(t.distribute in ("none", "mirrored", "multi_worker", "auto"), "train.distribute",
            f"must be none, mirrored, multi_worker or auto, got {shown(t.distribute)}")
    require(t.distribute_mode in ("arch_parallel", "data_parallel"), "train.distribute_mode",
            f"must be arch_parallel or data_parallel, got {shown(t.distribute_mode)}")
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
                 f"arch code must be 9 digits in 0-2, got {shown(code)}")
    require(len(set(e.pool)) == len(e.pool), "eval.pool", "lists an arch code twice")
    require(e.early_stop_patience >= 1, "eval.early_stop_patience", f"must be >= 1, got {e.early_stop_patience}")
    require(e.min_delta >= 0, "eval.min_delta", f"must be >= 0, got {e.min_delta}")
    require(e.min_epochs_before_early_stop >= 0, "eval.min_epochs_before_early_stop", "must be >= 0")
    require(e.bn_mode in BN_MODES, "eval.bn_mode", f"must be one of {', '.join(BN_MODES)}, got {shown(e.bn_mode)}")

    require(c.resume_checkpoint in ("latest", "best"), "checkpoint.resume_checkpoint",
             f"must be 'latest' or 'best', got {shown(c.resume_checkpoint)}")
    if c.resume_experiment_name:
        name(c.resume_experiment_name, "checkpoint.resume_experiment_name")
    require(c.resume_experiment_name != r.experiment_name, "checkpoint.resume_experiment_name",
             "names this experiment itself; leave it empty to resume in place")
    require(not (c.init_from and c.resume_experiment_name), "checkpoint.init_from",
            "and checkpoint.resume_experiment_name both name a warm-start source; set only one")
    require(c.init_from.strip() == c.init_from, "checkpoint.init_from",
            f"has leading or trailing spaces: {shown(c.init_from)}")
    require(c.keep_every >= 0, "checkpoint.keep_every", f"must be >= 0 (0: off), got {c.keep_every}")
    standalone_problems(cfg, require)
    return problems


def is_arch_code(code: str) -> bool:
    """A canonical arch code: 9 digits in 0-2 (edgeflow.space.arch parses the other spellings)."""
    return len(code) == 9 and set(code) <= set("012")


# The options that only mean something for a supernet, refused beside train.arch (docs/training.md):
# the evaluation pool, the original supernet trainer's batch-statistics evaluation, and tf.distribute
# (its arch-parallel mode spreads the archs of a strict-fairness step; a stand-alone net trains on one
# device, one process per GPU).
SUPERNET_ONLY = ("eval.pool", "eval.bn_mode", "train.distribute")


def eval_archs(cfg: Config) -> list[str]:
    """The archs an evaluation of the run measures: the pool of a supernet, the one arch of a stand-alone net."""
    return [cfg.train.arch] if cfg.train.arch else list(cfg.eval.pool)


def eval_bn_mode(cfg: Config) -> str:
    """How the run's evaluation treats BN: eval.bn_mode for a supernet; a stand-alone net is evaluated on
    its own moving statistics (STANDALONE_BN_MODE), as it is deployed."""
    return STANDALONE_BN_MODE if cfg.train.arch else cfg.eval.bn_mode


def standalone_problems(cfg: Config, require: Callable[[bool, str, str], None]) -> None:
    """train.arch: a canonical arch code, and none of the supernet-only options set."""
    t, e = cfg.train, cfg.eval
    if not t.arch:
        return
    if not is_arch_code(t.arch):
        require(False, "train.arch", f"arch code must be 9 digits in 0-2 (e.g. '000021222'), got {shown(t.arch)}")
        return
    alone = f"a stand-alone run (train.arch {t.arch})"
    require(list(e.pool) == list(DEFAULT_EVAL_POOL), "eval.pool",
            f"is the supernet's evaluation pool; {alone} evaluates its own arch only: remove eval.pool")
    require(e.bn_mode != "batch_stats", "eval.bn_mode",
            f"batch_stats is the supernet evaluation of the original trainer; {alone} is evaluated on its own "
            f"BN moving statistics: remove eval.bn_mode")
    require(t.distribute == "none", "train.distribute",
            f"{alone} trains on one device (one process per GPU): set train.distribute: none")


DATASET_NAMES = {"fc2": "FlyingChairs2", "ft3d": "FlyingThings3D", "sintel": "MPI-Sintel"}


def augment_problems(a: AugmentConfig, require: Callable[[bool, str, str], None]) -> None:
    for name in ("brightness", "contrast", "saturation", "gamma"):
        value = getattr(a, name)
        require(0 <= value < 1, f"data.augment.{name}", f"must be in [0, 1), got {value}")
    require(1 <= a.max_zoom <= 4, "data.augment.max_zoom", f"must be in [1, 4], got {a.max_zoom}")
    for name in ("hflip", "vflip", "eraser_prob"):
        value = getattr(a, name)
        require(0 <= value <= 1, f"data.augment.{name}", f"must be a probability in [0, 1], got {value}")
    require(1 <= a.eraser_boxes <= 16, "data.augment.eraser_boxes", f"must be in 1..16, got {a.eraser_boxes}")
    require(0 < a.eraser_min <= a.eraser_max <= 1, "data.augment.eraser_min",
            f"need 0 < eraser_min <= eraser_max <= 1, got {a.eraser_min} and {a.eraser_max}")


def has_builtin_split(cfg: Config) -> bool:
    """Whether the run has its own evaluation split "val": FC2's val_dir or holdout, another data set's holdout."""
    d = cfg.data
    if d.dataset == "fc2":
        return bool(d.val_dir) or d.holdout_samples > 0
    return d.holdout_samples > 0


def split_subset(spec: SplitConfig) -> str:
    return spec.subset or SPLIT_SUBSETS.get(spec.dataset, ("",))[0]


def split_size(cfg: Config, spec: SplitConfig) -> tuple[int, int]:
    """(height, width) of an evaluation split's centre crop."""
    default = SINTEL_EVAL_SIZE if spec.dataset == "sintel" else (cfg.data.input_height, cfg.data.input_width)
    return spec.height or default[0], spec.width or default[1]


def split_root(cfg: Config, spec: SplitConfig) -> str:
    """The folder an evaluation split reads: its root, else data.root for the run's own data set, else
    (FC2) data.val_dir; "" when there is none."""
    if spec.dataset == "fc2":
        return str(Path(spec.root) / "val") if spec.root else cfg.data.val_dir
    if spec.root:
        return spec.root
    return cfg.data.root if cfg.data.dataset == spec.dataset else ""


def split_problems(cfg: Config, require: Callable[[bool, str, str], None]) -> None:
    e = cfg.eval
    for name, spec in e.splits.items():
        key = f"eval.splits.{name}"
        require(bool(SAFE_NAME.match(name)) and set(name) != {"."}, key,
                "a split name must be letters, digits, '_', '-' or '.' (it names a folder)")
        require(name not in RESERVED_SPLIT_NAMES, key, f"{shown(name)} is reserved (the run's own splits)")
        if spec.dataset not in DATASETS:
            require(False, f"{key}.dataset", f"must be one of {', '.join(DATASETS)}, got {shown(spec.dataset)}")
            continue
        subsets = SPLIT_SUBSETS[spec.dataset]
        require(split_subset(spec) in subsets, f"{key}.subset",
                f"must be one of {', '.join(subsets)} for {spec.dataset}, got {shown(spec.subset)}")
        root_help = ("its val/ folder's parent (or set data.val_dir)" if spec.dataset == "fc2" else
                     f"the {DATASET_NAMES[spec.dataset]} folder")
        require(bool(split_root(cfg, spec)), f"{key}.root", f"must name {root_help}")
        for side in ("height", "width"):
            value = getattr(spec, side)
            require(value == 0 or (value >= 16 and value % 2 == 0), f"{key}.{side}",
                    f"must be 0 (the default) or even and at least 16, got {value}")
        require(spec.batches >= 0, f"{key}.batches", f"must be >= 0 (0: every sample), got {spec.batches}")
    if e.select_on == BUILTIN_SPLIT:
        # FC2 without val_dir or holdout is reported as such (data.val_dir) already.
        require(has_builtin_split(cfg) or cfg.data.dataset == "fc2", "eval.select_on",
                f"is 'val', but data.dataset {cfg.data.dataset} has no own evaluation split: set "
                f"data.holdout_samples, or name a split of eval.splits")
    elif e.select_on not in e.splits:
        known = ", ".join([BUILTIN_SPLIT, *e.splits])
        require(False, "eval.select_on", f"{shown(e.select_on)} is not a split (known: {known})")
    else:
        spec = e.splits[e.select_on]
        require(spec.dataset != "ft3d", "eval.select_on",
                f"{e.select_on} is FlyingThings3D's TEST part: a test set is never used for selection")
        if spec.dataset == "fc2" and split_root(cfg, spec):
            require(not is_test_split_name(split_root(cfg, spec)), "eval.select_on",
                    f"{e.select_on} reads {split_root(cfg, spec)}, named like a test split; a test set is never "
                    f"used for selection")


def data_paths(cfg: Config) -> list[tuple[str, str]]:
    """(dotted key, path) of every folder and file the config's data is read from (absolute or not, as
    given): what a job must see on the node, and bind into its container."""
    d = cfg.data
    out: list[tuple[str, str]] = []
    if d.dataset == "fc2":
        out.append(("data.train_dir", d.train_dir))
        if d.val_dir:
            out.append(("data.val_dir", d.val_dir))
    else:
        out.append(("data.root", d.root))
    if d.exclude_list:
        out.append(("data.exclude_list", d.exclude_list))
    for name, spec in cfg.eval.splits.items():
        root = split_root(cfg, spec)
        if root and root not in {p for _, p in out}:
            out.append((f"eval.splits.{name}.root", root))
    if d.format == "packed" and d.packed_dir:
        out.append(("data.packed_dir", d.packed_dir))
    return out


def raise_all(problems: list[ConfigError], blame: Callable[[str], str] | None = None) -> None:
    """Raise one ConfigError for all `problems` (nothing when empty), each line prefixed by its source
    when `blame` says which (the config file, or the --set that brought the key)."""
    if not problems:
        return
    lines = [f"{blame(str(p))}{p}" if blame else str(p) for p in problems]
    if len(lines) == 1:
        raise ConfigError(lines[0])
    raise ConfigError(f"{len(lines)} problems:\n  " + "\n  ".join(lines))


def from_dict(raw: Any, blame: Callable[[str], str] | None = None) -> Config:
    """A validated Config from a raw mapping: every unknown key and wrong type reported at once, then
    (when there was none) every impossible value at once; `blame` prefixes each line with its source."""
    check_size(raw)
    problems: list[ConfigError] = []
    cfg = build_section(Config, raw, "", problems)
    raise_all(problems, blame)
    raise_all(value_problems(cfg), blame)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# A config is a few hundred values; far more means a runaway file or an alias bomb (YAML anchors that
# expand exponentially), which must cost neither minutes nor gigabytes to refuse.
MAX_VALUES = 100_000
MAX_CONFIG_BYTES = 1 << 20


def check_size(raw: Any) -> None:
    """Refuse a config whose values, aliases expanded, number more than MAX_VALUES (ConfigError)."""
    count, stack = 0, [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"config: more than {MAX_VALUES} values once its YAML aliases are expanded: "
                              f"not a config (an alias bomb or a runaway file)")
        if isinstance(node, dict):
            stack.extend(node.values())
            count += len(node)
        elif isinstance(node, list):
            stack.extend(node)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a raw config mapping; values are parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {shown(item)}: expected key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {shown(text)}: {exc}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _field_type(key) is str:
            # A text key given digits on the command line (`--set train.arch=000021222`): the digits as
            # typed, not the number YAML reads (21222, or octal for 012012012).
            value = text.strip()
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            sub = node.setdefault(part, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{'.'.join(parts[:depth + 1])}: is a value, cannot set {key}")
            node = sub
        node[parts[-1]] = value
    return raw


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key (None when there is no such key)."""
    tp: Any = Config
    parts = key.split(".")
    i = 0
    while i < len(parts):
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if parts[i] not in hints:
                return None
            tp = hints[parts[i]]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]  # parts[i] names an entry
        else:
            return None
        i += 1
    return tp


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
                raise DuplicateKeyError(f"duplicate key {shown(key)} at line {key_node.start_mark.line + 1} "
                                        f"(first given at line {first})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def read_mapping(path: Path, what: str = "config", error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file: {}); errors name `what` and the path."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        text = data.decode()
    except OSError as exc:
        raise error(f"{what} {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise error(f"{what} {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config")
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
    """Load, override and validate a config file. Raises ConfigError listing every problem, each blamed
    on where it came from: the file, or the --set that brought the key."""
    path = Path(path)
    raw = read_mapping(path)
    overrides = list(overrides or [])
    try:
        raw = apply_overrides(raw, overrides)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None
    set_keys = {item.partition("=")[0].strip(): item for item in overrides}

    def blame(message: str) -> str:
        key = message.split(":", 1)[0].split("[", 1)[0]
        for set_key, item in set_keys.items():
            if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
                return f"--set {shown(item) if len(item) > SHOWN_CHARS else item}: "
        return f"config {path}: "

    try:
        return from_dict(raw, blame)
    except ConfigError as exc:
        if str(exc).startswith("config:"):  # check_size: the file as a whole
            raise ConfigError(f"config {path}{str(exc).removeprefix('config')}") from None
        raise


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
