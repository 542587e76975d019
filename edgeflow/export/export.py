"""`edgeflow export`: one arch of a run's checkpoint as deployment files, checked against the supernet.

Order: every input is checked first (arch code, input size, run, checkpoint, data, Vela, --out) with
no TensorFlow loaded, so bad input costs a second and writes nothing. Then the supernet is restored,
the arch's BN statistics recalibrated as evaluation does, the subnet built and its weights copied,
and the files written into a hidden folder beside --out (edgeflow/rundir/staging.py). Once everything,
export.json last, is written, --out is pointed at it with one atomic link swap: --out is absent, the
old export or the new one, never a partial one. A failure, Ctrl-C or SIGTERM removes the hidden folder;
what a SIGKILL left is removed by the next export to that --out. An existing --out that is not such a
link (someone's folder, even an empty one) is refused and left alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeflow.config import eval_bn_mode
from edgeflow.data.samples import Sample, sort_key
from edgeflow.export import deploy
from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.rundir import atomic_write_bytes, atomic_write_json, read_run, staging
from edgeflow.space.arch import format_arch, parse_arch
from edgeflow.space.cost import FLOPS_CONVENTION, PARAMS_CONVENTION, arch_info
from edgeflow.train.restore import RunHandle, check_standalone_archs, open_run

EXPORT_FILE = "export.json"
SAVED_MODEL_DIR = "saved_model"
TFLITE_FLOAT = "model_float32.tflite"
TFLITE_INT8 = "model_int8.tflite"
VELA_DIR = "vela"
# --out is a link to `.NAME.export-HOST-PID-TOKEN` beside it; `.NAME.partial-PID` are older versions' leftovers.
STAGE_KIND = "export"
OLD_STAGE_KINDS = ("partial",)
# Float formats must match the supernet to float32 rounding: |diff| <= ATOL + RTOL * max|supernet output|.
FLOAT_ATOL, FLOAT_RTOL = 1e-4, 1e-4
# Down-sampling is by 16 (four stride-2 convs): at least 16x16. Any side from there works (a deployment
# size such as 157x203 too), though training asks for even sides.
MIN_SIDE = device_mod.MIN_SIDE


class ExportError(ValueError):
    """Bad input to an export: the message says which option and why."""


@dataclass
class ExportRequest:
    run: Path
    arch: str
    out: Path
    checkpoint: str = "best"
    height: int | None = None
    width: int | None = None
    vela: bool = False
    vela_config: str = vela_mod.DEFAULT_ACCELERATOR
    calibration_samples: int = 32
    overrides: list[str] = field(default_factory=list)
    split: str | None = None  # the evaluation split the agreement is measured on (default: the one selected on)
    device: str | None = None  # a device file or name: its input size and Vela target


@dataclass
class Prepared:
    request: ExportRequest
    run: RunHandle
    arch: tuple[int, ...]
    code: str
    height: int
    width: int
    vela_version: str | None
    device: device_mod.Device | None = None


def check_input_size(height: int, width: int) -> None:
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ExportError(f"--height/--width {height}x{width}: the network needs at least "
                          f"{MIN_SIDE}x{MIN_SIDE} (it down-samples by 16)")


def check_out(out: Path) -> None:
    """--out must be absent or an export edgeflow made (its link): anything else is never replaced."""
    if not out.name or out.name in (".", ".."):
        raise ExportError(f"--out {out}: name the export's own folder, e.g. exports/baseline")
    if os.path.lexists(out) and staging.linked_version(out, STAGE_KIND) is None:
        raise ExportError(f"--out {out} exists and is not an export made by edgeflow; it is left alone: "
                          f"choose a path that does not exist yet (export creates it)")


def prepare(request: ExportRequest) -> Prepared:
    """Check every input without TensorFlow; raises ExportError, ConfigError, CheckpointError,
    DataError or VelaError with a one-line reason."""
    try:
        arch = parse_arch(request.arch)
    except ValueError as exc:
        raise ExportError(f"--arch: {exc}") from None
    if request.calibration_samples < 1:
        raise ExportError(f"--calibration-samples must be >= 1, got {request.calibration_samples}")
    check_out(request.out)
    device = device_mod.load(request.device) if request.device else None
    run = open_run(request.run, request.checkpoint, request.overrides)
    check_standalone_archs(run.cfg, [format_arch(arch)])
    default_h, default_w = device.input_size if device else (run.cfg.data.input_height, run.cfg.data.input_width)
    height = request.height or default_h
    width = request.width or default_w
    check_input_size(height, width)
    # The export is float32 whatever the run trained in; the eval batches follow the export's size.
    run = deploy.at_size(run, height, width)
    vela_version = vela_mod.require() if request.vela or device else None
    if request.vela and request.vela_config not in vela_mod.ACCELERATORS:
        raise ExportError(f"--vela-config must be one of {', '.join(vela_mod.ACCELERATORS)}, "
                          f"got {request.vela_config!r}")
    run.eval_split(request.split)  # scans the data now, so a data error stops the export before any work
    return Prepared(request=request, run=run, arch=arch, code=format_arch(arch), height=height, width=width,
                    vela_version=vela_version, device=device)


def _first_ids(samples: list[Sample], count: int) -> list[str]:
    # eval_dataset takes the first samples in this order
    return [s.sample_id for s in sorted(samples, key=lambda s: sort_key(s.sample_id))[:count]]


def _within(stats: dict[str, Any], scale: float) -> bool:
    return stats["max_abs_diff"] <= FLOAT_ATOL + FLOAT_RTOL * scale


def export(request: ExportRequest, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the export; returns what export.json holds. `--out` appears only when everything worked."""
    prep = prepare(request)
    out = request.out
    with staging.staged(out, STAGE_KIND, cleanup=OLD_STAGE_KINDS) as tmp:
        record = _write_all(prep, tmp, log)
        atomic_write_json(tmp / EXPORT_FILE, record)
        staging.settle(tmp)
        try:
            staging.publish_link(tmp, out, STAGE_KIND)
        except FileExistsError as exc:
            raise ExportError(f"--out {exc}") from None
    log(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))}; a link to {os.readlink(out)} "
        f"beside it)")
    return record


