"""tf.data input pipeline (protocol §1): FC2 samples -> (x, flow) batches for training and evaluation.

x is float32 [b, H, W, 6] = concat(img_0, img_1) in BGR order mapped by (v/255 - 0.5)*2; flow is
float32 [b, H, W, 2] clipped to +-data.flow_clip. Decoding uses native ops (read_file, decode_png,
decode_raw) in parallel with a deterministic order, and crops while the pixels are still uint8.

The same batches come from a decode-once pack (data.format: packed, `edgeflow.data.pack`): the
samples then carry their record file, and only the reading differs; the order, the crop offsets, the
batching and the gap check below are shared code.

A sample that cannot be read at training time (changed since the scan) stops the pipeline with an
error naming the file; it is never skipped or replaced. tf.data cannot catch an op's error inside a
map, so each element carries its position, errors are turned into gaps, and a sequential check of
every batch raises on the first gap, naming the file and what is wrong with it (re-checked in
Python); an end sentinel catches a failure of the last element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from edgeflow import config as config_mod
from edgeflow.data import flo
from edgeflow.data.pack import BYTES_PER_PIXEL, PackedSample, record_problem
from edgeflow.data.scan import Sample, check_deep, check_headers, sort_key

MAGIC_INT = int.from_bytes(flo.MAGIC, "little", signed=True)  # "PIEH" read as an int32
_CROP_STREAM = 0xC409  # separates the crop-offset generator from the order generator of an epoch
# In the message of the tf.errors.InvalidArgumentError raised by iteration for an unreadable sample.
UNREADABLE = "is unreadable (changed since the scan?)"


def is_data_error(exc: BaseException) -> bool:
    """True for the error the pipeline raises on a sample that cannot be read (a data error, exit 2)."""
    return isinstance(exc, tf.errors.OpError) and UNREADABLE in str(exc)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """ceil(N / batch): the last batch of an epoch is smaller, never dropped."""
    return -(-num_samples // batch_size)


def _autotune(value: int) -> int:
    return tf.data.AUTOTUNE if value == 0 else value


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of an epoch: a permutation (no replacement) seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def crop_draws(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """Uniform [0, 1) draws (top, left) for each position of an epoch, seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, _CROP_STREAM]).random((num_samples, 2))


def _diagnose(sample: Sample, min_size: tuple[int, int]) -> str:
    problems = check_headers(sample, min_size)
    if not problems:
        try:
            problems = check_deep(sample)
        except ImportError:
            problems = []
    if problems:
        return "; ".join(f"{p.path}: {p.detail}" for p in problems)
    return (f"sample {sample.sample_id} ({sample.img0}, {sample.img1}, {sample.flow}) could not be decoded by "
            f"TensorFlow (its error is logged above)")


