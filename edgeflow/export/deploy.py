"""An arch as it will run on a device: at the deployment input size, in float32 and in int8.

- `at_size` is the run seen at another input size: the same checkpoint, data and evaluation protocol,
  with the input crop (and so BN recalibration, the eval batches and the exported network) at the
  deployment size, always in float32. The training config asks for even sides; a deployment size only
  has to be one the network takes (at least 16x16: it down-samples by 16), so 157x203 is fine.
- `int8_model` is the full-integer TFLite model of an arch exactly as `edgeflow export` makes it: the
  arch's BN statistics recalibrated on the protocol's train batches (eagerly, as export does), its
  weights copied into the fixed-arch network, int8 calibration on the given inputs. The supernet's
  statistics are restored afterwards, so many archs can be made from one restored supernet.
- `tflite_epes` runs an int8 (or float) TFLite model on eval batches and returns each batch's EPE, the
  protocol's statistic (their mean is the arch's deployed EPE).

Light at import: TensorFlow loads inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from edgeflow.export.device import DeviceError, check_input_size
from edgeflow.train.restore import RunHandle


def at_size(run: RunHandle, height: int, width: int) -> RunHandle:
    """The run at input size `height` x `width`, float32; DeviceError when the network cannot take it."""
    check_input_size(height, width, "deployment size")
    cfg = run.cfg
    data = dataclasses.replace(cfg.data, input_height=int(height), input_width=int(width))
    train = dataclasses.replace(cfg.train, mixed_precision=False)
    new_cfg = dataclasses.replace(cfg, data=data, train=train)
    # The samples were scanned as at least the training crop: still valid for a crop no larger.
    fits = height <= cfg.data.input_height and width <= cfg.data.input_width
    return dataclasses.replace(run, cfg=new_cfg, _splits=run._splits if fits else None)


def representative_inputs(run: RunHandle, count: int) -> list[Any]:
    """The int8 calibration inputs: the first `count` train samples by id, centre crop, [1, H, W, 6]."""
    from edgeflow.data.pipeline import eval_dataset

    n = min(count, len(run.splits.train))
    if n < 1:
        raise DeviceError("int8 calibration needs at least one train sample")
    return [x.numpy() for x, _ in eval_dataset(run.splits.train, run.cfg, batch_size=1, num_batches=n)]


def int8_model(supernet: Any, cfg: Any, arch: Sequence[int], recal_batches: Iterable,
               representative: Sequence[Any]) -> bytes:
    """The arch's int8 TFLite model, made as `edgeflow export` makes it; the supernet is left as found."""
    import tensorflow as tf

    from edgeflow.export import formats
    from edgeflow.export.subnet import Subnet
    from edgeflow.export.weights import copy_from_supernet
    from edgeflow.train.evaluate import Evaluator

    h, w = cfg.data.input_height, cfg.data.input_width
    snapshot = [v.numpy() for v in supernet.bn_moving_variables]
    try:
        # Eagerly, as export does: the same kernels, so the same statistics to the last bit.
        tf.config.run_functions_eagerly(True)
        try:
            if Evaluator(supernet, cfg).recalibrate(arch, recal_batches) == 0:
                raise ValueError("BN recalibration got no train batch")
        finally:
            tf.config.run_functions_eagerly(False)
        subnet = Subnet(arch)
        copy_from_supernet(supernet, subnet)
    finally:
        for var, saved in zip(supernet.bn_moving_variables, snapshot, strict=True):
            var.assign(saved)
    return formats.tflite_int8(formats.ServingModule(subnet, h, w), representative)


def tflite_epes(model: bytes, eval_batches: Iterable) -> list[float]:
    """Each eval batch's EPE of a TFLite model (the protocol's statistic: mean over pixels and samples)."""
    from edgeflow.export import parity

    predict = parity.tflite_predict(model)
    epes = []
    for x, label in eval_batches:
        flow, _ = predict(x.numpy())
        epes.append(parity.flow_epe(flow, label))
    if not epes:
        raise ValueError("evaluation got no eval batch")
    return epes
