"""Pool evaluation of protocol §5 with real BN recalibration.

Per arch: snapshot every BN moving statistic, recalibrate with fixed train batches in training mode
(batch k uses momentum k/(k+1): an exact running average whose first batch replaces the old values),
evaluate in inference mode on the fixed eval batches, then restore the snapshot. Evaluation therefore
leaves every variable exactly as it found it, and the same weights always give the same numbers.
With eval.bn_mode "batch_stats" (the original trainer's protocol) there is no recalibration: BN runs
in training mode on each eval batch and no moving statistic is updated. A stand-alone net (`train.arch`)
is evaluated in inference mode on its own moving statistics ("moving_stats"), as it is deployed: they
were estimated for this one arch by its training, which is what recalibration recreates for a supernet.

Speed without changing a number: the fixed batches are decoded once (`datasets(cache=True)`, the
trainer and `rank` use it) and kept on the device when they fit, as uint8 frames mapped to [-1, 1]
where they are used; the snapshot of the BN statistics stays on the device; an arch's batch EPEs are
read back once, after its last batch, instead of after every batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow import progress
from edgeflow.config import STANDALONE_BN_MODE, Config, eval_bn_mode
from edgeflow.data.pipeline import eval_dataset, to_unit_range
from edgeflow.space.arch import NUM_BLOCKS, format_arch, parse_arch
from edgeflow.train import loss as loss_lib


@dataclass(frozen=True)
class EvalResult:
    arch_epe: dict[str, float]
    mean_epe: float
    std_epe: float  # population std over the pool
    median_epe: float
    p90_epe: float

    def fields(self) -> dict[str, Any]:
        return {"mean_epe": self.mean_epe, "std_epe": self.std_epe, "median_epe": self.median_epe,
                "p90_epe": self.p90_epe, "arch_epe": dict(self.arch_epe)}


def summarize(arch_epe: dict[str, float]) -> EvalResult:
    values = np.asarray(list(arch_epe.values()), dtype=np.float64)
    return EvalResult(arch_epe=dict(arch_epe), mean_epe=float(values.mean()), std_epe=float(values.std()),
                      median_epe=float(np.median(values)), p90_epe=float(np.percentile(values, 90)))


class Evaluator:
    def __init__(self, model: tf.Module, cfg: Config) -> None:
        self.model = model
        self.bn_variables = list(model.bn_moving_variables)
        self.last_seconds = (0.0, 0.0)  # (BN recalibration, evaluation) of the last arch
        self.progress_seconds = cfg.runtime.progress_seconds
        h, w = cfg.data.input_height, cfg.data.input_width
        x_spec = tf.TensorSpec([None, h, w, 6], tf.float32)
        arch_spec = tf.TensorSpec([NUM_BLOCKS], tf.int32)
        self._recal = tf.function(self._recal_batch, input_signature=[x_spec, arch_spec, tf.TensorSpec([], tf.float32)])
        # eval.bn_mode "batch_stats": the original trainer's protocol, compared with its logged metric;
        # "moving_stats": a stand-alone net's own moving statistics (no recalibration).
        self.bn_mode = eval_bn_mode(cfg)
        # One traced function per eval size (an evaluation split may have its own, e.g. Sintel's 416x1024).
        self._epe_fns: dict[tuple[str, int, int], Any] = {}
        self._epe = self._epe_for("recalibrated", h, w)
        self._epe_bs = self._epe_for("batch_stats", h, w)

    def _epe_for(self, mode: str, h: int, w: int) -> Any:
        key = (mode, int(h), int(w))
        if key not in self._epe_fns:
            spec = [tf.TensorSpec([None, h, w, 6], tf.float32), tf.TensorSpec([None, h, w, 2], tf.float32),
                    tf.TensorSpec([NUM_BLOCKS], tf.int32)]
            fn = self._epe_batch if mode == "recalibrated" else self._epe_batch_stats_batch
            self._epe_fns[key] = tf.function(fn, input_signature=spec)
        return self._epe_fns[key]

    def _recal_batch(self, x: tf.Tensor, arch: tf.Tensor, momentum: tf.Tensor) -> tf.Tensor:
        self.model(x, arch, training=True, bn_momentum=momentum)
        return tf.constant(0)

    def _epe_batch(self, x: tf.Tensor, flow: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        # The model runs in its compute dtype (float16 under mixed precision) but returns float32
        # outputs, so the EPE is computed in float32 and averaged over batches in float64 below.
        return tf.cast(loss_lib.epe(self.model(x, arch, training=False), flow), tf.float32)

    def _epe_batch_stats_batch(self, x: tf.Tensor, flow: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        # Training-mode BN normalises by this batch's statistics; momentum None leaves the moving ones alone.
        return tf.cast(loss_lib.epe(self.model(x, arch, training=True, bn_momentum=None), flow), tf.float32)

    def batch_stats_epes(self, arch: Sequence[int], eval_batches: Iterable) -> list[float]:
        """The EPE of each eval batch with BN on that batch's statistics (no recalibration, no update)."""
        arch_t = tf.constant(list(arch), tf.int32)
        epes = _read_all([self._epe_for("batch_stats", *x.shape[1:3])(x, flow, arch_t) for x, flow in eval_batches])
        if not epes:
            raise ValueError("evaluation got no eval batch")
        return epes

    def moving_stats_epes(self, arch: Sequence[int], eval_batches: Iterable) -> list[float]:
        """The EPE of each eval batch in inference mode on the model's own moving statistics, as they are
        (a stand-alone net: what it was trained to and is deployed with; nothing is changed)."""
        arch_t = tf.constant(list(arch), tf.int32)
        epes = _read_all([self._epe_for("recalibrated", *x.shape[1:3])(x, flow, arch_t) for x, flow in eval_batches])
        if not epes:
            raise ValueError("evaluation got no eval batch")
        return epes

    def recalibrate(self, arch: Sequence[int], batches: Iterable) -> int:
        """Replace the moving statistics the arch uses by the exact average over `batches`."""
        arch_t = tf.constant(list(arch), tf.int32)
        count = 0
        for k, (x, _) in enumerate(batches):
            self._recal(x, arch_t, tf.constant(k / (k + 1), tf.float32))
            count += 1
        return count

    def arch_epe(self, arch: Sequence[int], recal_batches: Iterable, eval_batches: Iterable,
                 bn_mode: str | None = None) -> float:
        mode = bn_mode or self.bn_mode
        if mode == "batch_stats":
            return float(np.mean(self.batch_stats_epes(arch, eval_batches)))
        if mode == STANDALONE_BN_MODE:
            return float(np.mean(self.moving_stats_epes(arch, eval_batches)))
        return float(np.mean(self.batch_epes(arch, recal_batches, eval_batches)))

    def batch_epes(self, arch: Sequence[int], recal_batches: Iterable, eval_batches: Iterable) -> list[float]:
        """The EPE of each eval batch after recalibration (their mean is `arch_epe`); the seconds spent
        recalibrating and evaluating are left in `last_seconds` for benchmarks and ETAs."""
        return self.split_epes(arch, recal_batches, {"": eval_batches})[""]

    def split_epes(self, arch: Sequence[int], recal_batches: Iterable,
                   eval_batches: dict[str, Iterable]) -> dict[str, list[float]]:
        """`batch_epes` on several evaluation splits after one recalibration, by split name."""
        # Read values are immutable: assigning the variables later leaves this snapshot as it was.
        snapshot = [v.read_value() for v in self.bn_variables]
        try:
            start = time.perf_counter()
            if self.recalibrate(arch, recal_batches) == 0:
                raise ValueError("BN recalibration got no train batch")
            recal_done = time.perf_counter()
            arch_t = tf.constant(list(arch), tf.int32)
            out = {name: _read_all([self._epe_for("recalibrated", *x.shape[1:3])(x, flow, arch_t)
                                    for x, flow in batches])
                   for name, batches in eval_batches.items()}
            # (the recalibration's time is only queued work until the EPEs are read: split by launch)
            self.last_seconds = (recal_done - start, time.perf_counter() - recal_done)
        finally:
            for var, saved in zip(self.bn_variables, snapshot, strict=True):
                var.assign(saved)
        if not all(out.values()):
            raise ValueError("evaluation got no eval batch")
        return out

    def evaluate(self, codes: Sequence[str], recal_batches: Iterable, eval_batches: Iterable,
                 bn_mode: str | None = None) -> EvalResult:
        """EPE of every arch in `codes` (BN per `bn_mode`, default eval.bn_mode); the batch iterables
        are re-iterated once per arch."""
        results = {}
        with progress.Reporter(f"evaluating {len(codes)} archs", len(codes), unit="arch",
                               every_seconds=self.progress_seconds) as bar:
            for code in codes:
                epe = self.arch_epe(parse_arch(code), recal_batches, eval_batches, bn_mode)
                results[format_arch(code)] = epe
                bar.update(epe=epe)
        return summarize(results)


    def evaluate_splits(self, codes: Sequence[str], recal_batches: Iterable, eval_batches: dict[str, Iterable],
                        bn_mode: str | None = None) -> dict[str, EvalResult]:
        """`evaluate` on several evaluation splits, one recalibration per arch for all of them."""
        results: dict[str, dict[str, float]] = {name: {} for name in eval_batches}
        mode = bn_mode or self.bn_mode
        with progress.Reporter(f"evaluating {len(codes)} archs on {len(eval_batches)} splits", len(codes),
                               unit="arch", every_seconds=self.progress_seconds) as bar:
            for code in codes:
                arch = parse_arch(code)
                if mode == "batch_stats":
                    epes = {name: self.batch_stats_epes(arch, batches) for name, batches in eval_batches.items()}
                elif mode == STANDALONE_BN_MODE:
                    epes = {name: self.moving_stats_epes(arch, batches) for name, batches in eval_batches.items()}
                else:
                    epes = self.split_epes(arch, recal_batches, eval_batches)
                for name, values in epes.items():
                    results[name][format_arch(code)] = float(np.mean(values))
                bar.update()
        return {name: summarize(values) for name, values in results.items()}