def _write_all(prep: Prepared, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    from edgeflow.data.pipeline import eval_dataset
    from edgeflow.export import formats, parity
    from edgeflow.export.subnet import Subnet
    from edgeflow.export.weights import copy_from_supernet
    from edgeflow.train.evaluate import Evaluator, datasets

    run, cfg, arch, code = prep.run, prep.run.cfg, prep.arch, prep.code
    splits = run.splits
    started = time.time()
    log(f"export {code} at {prep.height}x{prep.width} from {run.pointer.prefix} (epoch {run.epoch})")

    # A supernet, or a stand-alone run's net (train.arch): the source of the weights and the reference.
    supernet = run.build_model()
    # The agreement is measured on the evaluation split's samples, cropped to the export's input size.
    split = run.eval_split(prep.request.split)
    recal, evals = datasets(cfg, splits.train, split.samples)
    standalone = bool(cfg.train.arch)
    recal_batches = 0
    if not standalone:  # a stand-alone net keeps its own moving statistics, as its evaluation does
        # The evaluator's own recalibration (same batches, same momentum rule), run eagerly: tracing the
        # supernet's every branch costs far more than the few batches, and eager switch_case runs only
        # the selected branch with the same kernels.
        tf.config.run_functions_eagerly(True)
        try:
            recal_batches = Evaluator(supernet, cfg).recalibrate(arch, recal)
        finally:
            tf.config.run_functions_eagerly(False)
        if recal_batches == 0:
            raise ExportError("BN recalibration got no train batch")
    subnet = Subnet(arch)
    copied = copy_from_supernet(supernet, subnet)
    reference = parity.supernet_reference(supernet, arch, evals)
    scale = max(float(np.max(np.abs(np.concatenate([b.flow.ravel(), b.uncertainty.ravel()]))))
                for b in reference)
    info = arch_info(code, prep.height, prep.width)
    params = int(sum(int(np.prod(v.shape)) for v in subnet.trainable_variables))
    if params != info["params_active"]:
        raise AssertionError(f"subnet has {params} parameters, the cost model says {info['params_active']}")
    bn_note = (f"recalibrated BN on {recal_batches} train batches" if not standalone
               else "BN on the stand-alone net's own moving statistics")
    log(f"{bn_note}; copied {copied} variables; {'stand-alone' if standalone else 'supernet'} EPE "
        f"{parity.supernet_epe(reference):.4f}")

    module = formats.ServingModule(subnet, prep.height, prep.width)
    formats.write_saved_model(module, tmp / SAVED_MODEL_DIR)
    loaded = tf.saved_model.load(str(tmp / SAVED_MODEL_DIR))
    agreement: dict[str, Any] = {
        "saved_model": parity.compare(reference, parity.saved_model_predict(loaded, formats.NORMALIZED)),
        "saved_model_frames": parity.compare(reference, parity.saved_model_predict(loaded, formats.SERVING)),
    }
    log("wrote the SavedModel")

    float_model = formats.tflite_float(module)
    atomic_write_bytes(tmp / TFLITE_FLOAT, float_model)
    agreement["tflite_float32"] = parity.compare(reference, parity.tflite_predict(float_model))
    log("wrote the float32 TFLite model")

    n_rep = min(prep.request.calibration_samples, len(splits.train))
    representative = [x.numpy() for x, _ in eval_dataset(splits.train, cfg, batch_size=1, num_batches=n_rep)]
    int8_model = formats.tflite_int8(module, representative)
    atomic_write_bytes(tmp / TFLITE_INT8, int8_model)
    agreement["tflite_int8"] = parity.compare(reference, parity.tflite_predict(int8_model))
    log("wrote the int8 TFLite model")

    for name in ("saved_model", "saved_model_frames", "tflite_float32"):
        agreement[name]["within_tolerance"] = _within(agreement[name], scale)
    supernet_epe = parity.supernet_epe(reference)
    agreement["tflite_int8"]["supernet_epe"] = supernet_epe
    agreement["tflite_int8"]["epe_increase"] = agreement["tflite_int8"]["epe"] - supernet_epe

    vela_report = None
    if prep.request.vela or prep.device:
        vela_report = vela_mod.compile_int8(tmp / TFLITE_INT8, tmp / VELA_DIR, prep.request.vela_config,
                                            target=prep.device.vela_args() if prep.device else None)
        vela_report["compiled_model"] = f"{VELA_DIR}/{vela_report['compiled_model']}"
        vela_report["summary_csv"] = f"{VELA_DIR}/{vela_report['summary_csv']}"
        target = prep.device.name if prep.device else prep.request.vela_config
        log(f"Vela {target}: SRAM {vela_report['sram_used_kib']} KiB, flash "
            f"{vela_report['flash_used_kib']} KiB, {vela_report['inferences_per_second']:.1f} inferences/s, "
            f"{vela_report['cpu_operators']} CPU operators")

    run_json = read_run(run.paths.run) or {}
    eval_ids = _first_ids(split.samples, cfg.eval.batch_size * cfg.eval.eval_batches_per_arch)
    return {
        "arch": code,
        "blocks": info["blocks"],
        "input_size": [prep.height, prep.width],
        "output_size": info["output_shapes"]["1/1"][:2],
        "params": params,
        "params_convention": PARAMS_CONVENTION,
        "flops": info["flops"],
        "flops_convention": FLOPS_CONVENTION,
        "source": {
            "run": str(run.paths.root.resolve()),
            "checkpoint": run.checkpoint,
            "checkpoint_prefix": str(run.pointer.prefix.resolve()),
            "epoch": run.epoch,
            "run_signature": run_json.get("signature"),
            "code_version": run_json.get("code_version"),
        },
        # A stand-alone run's net: no recalibration, its own moving statistics (bn_mode moving_stats).
        "bn_recalibration": None if standalone else {
            "split": "train", "batches": recal_batches, "batch_size": cfg.eval.batch_size,
            "samples": _first_ids(splits.train, cfg.eval.batch_size * cfg.eval.bn_recal_batches),
            "momentum_rule": "batch k (from 0) uses momentum k/(k+1): the exact average, as evaluation",
            "dtype": "float32",
        },
        "bn_mode": eval_bn_mode(cfg),
        "standalone": standalone,
        "int8_calibration": {"split": "train", "crop": "centre", "samples": _first_ids(splits.train, n_rep)},
        "eval_set": {"split": split.record.get("source") or split.name, "split_name": split.name,
                     "batch_size": cfg.eval.batch_size,
                     "batches": len(reference), "samples": eval_ids[:agreement["saved_model"]["samples"]]},
        "supernet_epe": supernet_epe,
        "float_tolerance": {"atol": FLOAT_ATOL, "rtol": FLOAT_RTOL, "output_scale": scale},
        "agreement": agreement,
        "files": {"saved_model": SAVED_MODEL_DIR, "tflite_float32": TFLITE_FLOAT, "tflite_int8": TFLITE_INT8},
        "signatures": {
            formats.SERVING: {"inputs": {"frame0": "uint8 [batch, h>=H, w>=W, 3] BGR",
                                         "frame1": "uint8 [batch, h>=H, w>=W, 3] BGR"},
                              "preprocessing": "centre crop to HxW, concat(frame0, frame1), v/127.5 - 1"},
            formats.NORMALIZED: {"inputs": {"x": f"float32 [batch, {prep.height}, {prep.width}, 6]"}},
            "outputs": {"flow": "float32 [batch, h1, w1, 2] (u, v) in input pixels",
                        "uncertainty": "float32 [batch, h1, w1, 2]; "
                                       "error scale = max(softplus(u + 1e-3), 1e-3)"},
            "tflite": "input x as `normalized` with batch 1; int8: quantised input and outputs",
        },
        "vela": vela_report,
        "device": prep.device.record() if prep.device else None,
        "tensorflow": tf.__version__,
        "seconds": round(time.time() - started, 1),
        "written": time.time(),
    }
