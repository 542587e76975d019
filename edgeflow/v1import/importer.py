"""Import a checkpoint of the original v1 trainer as an edgeflow run directory.

Everything is read and checked before anything is written, and the run directory is assembled under
a hidden name next to OUT (`.OUT.importing-HOST-PID-TOKEN`, edgeflow/rundir/staging.py) and renamed
at the end: a refusal, an exception, Ctrl-C or SIGTERM leaves no OUT and no hidden folder behind, and
what a SIGKILL left is removed by the next import to that OUT. TensorFlow loads only once the cheap
checks (paths, `.meta.json`) have passed.

The data folders of the config are made absolute (against the current folder, as every command
reads them), so `eval` and `export` of the imported run find the same data from any folder.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeflow import config as config_mod
from edgeflow import rundir
from edgeflow.config import Config
from edgeflow.rundir import RunPaths, staging
from edgeflow.train.checkpoint import CheckpointStore
from edgeflow.train.signature import code_version, signature
from edgeflow.v1import import names
from edgeflow.v1import.meta import SourceMeta, read_meta

SOURCE_FORMAT = "edgeflownas-v1 tf.compat.v1 Saver"
IMPORTED_STATUS = "imported"
STAGE_KIND = "importing"
_FILE_SUFFIX = re.compile(r"(\.index|\.meta\.json|\.meta|\.data-\d{5}-of-\d{5})$")


class ImportRefused(ValueError):
    """The checkpoint cannot be imported as it is; the message names the file or variable. Nothing written."""


@dataclass
class ImportResult:
    out: Path
    source: Path
    variables: int
    values: int
    ignored: dict[str, int]
    meta: SourceMeta | None
    uncalibrated_bn: list[str]
    warnings: list[str] = field(default_factory=list)
    # "data.train_dir" -> the absolute folder the imported config names, for those that do not exist here
    missing_data: dict[str, str] = field(default_factory=dict)


def resolve_prefix(checkpoint: str | Path) -> Path:
    """The Saver prefix for a path given as the prefix or as one of its files."""
    path = Path(_FILE_SUFFIX.sub("", str(checkpoint)))
    if path.is_dir():
        found = sorted(p.name[: -len(".index")] for p in path.glob("*.index"))
        hint = f" (found: {', '.join(found)})" if found else ""
        raise ImportRefused(f"{path} is a directory; give a checkpoint prefix such as "
                            f"{path / 'supernet_best.ckpt'}{hint}")
    if not Path(f"{path}.index").is_file():
        raise ImportRefused(f"{path}: no checkpoint there ({path}.index does not exist)")
    return path


def _free(out: Path) -> bool:
    """Absent, or an empty folder (not a link): one rename can put the run there, losing nothing."""
    if not os.path.lexists(out):
        return True
    return out.is_dir() and not out.is_symlink() and not any(out.iterdir())


def check_out(out: Path) -> None:
    if not _free(out):
        raise ImportRefused(f"{out} already exists and is not empty; it is left alone: choose a new run directory")


def import_v1(checkpoint: str | Path, cfg: Config, out: str | Path) -> ImportResult:
    """Read, map and check every model variable of `checkpoint`, then write the run directory `out`.

    `cfg` supplies the data and evaluation settings the imported run carries (its input size goes
    into the run signature); its runtime section is rewritten to name `out`.
    """
    out = Path(out)
    prefix = resolve_prefix(checkpoint)
    check_out(out)
    model_cfg = _run_config(cfg, out)
    warnings: list[str] = []
    meta = read_meta(prefix)
    if meta is None:
        warnings.append(f"{prefix}.meta.json does not exist: the old epoch, step, best metric, bad count "
                        f"and fairness counts are unknown (recorded as null)")
    arrays, classified = _read_checkpoint(prefix)

    from edgeflow.train.restore import build_supernet

    model = build_supernet(model_cfg)
    ours = {v.name.split(":")[0]: v for v in model.variables}
    _check_complete(classified, arrays, ours)
    for original, name in classified.model.items():
        ours[name].assign(arrays[original])
    uncalibrated = sorted(n for n in ours if names.is_depth_branch_statistic(n))
    ignored = {kind: len(v) for kind, v in classified.ignored.items()}
    if classified.ignored["other"]:
        warnings.append(f"ignored {len(classified.ignored['other'])} variables outside the model scopes: "
                        f"{', '.join(classified.ignored['other'][:5])}"
                        f"{' ...' if len(classified.ignored['other']) > 5 else ''}")
    result = ImportResult(out=out, source=prefix, variables=len(classified.model),
                          values=int(sum(a.size for a in arrays.values())), ignored=ignored, meta=meta,
                          uncalibrated_bn=uncalibrated, warnings=warnings,
                          missing_data={k: v for k, v in data_folders(model_cfg).items() if not os.path.isdir(v)})
    _write_run(result, model, model_cfg)
    return result


def _read_checkpoint(prefix: Path) -> tuple[dict[str, Any], names.Classified]:
    import numpy as np
    import tensorflow as tf

    # The reader reports a short data file as IndexError ("Read less bytes than requested"), a bad
    # index or CRC as an OpError; all mean the same to a user: this checkpoint cannot be read.
    _READ_ERRORS = (tf.errors.OpError, ValueError, IndexError, RuntimeError, OSError)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except _READ_ERRORS as exc:
        raise ImportRefused(f"{prefix}: not a readable checkpoint ({_first_line(exc)})") from None
    try:
        classified = names.classify(list(shapes))
    except names.UnknownVariable as exc:
        raise ImportRefused(f"{prefix}: unknown model variable {exc} (a different supernet version?)") from None
    arrays: dict[str, Any] = {}
    for original in sorted(classified.model):
        if dtypes[original] != tf.float32:
            raise ImportRefused(f"{prefix}: {original} is {dtypes[original].name}, expected float32")
        try:
            value = reader.get_tensor(original)
        except _READ_ERRORS as exc:
            raise ImportRefused(f"{prefix}: cannot read {original} (truncated or corrupt checkpoint: "
                                f"{_first_line(exc)})") from None
        if list(value.shape) != list(shapes[original]):
            raise ImportRefused(f"{prefix}: {original} read with shape {list(value.shape)}, the index says "
                                f"{list(shapes[original])} (corrupt checkpoint)")
        arrays[original] = np.asarray(value)
    return arrays, classified


def _check_complete(classified: names.Classified, arrays: dict[str, Any], ours: dict[str, Any]) -> None:
    by_ours = {name: original for original, name in classified.model.items()}
    for name, var in ours.items():
        original = by_ours.get(name)
        if original is None:
            raise ImportRefused(f"model variable missing from the checkpoint: {names.original_name(name)} "
                                f"(our {name}, shape {var.shape.as_list()})")
        shape = list(arrays[original].shape)
        if shape != var.shape.as_list():
            raise ImportRefused(f"shape mismatch: {original} has shape {shape} in the checkpoint, this "
                                f"supernet's {name} has {var.shape.as_list()}")
    extra = sorted(set(by_ours) - set(ours))
    if extra:  # the rules only produce names the layer table defines; guard against them drifting apart
        raise ImportRefused(f"unknown model variable {by_ours[extra[0]]}: maps onto {extra[0]}, which this "
                            f"supernet does not have")


def data_folders(cfg: Config) -> dict[str, str]:
    """The data folders `eval` of a run with this config reads: dotted key -> folder."""
    d = cfg.data
    if d.format == "packed":
        return {"data.packed_dir": d.packed_dir}
    return {"data.train_dir": d.train_dir, **({"data.val_dir": d.val_dir} if d.val_dir else {})}


def _absolute(folder: str) -> str:
    return os.path.abspath(folder) if folder else folder


def _run_config(cfg: Config, out: Path) -> Config:
    runtime = replace(cfg.runtime, experiment_name=out.name, output_root=str(out.parent.resolve()))
    checkpoint = replace(cfg.checkpoint, resume_experiment_name="", init_from="")
    # Relative folders mean "from where the command runs"; the run must find its data from anywhere.
    data = replace(cfg.data, train_dir=_absolute(cfg.data.train_dir), val_dir=_absolute(cfg.data.val_dir),
                   packed_dir=_absolute(cfg.data.packed_dir))
    return config_mod.validate(replace(cfg, runtime=runtime, checkpoint=checkpoint, data=data))


def _write_run(result: ImportResult, model: Any, cfg: Config) -> None:
    import tensorflow as tf

    out = result.out
    with staging.staged(out, STAGE_KIND) as tmp:
        paths = RunPaths(tmp)
        meta = result.meta
        now = time.time()
        source = _source_record(result)
        calibration = {"bn_calibrated": False, "uncalibrated_bn": result.uncalibrated_bn}
        pointer_state = {"imported": True, "status": IMPORTED_STATUS,
                         "epoch": meta.epoch if meta else None, "step": meta.global_step if meta else None,
                         "source": str(result.source), **calibration}
        store = CheckpointStore(paths.checkpoints)
        pointer = store.save("best", tf.train.Checkpoint(model=model).write, pointer_state)
        # One copy serves both pointers, so `eval` (best) and a warm start (latest) find it.
        store.point("latest", pointer)
        rundir.atomic_write_text(paths.config, config_mod.dump(cfg))
        rundir.atomic_write_json(paths.run, {
            "experiment": cfg.runtime.experiment_name, "status": IMPORTED_STATUS, "job_ids": [],
            "host": rundir.hostname(), "code_version": code_version(), "train_samples": None,
            "val_samples": None, "val_source": None, "signature": signature(cfg), "imported_from": source,
            **calibration, "created": now, "updated": now})
        rundir.write_state(paths.state, {
            "experiment": cfg.runtime.experiment_name, "status": IMPORTED_STATUS,
            "epoch": meta.epoch if meta else None, "step": meta.global_step if meta else None,
            "batch_in_epoch": 0, "num_epochs": None, "steps_per_epoch": None,
            "best_epe": meta.best_metric if meta else None, "best_epoch": None,
            "bad_epochs": meta.bad_epochs if meta else None, "patience": None,
            "fairness_counts": meta.counts_by_block() if meta else None,
            "fairness_gap": meta.fairness_gap() if meta else None, "nonfinite_steps": None,
            "best_epe_protocol": "batch_stats", "bn_calibrated": False, "updated": now})
        staging.settle(tmp)
        if not _free(out):
            raise ImportRefused(f"{out} appeared while the import was written and is not empty; left alone")
        staging.publish_rename(tmp, out)  # onto an absent or empty OUT: one rename


def _source_record(result: ImportResult) -> dict[str, Any]:
    record: dict[str, Any] = {"format": SOURCE_FORMAT, "checkpoint": str(result.source.resolve()),
                              "variables": result.variables, "values": result.values,
                              "ignored": result.ignored, "meta_missing": result.meta is None}
    if result.meta is not None:
        record.update(result.meta.record())
    else:
        record.update(epoch=None, global_step=None, metric=None, best_metric=None, bad_epochs=None,
                      fairness_counts=None)
    return record


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