def datasets(cfg: Config, train_samples: list, eval_samples: list, cache: bool = False, *,
             size: tuple[int, int] | None = None, batches: int | None = None) -> tuple[Any, Any]:
    """The fixed recalibration batches (train split, centre crop) and the fixed eval batches (of an
    evaluation split's `size` and number of `batches`: default the input size and eval_batches_per_arch).

    `cache=True` decodes them once and keeps them (`CachedBatches`: on the device when they fit), for
    loops that go over them many times (training's evaluations, ranking many archs); without it they
    are tf.data datasets, decoded on every pass."""
    def make(samples: list, num_batches: int, crop: tuple[int, int] | None = None) -> Any:
        dataset = eval_dataset(samples, cfg, batch_size=cfg.eval.batch_size, num_batches=num_batches,
                               size=crop, normalise=not cache)
        return CachedBatches(dataset) if cache else dataset

    return (make(train_samples, cfg.eval.bn_recal_batches),
            make(eval_samples, batches or cfg.eval.eval_batches_per_arch, size))


# Cached evaluation batches stay on the GPU up to this size (uint8 frames and float32 flow: the
# production protocol's 896 samples at 180x240 take 0.54 GB); beyond it they stay in host memory.
DEVICE_CACHE_BYTES = 4 << 30


