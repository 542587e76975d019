"""Loss, EPE and the legacy bilinear resize (protocol §3) against NumPy references on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from edgeflow.model.layers import resize_bilinear_legacy
from edgeflow.train.loss import accumulate, epe, supernet_loss, weight_decay_loss


def np_resize_legacy(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent reference: output pixel i samples input coordinate i*in/out, clamped (TF1 grid)."""
    b, in_h, in_w, c = img.shape
    out = np.zeros((b, out_h, out_w, c), dtype=np.float64)
    for i in range(out_h):
        sy = i * in_h / out_h
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for j in range(out_w):
            sx = j * in_w / out_w
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = img[:, y0, x0] * (1 - fx) + img[:, y0, x1] * fx
            bottom = img[:, y1, x0] * (1 - fx) + img[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def softplus(x):
    return np.log1p(np.exp(x))


def test_legacy_resize_hand_computed_and_differs_from_tf_image_resize():
    x = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32).reshape(1, 2, 2, 1)
    # by hand: sample points 0, 0.5, 1, 1.5 -> the last one clamps to the border
    expected = np.array([[0.0, 0.5, 1.0, 1.0],
                         [1.0, 1.5, 2.0, 2.0],
                         [2.0, 2.5, 3.0, 3.0],
                         [2.0, 2.5, 3.0, 3.0]])
    got = resize_bilinear_legacy(tf.constant(x), [4, 4]).numpy()[0, :, :, 0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the half-pixel grid of tf.image.resize gives 0.25 at [0, 1] and 0 at the corner only
    modern = tf.image.resize(tf.constant(x), [4, 4], method="bilinear").numpy()[0, :, :, 0]
    assert abs(modern[0, 1] - 0.25) < 1e-6
    assert not np.allclose(modern, expected)


def test_legacy_resize_matches_reference_on_uneven_sizes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 2)).astype(np.float32)
    for size in [(6, 10), (4, 3), (7, 4)]:
        got = resize_bilinear_legacy(tf.constant(x), size).numpy()
        np.testing.assert_allclose(got, np_resize_legacy(x, *size), atol=1e-5)


def _tiny_outputs(rng):
    # 1/4, 1/2, 1/1 outputs of a 1x2 -> 2x4 -> 3x8 pyramid (the last is not a doubling, like 180 -> 192)
    return [rng.normal(size=(2, 1, 2, 4)).astype(np.float32),
            rng.normal(size=(2, 2, 4, 4)).astype(np.float32),
            rng.normal(size=(2, 3, 8, 4)).astype(np.float32)]


def _np_accumulate(outputs):
    flow, var = outputs[0][..., :2].astype(np.float64), outputs[0][..., 2:].astype(np.float64)
    result = [(flow, var)]
    for out in outputs[1:]:
        h, w = out.shape[1:3]
        flow = np_resize_legacy(flow, h, w) + out[..., :2]
        var = np_resize_legacy(var, h, w) + out[..., 2:]
        result.append((flow, var))
    return result


def test_accumulate_coarse_to_fine():
    outputs = _tiny_outputs(np.random.default_rng(1))
    got = accumulate([tf.constant(o) for o in outputs])
    want = _np_accumulate(outputs)
    assert len(got) == 3
    for (gf, gv), (wf, wv) in zip(got, want, strict=True):
        np.testing.assert_allclose(gf.numpy(), wf, atol=1e-5)
        np.testing.assert_allclose(gv.numpy(), wv, atol=1e-5)


def test_accumulate_hand_example_values_not_rescaled():
    # coarse flow 2 everywhere, fine residual 1: accumulated flow is 3 (not 2*2 + 1)
    coarse = np.zeros((1, 1, 1, 4), np.float32)
    coarse[..., 0] = 2.0
    coarse[..., 2] = -1.0
    mid = np.zeros((1, 2, 2, 4), np.float32)
    fine = np.ones((1, 4, 4, 4), np.float32)
    (_, _), (_, _), (flow, var) = accumulate([tf.constant(coarse), tf.constant(mid), tf.constant(fine)])
    np.testing.assert_allclose(flow.numpy()[..., 0], 3.0)
    np.testing.assert_allclose(flow.numpy()[..., 1], 1.0)
    np.testing.assert_allclose(var.numpy()[..., 0], 0.0)


