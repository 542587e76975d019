"""The flow fields behind a run's pictures: a few fixed eval samples through some archs of the pool.

After an evaluation, the archs `picture_archs` picks (the pool's best and worst; the one arch of a
pool of one, a stand-alone net) each predict the first samples of the first eval batch, with BN as the
evaluation had it (recalibrated for that arch, on the batch's own statistics, or a stand-alone net's
own), so the picture shows the flow whose EPE was measured. The weights and BN statistics are left
exactly as they were found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.config import STANDALONE_BN_MODE
from edgeflow.data.samples import sort_key
from edgeflow.rundir.flow_samples_file import FlowSamples
from edgeflow.space.arch import parse_arch
from edgeflow.train import loss as loss_lib
from edgeflow.train.evaluate import EvalResult, Evaluator

PICTURE_SAMPLES = 3  # how many eval samples the pictures show (fewer when an eval batch is smaller)


def picture_archs(result: EvalResult) -> list[str]:
    """The archs an evaluation's pictures show: the best and the worst of the pool by EPE (a
    non-finite EPE counts as the worst; ties go by code), or the only one."""
    def key(item: tuple[str, float]) -> tuple[float, str]:
        return (item[1] if math.isfinite(item[1]) else math.inf, item[0])

    ranked = [code for code, _ in sorted(result.arch_epe.items(), key=key)]
    return ranked[:1] if len(ranked) == 1 else [ranked[0], ranked[-1]]


def _frames_rgb(x: np.ndarray) -> np.ndarray:
    """The model's input [N, H, W, 6] (two BGR frames mapped to [-1, 1]) as uint8 RGB frames."""
    pixels = np.clip(np.round((x.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.concatenate([pixels[..., 2::-1], pixels[..., 5:2:-1]], axis=-1)


def _predict(model: tf.Module, evaluator: Evaluator, code: str, recal_batches: Iterable, x: tf.Tensor,
             bn_mode: str) -> tf.Tensor:
    arch = tf.constant(list(parse_arch(code)), tf.int32)
    if bn_mode == "batch_stats":
        return loss_lib.accumulate(model(x, arch, training=True, bn_momentum=None))[-1][0]
    if bn_mode == STANDALONE_BN_MODE:  # a stand-alone net: its own moving statistics, as evaluated
        return loss_lib.accumulate(model(x, arch, training=False))[-1][0]
    snapshot = [v.numpy() for v in evaluator.bn_variables]
    try:
        evaluator.recalibrate(parse_arch(code), recal_batches)
        return loss_lib.accumulate(model(x, arch, training=False))[-1][0]
    finally:
        for var, saved in zip(evaluator.bn_variables, snapshot, strict=True):
            var.assign(saved)


def take(model: tf.Module, evaluator: Evaluator, result: EvalResult, epoch: int, recal_batches: Iterable,
         eval_batches: Iterable, val_samples: list[Any], bn_mode: str,
         count: int = PICTURE_SAMPLES) -> FlowSamples:
    """The flow samples of `result`'s picture archs on the first `count` samples of the first eval batch.

    The whole first batch goes through the model (with batch statistics, its composition matters); the
    first `count` samples are kept. `val_samples` gives their ids, in the eval batches' order.
    """
    x, flow = next(iter(eval_batches))
    n = min(count, int(x.shape[0]))
    codes = picture_archs(result)
    flows = [_predict(model, evaluator, code, recal_batches, x, bn_mode) for code in codes]
    truth = np.asarray(loss_lib.resize_label(flow, flows[0]))[:n]  # the label as the EPE sees it
    ids = [s.sample_id for s in sorted(val_samples, key=lambda s: sort_key(s.sample_id))[:n]]
    return FlowSamples(epoch=epoch, sample_ids=ids, frames=_frames_rgb(np.asarray(x)[:n]), truth=truth,
                       archs=codes, arch_epe=[result.arch_epe[c] for c in codes],
                       predicted=np.stack([np.asarray(f)[:n] for f in flows]), bn_mode=bn_mode)