class CachedBatches:
    """The batches of an evaluation dataset (uint8 frames), read once; iterating gives (x in [-1, 1], flow)
    as the uncached dataset does, mapped on the device each time (one small kernel per batch)."""

    def __init__(self, dataset: Iterable) -> None:
        items = [(x, flow) for x, flow in dataset]
        self.nbytes = sum(int(x.shape.num_elements()) * x.dtype.size + int(f.shape.num_elements()) * f.dtype.size
                          for x, f in items)
        gpus = tf.config.list_logical_devices("GPU")
        self.device = gpus[0].name if gpus and self.nbytes <= DEVICE_CACHE_BYTES else "/CPU:0"
        if self.device != "/CPU:0":
            with tf.device(self.device):
                items = [(tf.identity(x), tf.identity(f)) for x, f in items]
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
        for x, flow in self.items:
            with tf.device(self.device):
                yield (to_unit_range(x) if x.dtype == tf.uint8 else x), flow


def _read_all(values: list[tf.Tensor]) -> list[float]:
    """Per-batch results as floats, read back from the device in one go."""
    return [float(v) for v in tf.stack(values).numpy()] if values else []


def split_dataset(cfg: Config, split: Any, cache: bool = False) -> Any:
    """The fixed eval batches of an evaluation split (edgeflow.data.samples.EvalSplit); `cache` as in
    `datasets`."""
    dataset = eval_dataset(split.samples, cfg, batch_size=cfg.eval.batch_size,
                           num_batches=split.num_batches(cfg.eval.batch_size), size=split.size, normalise=not cache)
    return CachedBatches(dataset) if cache else dataset


def zero_flow_epe(model: tf.Module, eval_batches: Iterable, arch: Sequence[int] = (0,) * NUM_BLOCKS) -> float:
    """EPE of predicting zero flow everywhere on the eval batches: the bar a trained model must beat.

    The model only supplies the output sizes, so the label is resized exactly as in `epe`.
    """
    arch_t = tf.constant(list(arch), tf.int32)
    values = []
    for x, flow in eval_batches:
        zeros = [tf.zeros_like(o) for o in model(x, arch_t, training=False)]
        values.append(tf.cast(loss_lib.epe(zeros, flow), tf.float32))
    return float(np.mean(_read_all(values)))
