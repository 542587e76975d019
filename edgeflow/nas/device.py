"""An arch on a device: Vela's figures for it, and its EPE as deployed; computed once, cached in the run.

Device figures (cycles, inferences per second, SRAM, flash, operators on the NPU and on the CPU) come
from a full Vela compile of the arch's int8 TFLite model at the device's input size, for the device's
target (edgeflow/export/device.py). The int8 model Vela compiles carries the checkpoint's weights and
BN statistics as saved and is calibrated on the first FIGURE_CALIBRATION train samples: per-channel
int8 weights absorb each channel's BN scale, and Vela's cycles and memory depend on shapes and weights,
not on activation ranges, so neither recalibration nor a longer calibration changes the figures.

The figures of an arch are a function of (device target, Vela version, TensorFlow version, input size,
checkpoint, calibration samples): that is their key. They are appended, one complete checksummed JSON
line per arch, to RUN/device/<device>_<key>/figures.jsonl (key.json says what the key stands for),
where every later search, ranking and array element of the same key finds them; a line of another key
is never read. Computing them runs a process pool (a Vela compile is a subprocess, the int8 conversion
is TensorFlow's): each worker restores the supernet once and converts and compiles one arch at a time.

Deployed EPE (`DeployEvaluator`): the float32 EPE at the device's input size is the evaluation
protocol at that size (BN recalibrated there, the eval samples centre-cropped there), a ranking of its
own (RUN/rank/<checkpoint>_<H>x<W>/); the int8 EPE is that of the int8 model `edgeflow export` makes
for the arch at that size (recalibrated, calibrated on DEPLOY_CALIBRATION train samples), run by the
TFLite interpreter on the same eval batches. The int8 rows (int8.jsonl) and the models they were
measured on (int8/<code>.tflite) are kept in that ranking's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow import jobenv
from edgeflow.data.samples import DataError
from edgeflow.export import deploy
from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.nas import rank as rank_mod
from edgeflow.nas import results as results_mod
from edgeflow.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeflow.space.arch import parse_arch
from edgeflow.train.restore import RunHandle

DEVICE_DIR = "device"
FIGURES_FILE = "figures.jsonl"
INT8_FILE = "int8.jsonl"
INT8_DIR = "int8"
FIGURE_CALIBRATION = 8   # train samples calibrating the int8 model Vela compiles for the figures
DEPLOY_CALIBRATION = 32  # train samples calibrating the deployed int8 model (export's default)
BASELINE = "000021222"   # EdgeFlowNet's arch: the row every deployment report carries
FIGURES_METHOD = ("full Vela compile of the int8 TFLite model (checkpoint weights and BN statistics as saved, "
                  "calibrated on the first train samples, centre crop) at the device's input size")
INT8_METHOD = ("int8 TFLite model as `edgeflow export` makes it (BN recalibrated at the deployment size, "
               "calibrated on the first train samples), TFLite interpreter on the protocol's eval batches")


def tensorflow_version() -> str:
    """TensorFlow's version without importing it (its converter makes the int8 models)."""
    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import tensorflow as tf

    return str(tf.__version__)


# -- keyed, checksummed JSON lines ---------------------------------------------------------------------

def _crc(row: dict[str, Any]) -> str:
    return f"{zlib.crc32(json.dumps(row, sort_keys=True).encode('utf-8')):08x}"


