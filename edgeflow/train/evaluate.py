"""Pool evaluation of protocol §5 with real BN recalibration.

Per arch: snapshot every BN moving statistic, recalibrate with fixed train batches in training mode
(batch k uses momentum k/(k+1): an exact running average whose first batch replaces the old values),
evaluate in inference mode on the fixed eval batches, then restore the snapshot. Evaluation therefore
leaves every variable exactly as it found it, and the same weights always give the same numbers.
With eval.bn_mode "batch_stats" (the original trainer's protocol) there is no recalibration: BN runs
in training mode on each eval batch and no moving statistic is updated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow import progress
from edgeflow.config import Config
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
        self._epe = tf.function(self._epe_batch, input_signature=[x_spec, tf.TensorSpec([None, h, w, 2], tf.float32),
                                                                  arch_spec])
        # eval.bn_mode "batch_stats": the original trainer's protocol, compared with its logged metric.
        self.bn_mode = cfg.eval.bn_mode
        self._epe_bs = tf.function(self._epe_batch_stats_batch,
                                   input_signature=[x_spec, tf.TensorSpec([None, h, w, 2], tf.float32), arch_spec])

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
        epes = [float(self._epe_bs(x, flow, arch_t)) for x, flow in eval_batches]
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
        if (bn_mode or self.bn_mode) == "batch_stats":
            return float(np.mean(self.batch_stats_epes(arch, eval_batches)))
        return float(np.mean(self.batch_epes(arch, recal_batches, eval_batches)))

    def batch_epes(self, arch: Sequence[int], recal_batches: Iterable, eval_batches: Iterable) -> list[float]:
        """The EPE of each eval batch after recalibration (their mean is `arch_epe`); the seconds spent
        recalibrating and evaluating are left in `last_seconds` for benchmarks and ETAs."""
        snapshot = [v.numpy() for v in self.bn_variables]
        try:
            start = time.perf_counter()
            if self.recalibrate(arch, recal_batches) == 0:
                raise ValueError("BN recalibration got no train batch")
            recal_done = time.perf_counter()
            arch_t = tf.constant(list(arch), tf.int32)
            epes = [float(self._epe(x, flow, arch_t)) for x, flow in eval_batches]
            self.last_seconds = (recal_done - start, time.perf_counter() - recal_done)
        finally:
            for var, saved in zip(self.bn_variables, snapshot, strict=True):
                var.assign(saved)
        if not epes:
            raise ValueError("evaluation got no eval batch")
        return epes

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


def datasets(cfg: Config, train_samples: list, eval_samples: list, cache: bool = False) -> tuple[Any, Any]:
    """The fixed recalibration batches (train split, centre crop) and the fixed eval batches.

    `cache=True` decodes them once and keeps them in memory (ranking many archs)."""
    from edgeflow.data.pipeline import eval_dataset

    recal = eval_dataset(train_samples, cfg, batch_size=cfg.eval.batch_size, num_batches=cfg.eval.bn_recal_batches,
                         cache=cache)
    evals = eval_dataset(eval_samples, cfg, batch_size=cfg.eval.batch_size, num_batches=cfg.eval.eval_batches_per_arch,
                         cache=cache)
    return recal, evals


def zero_flow_epe(model: tf.Module, eval_batches: Iterable, arch: Sequence[int] = (0,) * NUM_BLOCKS) -> float:
    """EPE of predicting zero flow everywhere on the eval batches: the bar a trained model must beat.

    The model only supplies the output sizes, so the label is resized exactly as in `epe`.
    """
    arch_t = tf.constant(list(arch), tf.int32)
    values = []
    for x, flow in eval_batches:
        zeros = [tf.zeros_like(o) for o in model(x, arch_t, training=False)]
        values.append(float(loss_lib.epe(zeros, flow)))
    return float(np.mean(values))