def _crop_offsets(h: tf.Tensor, w: tf.Tensor, draw: tf.Tensor, *, height: int, width: int,
                  centre: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(top, left) of the crop of an h x w sample: the centre, or the position's draw scaled to the span."""
    if centre:
        return (h - height) // 2, (w - width) // 2
    span = tf.cast(tf.stack([h - height + 1, w - width + 1]), tf.float64)
    offsets = tf.minimum(tf.cast(tf.floor(draw * span), tf.int32), tf.stack([h - height, w - width]))
    return offsets[0], offsets[1]


def _finish(pair: tf.Tensor, flow: tf.Tensor, *, height: int, width: int, clip: float) -> tuple[tf.Tensor, tf.Tensor]:
    with tf.control_dependencies([tf.debugging.assert_all_finite(flow, message="non-finite flow values")]):
        flow = tf.clip_by_value(flow, -clip, clip)
    return tf.ensure_shape(pair, [height, width, 6]), tf.ensure_shape(flow, [height, width, 2])


def _decode(img0: tf.Tensor, img1: tf.Tensor, flow_path: tf.Tensor, draw: tf.Tensor, *, height: int, width: int,
            clip: float, centre: bool) -> tuple[tf.Tensor, tf.Tensor]:
    im0 = tf.io.decode_png(tf.io.read_file(img0), channels=3)
    im1 = tf.io.decode_png(tf.io.read_file(img1), channels=3)
    flo_bytes = tf.io.read_file(flow_path)
    h, w = tf.shape(im0)[0], tf.shape(im0)[1]
    header = tf.io.decode_raw(tf.strings.substr(flo_bytes, 0, flo.HEADER_BYTES), tf.int32, little_endian=True)
    top, left = _crop_offsets(h, w, draw, height=height, width=width, centre=centre)
    # What would otherwise pass silently (a wrong crop, a misread flow) fails here; the failure becomes
    # a gap that the position check reports with the file's name and the exact problem.
    found = tf.concat([tf.shape(im1), header, [tf.strings.length(flo_bytes)], tf.minimum([h, w], [height, width])], 0)
    want = tf.concat([tf.shape(im0), [MAGIC_INT, w, h, flo.HEADER_BYTES + 8 * w * h, height, width]], 0)
    ok = tf.reduce_all(tf.equal(found, want))
    with tf.control_dependencies([tf.debugging.Assert(ok, ["sample does not match its scan"])]):
        # Only the rows of the crop are decoded from the .flo bytes.
        rows = tf.strings.substr(flo_bytes, flo.HEADER_BYTES + top * w * 8, height * w * 8)
    flow = tf.reshape(tf.io.decode_raw(rows, tf.float32, little_endian=True), [height, w, 2])[:, left:left + width]
    # Reversing [img_1 RGB, img_0 RGB] gives [img_0 BGR, img_1 BGR]: one reverse of the pair is far
    # cheaper than a negative-stride slice of each frame.
    pair = tf.reverse(tf.concat([im1[top:top + height, left:left + width],
                                 im0[top:top + height, left:left + width]], axis=-1), axis=[-1])
    return _finish(pair, flow, height=height, width=width, clip=clip)


def _read_packed(record: tf.Tensor, h: tf.Tensor, w: tf.Tensor, fingerprint: tf.Tensor, draw: tf.Tensor, *,
                 height: int, width: int, clip: float, centre: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """The crop of a pack record (uint8 [h, w, 14]: the pair in final channel order, then the flow's
    float32 bytes): one slice of the crop, then the flow's bytes reinterpreted; nothing to decode."""
    data = tf.io.read_file(record)
    top, left = _crop_offsets(h, w, draw, height=height, width=width, centre=centre)
    # A truncated, replaced or corrupted record fails here (a gap, reported with the file's name).
    ok = tf.logical_and(tf.equal(tf.strings.length(data), h * w * BYTES_PER_PIXEL),
                        tf.reduce_all(tf.equal(tf.fingerprint(tf.reshape(data, [1]))[0], fingerprint)))
    ok = tf.logical_and(ok, tf.logical_and(h >= height, w >= width))
    with tf.control_dependencies([tf.debugging.Assert(ok, ["record does not match its manifest entry"])]):
        # The whole record at once, then one slice: measured ~13% less CPU than cutting the crop's
        # rows out of the string first (substr copies the string).
        u8 = tf.io.decode_raw(data, tf.uint8)
    crop = tf.reshape(u8, [h, w, BYTES_PER_PIXEL])[top:top + height, left:left + width]
    flow = tf.bitcast(tf.reshape(crop[..., 6:], [height, width, 2, 4]), tf.float32)  # little-endian host
    return _finish(crop[..., :6], flow, height=height, width=width, clip=clip)


def to_unit_range(pair: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 (v/255 - 0.5)*2, computed as v/127.5 - 1: the same float32 for every v (the
    factor 2 is exact in binary) with one pass less."""
    return tf.cast(pair, tf.float32) / 127.5 - 1.0


def _diagnose_packed(sample: PackedSample) -> str:
    problem = record_problem(sample, deep=False)
    if problem:
        return problem
    data = tf.io.read_file(sample.record)
    if bytes(tf.fingerprint(tf.reshape(data, [1]))[0].numpy()).hex() != sample.fingerprint:
        return f"{sample.record}: contents differ from its manifest entry (corrupted or replaced); re-pack"
    flow = tf.bitcast(tf.reshape(tf.io.decode_raw(data, tf.uint8), [-1, BYTES_PER_PIXEL])[:, 6:], tf.float32)
    if not bool(tf.reduce_all(tf.math.is_finite(flow))):
        return f"{sample.record}: non-finite flow values"
    return f"record {sample.record} could not be read by TensorFlow (its error is logged above)"


def _packed(ordered: Sequence[Sample]) -> bool:
    kinds = {isinstance(s, PackedSample) for s in ordered}
    if len(kinds) > 1:
        raise ValueError("samples mix a pack's and PNG files")
    return kinds == {True}


def _source(rest: Sequence[Sample], cfg: config_mod.Config, centre: bool) -> tuple[tuple[tf.Tensor, ...], Callable]:
    """The per-sample columns and the function that turns them (and a draw) into (pair, flow)."""
    height, width, clip = cfg.data.input_height, cfg.data.input_width, float(cfg.data.flow_clip)
    packed = _packed(rest) if rest else cfg.data.format == "packed"
    if packed != (cfg.data.format == "packed"):
        raise ValueError(f"data.format is {cfg.data.format!r} but the samples come from "
                         f"{'a pack' if packed else 'PNG files'}")
    if packed:
        recs = [s for s in rest if isinstance(s, PackedSample)]
        fingerprints = np.array([list(bytes.fromhex(s.fingerprint)) for s in recs], np.uint8).reshape(-1, 8)
        columns = (tf.constant([s.record for s in recs], tf.string), tf.constant([s.height for s in recs], tf.int32),
                   tf.constant([s.width for s in recs], tf.int32), tf.constant(fingerprints, tf.uint8))
        return columns, lambda rec, h, w, fp, draw: _read_packed(rec, h, w, fp, draw, height=height, width=width,
                                                                 clip=clip, centre=centre)
    png_columns = (tf.constant([s.img0 for s in rest], tf.string), tf.constant([s.img1 for s in rest], tf.string),
                   tf.constant([s.flow for s in rest], tf.string))
    return png_columns, lambda img0, img1, flow_path, draw: _decode(img0, img1, flow_path, draw, height=height,
                                                                    width=width, clip=clip, centre=centre)


def _build(ordered: Sequence[Sample], draws: np.ndarray, start: int, cfg: config_mod.Config, *, batch_size: int,
           centre: bool, what: str, cache: bool = False) -> tf.data.Dataset:
    """Positions start..len(ordered)-1 of `ordered`, read, batched, checked for gaps."""
    height, width = cfg.data.input_height, cfg.data.input_width
    end = len(ordered)
    columns, read = _source(ordered[start:], cfg, centre)
    table = (*columns, tf.constant(draws[start:end].reshape(-1, 2), tf.float64),
             tf.constant(np.arange(start, end, dtype=np.int64)))
    min_size = (height, width)

    def load(*row):
        x, flow = read(*row[:-1])
        return x, flow, row[-1]

    def explain(pos: tf.Tensor) -> tf.Tensor:
        sample = ordered[int(pos.numpy())]
        why = _diagnose_packed(sample) if isinstance(sample, PackedSample) else _diagnose(sample, min_size)
        return tf.constant(f"{what} sample {sample.sample_id} at position {int(pos)} {UNREADABLE}: {why}")

    def check(expected, batch):
        # Positions must run on from the previous batch without a gap; the end sentinel rides in the
        # last batch, so a failed last element shows up as a gap too.
        x, flow, pos = batch
        want = expected + tf.range(tf.size(pos, out_type=tf.int64), dtype=tf.int64)
        mismatch = tf.not_equal(pos, want)
        ok = tf.logical_not(tf.reduce_any(mismatch))
        message = tf.cond(ok, lambda: tf.constant(""),
                          lambda: tf.py_function(explain, [want[tf.argmax(tf.cast(mismatch, tf.int32))]], tf.string))
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            keep = pos < end
        x, flow = tf.cond(tf.reduce_all(keep), lambda: (x, flow),
                          lambda: (tf.boolean_mask(x, keep), tf.boolean_mask(flow, keep)))
        return expected + tf.size(pos, out_type=tf.int64), (x, flow)

    def not_empty(pair, flow):
        return tf.shape(pair)[0] > 0

    def normalise(pair, flow):
        return to_unit_range(pair), flow

    parallel = _autotune(cfg.data.num_parallel_calls)
    sentinel = tf.data.Dataset.from_tensors((tf.zeros([height, width, 6], tf.uint8), tf.zeros([height, width, 2]),
                                             tf.constant(end, tf.int64)))
    ds = tf.data.Dataset.from_tensor_slices(table)
    ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)  # every error becomes a gap that `check` raises on
    # Batched while uint8 (4x less to copy), converted to float per batch.
    ds = ds.concatenate(sentinel).batch(batch_size).scan(tf.constant(start, tf.int64), check).filter(not_empty)
    if cache:  # still uint8 here: a quarter of the memory of the float batches
        ds = ds.cache()
    ds = ds.map(normalise, num_parallel_calls=parallel, deterministic=True)
    ds = ds.prefetch(_autotune(cfg.data.prefetch_batches))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def train_dataset(samples: Sequence[Sample], cfg: config_mod.Config, epoch: int, *,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """One epoch of training batches; `skip_batches=k` yields exactly batches k.. of the same epoch."""
    if not samples:
        raise ValueError("train_dataset: no samples")
    batch = cfg.train.batch_size
    if not 0 <= skip_batches <= steps_per_epoch(len(samples), batch):
        raise ValueError(f"skip_batches={skip_batches} outside 0..{steps_per_epoch(len(samples), batch)}")
    order = epoch_order(len(samples), cfg.runtime.seed, epoch)
    ordered = [samples[i] for i in order]
    draws = crop_draws(len(samples), cfg.runtime.seed, epoch)
    return _build(ordered, draws, min(skip_batches * batch, len(samples)), cfg, batch_size=batch, centre=False,
                  what="training")


def eval_dataset(samples: Sequence[Sample], cfg: config_mod.Config, *, batch_size: int,
                 num_batches: int, cache: bool = False) -> tf.data.Dataset:
    """The first `num_batches` batches of `samples` sorted by id, centre-cropped; the same every time.

    `cache=True` keeps the decoded crops in memory after the first full pass (uint8 frames + float32
    flow: about 0.6 MB per sample at 180x240), so re-iterating once per arch decodes nothing again.
    """
    if not samples:
        raise ValueError("eval_dataset: no samples")
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"eval_dataset: batch_size and num_batches must be >= 1, got {batch_size}, {num_batches}")
    ordered = sorted(samples, key=lambda s: sort_key(s.sample_id))[:batch_size * num_batches]
    draws = np.zeros((len(ordered), 2))
    return _build(ordered, draws, 0, cfg, batch_size=batch_size, centre=True, what="evaluation", cache=cache)