def test_supernet_loss_matches_numpy():
    rng = np.random.default_rng(2)
    outputs = _tiny_outputs(rng)
    label = rng.normal(scale=3.0, size=(2, 2, 7, 2)).astype(np.float32)  # resized to every scale
    total = 0.0
    for weight, (flow, var) in zip((0.125, 0.25, 0.5), _np_accumulate(outputs), strict=True):
        lab = np_resize_legacy(label, *flow.shape[1:3])
        d = np.abs(flow - lab)
        sigma = np.maximum(softplus(var + 1e-3), 1e-3)
        total += weight * (d.mean() + (d / sigma).mean() + softplus(var).mean())
    got = supernet_loss([tf.constant(o) for o in outputs], tf.constant(label))
    np.testing.assert_allclose(got.numpy(), total, rtol=1e-5)


def test_loss_hand_computed_two_pixels():
    # one pixel per scale except the last (1x2); label 1x2 = [(1, 0), (0, 0)]; zero outputs except
    # the fine flow (3, 4) at pixel 0. var = 0 everywhere: sigma = softplus(1e-3), softplus(0) = ln 2.
    outs = [np.zeros((1, 1, 1, 4), np.float32), np.zeros((1, 1, 1, 4), np.float32),
            np.zeros((1, 1, 2, 4), np.float32)]
    outs[2][0, 0, 0, :2] = [3.0, 4.0]
    label = np.zeros((1, 1, 2, 2), np.float32)
    label[0, 0, 0, 0] = 1.0
    sigma = np.log1p(np.exp(1e-3))
    ln2 = np.log(2.0)
    # coarse scales see the label resized to 1x1: the sample point 0 -> (1, 0); d = [1, 0]
    coarse = 0.5 + 0.5 / sigma + ln2
    # fine: d = [|3-1|, |4-0|, 0, 0] -> mean 1.5
    fine = 1.5 + 1.5 / sigma + ln2
    expected = 0.125 * coarse + 0.25 * coarse + 0.5 * fine
    got = supernet_loss([tf.constant(o) for o in outs], tf.constant(label))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_sigma_floor_applies():
    # very negative var: softplus(var + 1e-3) underflows below 1e-3, so sigma = 1e-3
    outs = [np.zeros((1, 1, 1, 4), np.float32) for _ in range(3)]
    outs[0][..., 2:] = -50.0
    outs[0][..., 0] = 1.0
    label = np.zeros((1, 1, 1, 2), np.float32)
    got = supernet_loss([tf.constant(o) for o in outs], tf.constant(label)).numpy()
    d_mean = 0.5
    per_scale = d_mean + d_mean / 1e-3 + softplus(-50.0)
    np.testing.assert_allclose(got, 0.875 * per_scale, rtol=1e-5)


def test_epe_hand_computed():
    outs = [np.zeros((1, 1, 1, 4), np.float32), np.zeros((1, 1, 1, 4), np.float32),
            np.zeros((1, 1, 2, 4), np.float32)]
    outs[2][0, 0, 0, :2] = [3.0, 4.0]     # error 5 at pixel 0, 0 at pixel 1
    outs[2][0, 0, 1, 2:] = [9.0, 9.0]     # uncertainty channels do not enter the EPE
    label = np.zeros((1, 1, 2, 2), np.float32)
    assert epe([tf.constant(o) for o in outs], tf.constant(label)).numpy() == pytest.approx(2.5)


def test_epe_uses_label_resized_to_output_size():
    rng = np.random.default_rng(3)
    outputs = _tiny_outputs(rng)
    label = rng.normal(size=(2, 2, 7, 2)).astype(np.float32)
    flow = _np_accumulate(outputs)[-1][0]
    lab = np_resize_legacy(label, 3, 8)
    expected = np.sqrt(((flow - lab) ** 2).sum(-1)).mean()
    got = epe([tf.constant(o) for o in outputs], tf.constant(label))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_weight_decay_is_half_sum_of_squares():
    a = tf.Variable([[1.0, -2.0]])
    b = tf.Variable(tf.fill([2, 2, 1, 1], 3.0))
    got = weight_decay_loss([a, b], 4e-5).numpy()
    np.testing.assert_allclose(got, 4e-5 * 0.5 * (1 + 4 + 4 * 9), rtol=1e-6)
    assert weight_decay_loss([], 4e-5).numpy() == 0.0


def test_loss_rejects_wrong_number_of_outputs():
    with pytest.raises(ValueError, match="expected 3 outputs"):
        supernet_loss([tf.zeros([1, 1, 1, 4])] * 2, tf.zeros([1, 1, 1, 2]))