@dataclass(frozen=True)
class KeyedLog:
    """An append-only file of JSON rows, one per arch and line, each with its key id and a CRC.

    Appended as results.csv is (one write under a lock, fsynced; a killed writer's fragment is ended),
    so many processes can share it; a torn or foreign-key line is skipped, never misread."""

    path: Path
    key: str

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        rows: dict[str, dict[str, Any]] = {}
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict) or row.get("key") != self.key:
                continue
            crc = row.pop("crc", None)
            if crc != _crc(row) or not isinstance(row.get("code"), str):
                continue
            rows.setdefault(row["code"], row)
        return rows

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "key": self.key}
        line = json.dumps({**row, "crc": _crc(row)}, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        results_mod.append_line(self.path, line.encode("utf-8"))
        return row


def _key_id(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _write_key(folder: Path, record: dict[str, Any]) -> None:
    if not (folder / rank_mod.KEY_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / rank_mod.KEY_FILE, record)


# -- device figures ------------------------------------------------------------------------------------

@dataclass
class FigurePlan:
    run: RunHandle              # the run at the device's input size (float32)
    device: device_mod.Device
    key: str
    record: dict[str, Any]
    folder: Path
    cached: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def log(self) -> KeyedLog:
        return KeyedLog(self.folder / FIGURES_FILE, self.key)


def prepare_figures(run: RunHandle, device: device_mod.Device, checkpoint: results_mod.Key) -> FigurePlan:
    """What the figures of `device` are keyed by for this run's checkpoint, and those already cached.
    Writes nothing; VelaMissing without Vela, DeviceError when the network cannot take the size."""
    vela_version = vela_mod.require()
    at = deploy.at_size(run, *device.input_size)
    count = min(FIGURE_CALIBRATION, len(at.splits.train))
    if count < 1:
        raise DataError("the train split has no valid sample at the device's input size: "
                        "nothing to calibrate the int8 model on")
    calibration = rank_mod._ids_digest(at.splits.train, count)
    parts = {"target": device.target_digest, "vela": vela_version, "tensorflow": tensorflow_version(),
             "checkpoint_digest": checkpoint.checkpoint_digest, "calibration": calibration, "count": count,
             "method": FIGURES_METHOD}
    key = _key_id(parts)
    record = {"key": key, "device": device.record(), "vela_version": vela_version,
              "tensorflow": parts["tensorflow"], "input_size": list(device.input_size),
              "checkpoint": {"prefix": checkpoint.checkpoint, "digest": checkpoint.checkpoint_digest,
                             "epoch": run.epoch},
              "int8_calibration": {"split": "train", "crop": "centre", "samples": count,
                                   "samples_digest": calibration},
              "method": FIGURES_METHOD}
    folder = run.paths.root / DEVICE_DIR / f"{device.name}_{key}"
    plan = FigurePlan(run=at, device=device, key=key, record=record, folder=folder)
    # Another device file of the same target (another name, other limits) has the same figures.
    for path in sorted((run.paths.root / DEVICE_DIR).glob(f"*_{key}/{FIGURES_FILE}")):
        for code, row in KeyedLog(path, key).read().items():
            plan.cached.setdefault(code, row)
    return plan


class _Compiler:
    """Makes an arch's int8 model from one restored supernet and compiles it with Vela."""

    def __init__(self, run: RunHandle, device: device_mod.Device, representative: Sequence[np.ndarray]) -> None:
        self.run, self.device, self.representative = run, device, list(representative)
        self.model = rank_mod.restore_checked(run)

    def __call__(self, code: str) -> dict[str, Any]:
        from edgeflow.export import formats
        from edgeflow.export.subnet import Subnet
        from edgeflow.export.weights import copy_from_supernet

        start = time.perf_counter()
        subnet = Subnet(parse_arch(code))
        copy_from_supernet(self.model, subnet)
        h, w = self.device.input_size
        model = formats.tflite_int8(formats.ServingModule(subnet, h, w), self.representative)
        converted = time.perf_counter()
        local = jobenv.node_local_dir()
        with tempfile.TemporaryDirectory(prefix="edgeflow-vela-", dir=local[0] if local else None) as tmp:
            path = Path(tmp) / f"{code}.tflite"
            path.write_bytes(model)
            report = vela_mod.compile_int8(path, Path(tmp) / "vela", target=self.device.vela_args())
        done = time.perf_counter()
        return {"code": code, **vela_mod.device_figures(report), "tflite_int8_bytes": len(model),
                "convert_seconds": converted - start, "vela_seconds": done - converted,
                "writer": rank_mod.writer_id(), "time": time.time()}


_WORKER: _Compiler | None = None


def _init_worker(run: RunHandle, device: device_mod.Device, representative: list[np.ndarray]) -> None:
    import signal

    # The parent decides when to stop (after the archs in flight); a GPU is no use to the converter.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from edgeflow.console import quiet_tensorflow

    quiet_tensorflow()
    global _WORKER
    _WORKER = _Compiler(run, device, representative)


def _compile_in_worker(code: str) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(code)


@dataclass
class FigureStats:
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0


class Figures:
    """The device figures of archs: from the cache, else computed (in a pool of `workers` processes) and
    appended to it. `stop` (a callable) is asked between archs: when it says so, what is in flight is
    finished and the rest left for the next run."""

    def __init__(self, plan: FigurePlan, workers: int = 1, log: Callable[[str], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"--workers: must be >= 1, got {workers}")
        self.plan, self.workers = plan, workers
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stats = FigureStats()
        self._pool: ProcessPoolExecutor | None = None
        self._local: _Compiler | None = None
        self._representative: list[np.ndarray] | None = None

    def __enter__(self) -> Figures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def cached(self, code: str) -> dict[str, Any] | None:
        return self.plan.cached.get(code)

    def _inputs(self) -> list[np.ndarray]:
        if self._representative is None:
            self._representative = deploy.representative_inputs(self.plan.run, FIGURE_CALIBRATION)
        return self._representative

    def _start(self) -> None:
        _write_key(self.plan.folder, self.plan.record)

    def ensure(self, codes: Iterable[str], stop: Callable[[], bool] | None = None) -> dict[str, dict[str, Any]]:
        """Figures of every code (cached, or computed now); fewer when `stop` said so midway."""
        codes = list(dict.fromkeys(codes))
        todo = [c for c in codes if c not in self.plan.cached]
        self.stats.reused += len(codes) - len(todo)
        if todo:
            self._start()
            started = time.perf_counter()
            if self.workers == 1 or len(todo) == 1:
                self._serial(todo, stop)
            else:
                self._parallel(todo, stop)
            self.stats.seconds += time.perf_counter() - started
        return {c: self.plan.cached[c] for c in codes if c in self.plan.cached}

    def _record(self, row: dict[str, Any]) -> None:
        row = self.plan.log.append(row)
        self.plan.cached[row["code"]] = row
        self.stats.computed += 1
        self.log(f"{self.plan.device.name}: {row['code']} {row['vela_inference_ms']:.2f} ms "
                 f"({row['vela_fps']:.2f}/s), SRAM {row['vela_sram_kib']:.1f} KiB, flash "
                 f"{row['vela_flash_kib']:.1f} KiB, {row['vela_cpu_ops']} CPU operators")

    def _serial(self, todo: list[str], stop: Callable[[], bool] | None) -> None:
        if self._local is None:
            self._local = _Compiler(self.plan.run, self.plan.device, self._inputs())
        for code in todo:
            self._record(self._local(code))
            if stop is not None and stop():
                return

    def _parallel(self, todo: list[str], stop: Callable[[], bool] | None) -> None:
        if self._pool is None:
            import multiprocessing

            run = replace(self.plan.run, _splits=None)  # the workers need the weights, not the sample lists
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(run, self.plan.device, self._inputs()))
        pending = list(todo)
        running: dict[Future[dict[str, Any]], str] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers and not (stop is not None and stop()):
                    code = pending.pop(0)
                    running[self._pool.submit(_compile_in_worker, code)] = code
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    self._record(future.result())
        except BaseException:
            for future in running:
                future.cancel()
            raise


def violations_text(violations: Sequence[device_mod.Violation]) -> str:
    return "; ".join(v.text() for v in violations)


# -- deployed EPE --------------------------------------------------------------------------------------

def deploy_name(key: results_mod.Key, size: tuple[int, int]) -> str:
    return f"{key.checkpoint}_{size[0]}x{size[1]}"


@dataclass
class DeployPlan:
    run: RunHandle               # at the deployment size
    key: results_mod.Key         # the checkpoint and the protocol at that size
    key_record: dict[str, Any]
    folder: Path                 # RUN/rank/<checkpoint>_<H>x<W>[_<protocol>]
    int8_key: str
    int8_record: dict[str, Any]

    @property
    def int8_log(self) -> KeyedLog:
        return KeyedLog(self.folder / INT8_FILE, self.int8_key)


def prepare_deploy(run: RunHandle, size: tuple[int, int], name: str | None = None) -> DeployPlan:
    """The protocol at the deployment size and where its results go; writes nothing."""
    at = deploy.at_size(run, *size)
    key, record = rank_mod.key_for(at)
    if name is None:
        name = deploy_name(key, size)
        try:
            rank_mod.check_key(run.paths.root / rank_mod.RANK_DIR / name, key)
        except rank_mod.RankError:  # that folder holds another protocol at this size
            name = f"{name}_{key.protocol}"
    folder = run.paths.root / rank_mod.RANK_DIR / name
    rank_mod.check_key(folder, key)
    count = min(DEPLOY_CALIBRATION, len(at.splits.train))
    calibration = rank_mod._ids_digest(at.splits.train, count)
    parts = {"checkpoint_digest": key.checkpoint_digest, "protocol": key.protocol, "calibration": calibration,
             "count": count, "tensorflow": tensorflow_version(), "method": INT8_METHOD}
    int8_key = _key_id(parts)
    int8_record = {"key": int8_key, **parts, "int8_calibration": {"split": "train", "crop": "centre",
                                                                  "samples": count, "samples_digest": calibration}}
    return DeployPlan(at, key, record, folder, int8_key, int8_record)


class DeployEvaluator:
    """The float32 EPE of archs at the deployment size and the EPE of their int8 models, cached."""

    def __init__(self, plan: DeployPlan, results_files: Sequence[Path] = (),
                 log: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        files = [plan.folder / results_mod.RESULTS_CSV, *results_files]
        self.rows = results_mod.read_many(files, plan.key)
        self.int8 = plan.int8_log.read()
        self._evaluator: Any = None
        self._representative: list[np.ndarray] | None = None
        self.computed = 0

    def _ready(self) -> Any:
        if self._evaluator is None:
            self._evaluator = rank_mod.evaluator_for(self.plan.run, self.plan.key)
            rank_mod.write_key(self.plan.folder, self.plan.key_record)
            results_mod.ensure_file(self.plan.folder / results_mod.RESULTS_CSV)
        return self._evaluator

    def float_row(self, code: str) -> dict[str, Any]:
        """The protocol's row for `code` at the deployment size (float32, BN recalibrated there)."""
        if code not in self.rows:
            row = self._ready()(code, self.plan.key, rank_mod.writer_id())
            results_mod.append(self.plan.folder / results_mod.RESULTS_CSV, row)
            self.rows[code] = row
            self.computed += 1
            self.log(f"deployment size {self.plan.run.cfg.data.input_height}x{self.plan.run.cfg.data.input_width}: "
                     f"{code} float32 EPE {row['epe_mean']:.4f}")
        return self.rows[code]

    def int8_row(self, code: str) -> dict[str, Any]:
        """The int8 model's EPE for `code` on the same eval batches; the model is kept beside it."""
        if code in self.int8:
            return self.int8[code]
        evaluator = self._ready()
        if self._representative is None:
            self._representative = deploy.representative_inputs(self.plan.run, DEPLOY_CALIBRATION)
        start = time.perf_counter()
        model = deploy.int8_model(evaluator.model, self.plan.run.cfg, parse_arch(code), evaluator.recal,
                                  self._representative)
        epes = np.asarray(deploy.tflite_epes(model, evaluator.evals), dtype=np.float64)
        path = self.plan.folder / INT8_DIR / f"{code}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model)
        if not (self.plan.folder / f"int8_{rank_mod.KEY_FILE}").exists():
            atomic_write_json(self.plan.folder / f"int8_{rank_mod.KEY_FILE}", self.plan.int8_record)
        row = self.plan.int8_log.append({
            "code": code, "epe_int8": float(np.mean(epes)), "epe_int8_median": float(np.median(epes)),
            "epe_int8_p90": float(np.percentile(epes, 90)), "int8_batches": len(epes),
            "tflite": f"{INT8_DIR}/{code}.tflite", "tflite_sha256": hashlib.sha256(model).hexdigest(),
            "seconds": time.perf_counter() - start, "writer": rank_mod.writer_id(), "time": time.time()})
        self.int8[code] = row
        self.computed += 1
        self.log(f"int8 at the deployment size: {code} EPE {row['epe_int8']:.4f}")
        return row


# -- the deployment report ------------------------------------------------------------------------------

REPORT_FILE = "deploy_report.csv"
REPORT_COLUMNS = ("code", "role", "epe_train_f32", "epe_deploy_f32", "epe_deploy_int8", "int8_increase",
                  "vela_inference_ms", "vela_fps", "vela_cycles", "vela_sram_kib", "vela_flash_kib",
                  "vela_npu_ops", "vela_cpu_ops", "feasible", "violated")


def report_rows(codes: Sequence[str], train_rows: dict[str, dict[str, Any]], figures: dict[str, dict[str, Any]],
                deployed: DeployEvaluator, limits: device_mod.Limits,
                baseline: str = BASELINE) -> list[dict[str, Any]]:
    """One row per arch of `codes` (the front) and the baseline: float32 EPE at the training size, float32
    and int8 EPE at the deployment size, the device figures, and the limits it breaks."""
    out = []
    for code in [*codes, *([baseline] if baseline not in codes else [])]:
        f32 = deployed.float_row(code)
        q = deployed.int8_row(code)
        fig = figures[code]
        broken = limits.violations(fig)
        role = "front" if code in codes else "baseline"
        if code == baseline and code in codes:
            role = "front, baseline"
        out.append({"code": code, "role": role, "epe_train_f32": train_rows[code]["epe_mean"],
                    "epe_deploy_f32": f32["epe_mean"], "epe_deploy_int8": q["epe_int8"],
                    "int8_increase": q["epe_int8"] - f32["epe_mean"],
                    **{k: fig[k] for k in REPORT_COLUMNS if k.startswith("vela_")},
                    "feasible": int(not broken), "violated": violations_text(broken)})
    return out


def write_report(folder: Path, rows: Sequence[dict[str, Any]], record: dict[str, Any]) -> Path:
    """deploy_report.csv (and its provenance, deploy_report.json) in `folder`, replaced atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(folder / REPORT_FILE, buf.getvalue())
    atomic_write_json(folder / REPORT_FILE.replace(".csv", ".json"), {**record, "rows": list(rows)})
    return folder / REPORT_FILE


def report_record(figures: FigurePlan, deployed: DeployPlan, train_key: results_mod.Key) -> dict[str, Any]:
    """What every figure of a deployment report was computed on."""
    return {"columns": {
        "epe_train_f32": "float32 EPE of the supernet at the training size (the run's evaluation protocol)",
        "epe_deploy_f32": "float32 EPE of the supernet at the deployment size, BN recalibrated there",
        "epe_deploy_int8": INT8_METHOD,
        "vela_*": FIGURES_METHOD},
        "training_protocol": train_key.protocol, "checkpoint_digest": train_key.checkpoint_digest,
        "deploy_protocol": deployed.key.protocol, "deploy_protocol_record": deployed.key_record["protocol"],
        "int8": deployed.int8_record, "device_figures": figures.record}


def default_workers() -> int:
    return jobenv.usable_cpus()


def training_rows(run: RunHandle, key: results_mod.Key, key_record: dict[str, Any], codes: Sequence[str],
                  files: Sequence[Path], log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """The protocol's rows of `codes` at the training size: from the run's results, the missing ones
    evaluated now into RUN/rank/<checkpoint>/ (the default ranking folder of that key)."""
    rows = results_mod.read_many(files, key)
    missing = [c for c in codes if c not in rows]
    if missing:
        folder = run.paths.root / rank_mod.RANK_DIR / key.checkpoint
        try:
            rank_mod.check_key(folder, key)
        except rank_mod.RankError:
            folder = folder.with_name(f"{key.checkpoint}_{key.protocol}")
            rank_mod.check_key(folder, key)
        evaluate = rank_mod.evaluator_for(run, key)
        rank_mod.write_key(folder, key_record)
        results_mod.ensure_file(folder / results_mod.RESULTS_CSV)
        for code in missing:
            rows[code] = evaluate(code, key, rank_mod.writer_id())
            results_mod.append(folder / results_mod.RESULTS_CSV, rows[code])
            if log is not None:
                log(f"training size: {code} EPE {rows[code]['epe_mean']:.4f}")
    return {c: rows[c] for c in codes}


def deploy_front(rows: dict[str, dict[str, Any]], figures: dict[str, dict[str, Any]],
                 limits: device_mod.Limits) -> list[str]:
    """The archs of `rows` that meet the limits and are non-dominated in (EPE, Vela latency), by EPE."""
    feasible = [c for c in rows if c in figures and not limits.violations(figures[c])]
    if not feasible:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.array([[rows[c]["epe_mean"], figures[c]["vela_inference_ms"]] for c in feasible], dtype=np.float64)
    index = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted((feasible[i] for i in index), key=lambda c: (rows[c]["epe_mean"], c))
