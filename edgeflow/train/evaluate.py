"""Pool evaluation of SPEC §5 with real BN recalibration.

Per arch: snapshot every BN moving statistic, recalibrate with fixed train batches in training mode
(batch k uses momentum k/(k+1): an exact running average whose first batch replaces the old values),
evaluate in inference mode on the fixed eval batches, then restore the snapshot. Evaluation therefore
leaves every variable exactly as it found it, and the same weights always give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.config import Config
from edgeflow.nas.arch import NUM_BLOCKS, format_arch, parse_arch
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
        h, w = cfg.data.input_height, cfg.data.input_width
        x_spec = tf.TensorSpec([None, h, w, 6], tf.float32)
        arch_spec = tf.TensorSpec([NUM_BLOCKS], tf.int32)
        self._recal = tf.function(self._recal_batch, input_signature=[x_spec, arch_spec, tf.TensorSpec([], tf.float32)])
        self._epe = tf.function(self._epe_batch, input_signature=[x_spec, tf.TensorSpec([None, h, w, 2], tf.float32),
                                                                  arch_spec])

    def _recal_batch(self, x: tf.Tensor, arch: tf.Tensor, momentum: tf.Tensor) -> tf.Tensor:
        self.model(x, arch, training=True, bn_momentum=momentum)
        return tf.constant(0)

    def _epe_batch(self, x: tf.Tensor, flow: tf.Tensor, arch: tf.Tensor) -> tf.Tensor:
        # The model runs in its compute dtype (float16 under mixed precision) but returns float32
        # outputs, so the EPE is computed in float32 and averaged over batches in float64 below.
        return tf.cast(loss_lib.epe(self.model(x, arch, training=False), flow), tf.float32)

    def recalibrate(self, arch: Sequence[int], batches: Iterable) -> int:
        """Replace the moving statistics the arch uses by the exact average over `batches`."""
        arch_t = tf.constant(list(arch), tf.int32)
        count = 0
        for k, (x, _) in enumerate(batches):
            self._recal(x, arch_t, tf.constant(k / (k + 1), tf.float32))
            count += 1
        return count

    def arch_epe(self, arch: Sequence[int], recal_batches: Iterable, eval_batches: Iterable) -> float:
        snapshot = [v.numpy() for v in self.bn_variables]
        try:
            if self.recalibrate(arch, recal_batches) == 0:
                raise ValueError("BN recalibration got no train batch")
            arch_t = tf.constant(list(arch), tf.int32)
            epes = [float(self._epe(x, flow, arch_t)) for x, flow in eval_batches]
        finally:
            for var, saved in zip(self.bn_variables, snapshot, strict=True):
                var.assign(saved)
        if not epes:
            raise ValueError("evaluation got no eval batch")
        return float(np.mean(epes))

    def evaluate(self, codes: Sequence[str], recal_batches: Iterable, eval_batches: Iterable) -> EvalResult:
        """EPE of every arch in `codes`; the batch iterables are re-iterated once per arch."""
        results = {}
        for code in codes:
            results[format_arch(code)] = self.arch_epe(parse_arch(code), recal_batches, eval_batches)
        return summarize(results)


def datasets(cfg: Config, train_samples: list, eval_samples: list) -> tuple[Any, Any]:
    """The fixed recalibration batches (train split, centre crop) and the fixed eval batches."""
    from edgeflow.data.pipeline import eval_dataset

    recal = eval_dataset(train_samples, cfg, batch_size=cfg.eval.batch_size, num_batches=cfg.eval.bn_recal_batches)
    evals = eval_dataset(eval_samples, cfg, batch_size=cfg.eval.batch_size, num_batches=cfg.eval.eval_batches_per_arch)
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
