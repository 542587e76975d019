"""How closely each exported file computes what the supernet computes, on the evaluation batches.

The reference is the supernet itself, run for the arch in inference mode after the same BN
recalibration, on the fixed eval batches of the evaluation protocol. Each artefact is run on the same
inputs; float formats report the largest absolute difference of each output, and every format
reports its EPE computed as the evaluation does (the accumulated 1/1 flow against the label resized
to its size, mean per batch, then mean over batches).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.train import loss as loss_lib

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RefBatch:
    x: np.ndarray       # [b, H, W, 6] normalised network input
    label: np.ndarray   # [b, H, W, 2] flow label
    flow: np.ndarray    # the supernet's accumulated 1/1 flow
    uncertainty: np.ndarray
    epe: float          # the supernet's EPE on this batch (edgeflow.train.loss.epe)


def flow_epe(flow: np.ndarray | tf.Tensor, label: np.ndarray | tf.Tensor) -> float:
    """EPE of an accumulated flow against the label resized to its size (as `loss.epe`)."""
    flow = tf.convert_to_tensor(flow, tf.float32)
    diff = flow - loss_lib.resize_label(label, flow)
    return float(tf.reduce_mean(tf.sqrt(tf.reduce_sum(tf.square(diff), axis=-1))))


def supernet_reference(supernet: tf.Module, arch: Sequence[int], eval_batches: Iterable) -> list[RefBatch]:
    """The supernet's outputs for `arch` (inference mode, its current BN statistics) on each batch."""
    arch_t = tf.constant(list(arch), tf.int32)
    out = []
    for x, label in eval_batches:
        # eagerly: switch_case then runs only the arch's branches, nothing to trace
        outputs = supernet(x, arch_t, training=False)
        flow, uncertainty = loss_lib.accumulate(outputs)[-1]
        out.append(RefBatch(x=x.numpy(), label=label.numpy(), flow=flow.numpy(),
                            uncertainty=uncertainty.numpy(), epe=float(loss_lib.epe(outputs, label))))
    if not out:
        raise ValueError("the parity check got no eval batch")
    return out


def supernet_epe(reference: Sequence[RefBatch]) -> float:
    return float(np.mean([b.epe for b in reference]))


def compare(reference: Sequence[RefBatch], predict: Predict) -> dict[str, Any]:
    """Max abs difference of flow and uncertainty against the supernet, and the format's EPE."""
    max_flow = max_unc = 0.0
    epes = []
    for batch in reference:
        flow, uncertainty = predict(batch.x)
        if flow.shape != batch.flow.shape or uncertainty.shape != batch.uncertainty.shape:
            raise AssertionError(f"output shapes {flow.shape}, {uncertainty.shape} differ from the "
                                 f"supernet's {batch.flow.shape}")
        max_flow = max(max_flow, float(np.max(np.abs(flow - batch.flow))))
        max_unc = max(max_unc, float(np.max(np.abs(uncertainty - batch.uncertainty))))
        epes.append(flow_epe(flow, batch.label))
    return {"max_abs_diff_flow": max_flow, "max_abs_diff_uncertainty": max_unc,
            "max_abs_diff": max(max_flow, max_unc), "epe": float(np.mean(epes)),
            "samples": int(sum(len(b.x) for b in reference))}


def saved_model_predict(loaded: Any, signature: str) -> Predict:
    fn = loaded.signatures[signature]

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if signature == "serving_default":
            # Back to the uint8 BGR frames the pipeline decoded: x = v/127.5 - 1 is exact to invert.
            frames = np.rint((x + 1.0) * 127.5).astype(np.uint8)
            out = fn(frame0=tf.constant(frames[..., :3]), frame1=tf.constant(frames[..., 3:]))
        else:
            out = fn(x=tf.constant(x))
        return out["flow"].numpy(), out["uncertainty"].numpy()

    return predict


def tflite_interpreter(model: bytes) -> Any:
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it moves to another package; it is what TF ships today.
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    return interpreter


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def tflite_predict(model: bytes) -> Predict:
    """Runs a batch-1 TFLite model sample by sample; int8 input and outputs (de)quantised with the
    model's own parameters."""
    interpreter = tflite_interpreter(model)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    (in_name, in_detail), = details.items()
    out_details = runner.get_output_details()

    def predict(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flows, uncs = [], []
        for sample in x:
            out = runner(**{in_name: _quantize(sample[None], in_detail)})
            flows.append(_dequantize(out["flow"], out_details["flow"]))
            uncs.append(_dequantize(out["uncertainty"], out_details["uncertainty"]))
        return np.concatenate(flows), np.concatenate(uncs)

    return predict
