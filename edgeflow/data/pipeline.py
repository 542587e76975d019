"""tf.data input pipeline (protocol §1): FC2 samples -> (x, flow) batches for training and evaluation.

x is float32 [b, H, W, 6] = concat(img_0, img_1) in BGR order mapped by (v/255 - 0.5)*2; flow is
float32 [b, H, W, 2] clipped to +-data.flow_clip. With `normalise=False` x stays uint8: the trainer
moves a quarter of the bytes to its device and maps them there (`to_unit_range`, the same values).
Decoding uses native ops (read_file, decode_png, decode_raw) in parallel with a deterministic order,
and crops while the pixels are still uint8.

The same batches come from a decode-once pack (data.format: packed): the samples' type picks how one
is read (edgeflow/data/readers.py); the order, the crop offsets, the batching and the gap check below
are shared by every kind of sample.

A sample that cannot be read at training time (changed since the scan) stops the pipeline with an
error naming the file; it is never skipped or replaced. tf.data cannot catch an op's error inside a
map, so each element carries its position, errors are turned into gaps, and a sequential check of
every batch raises on the first gap, naming the file and what is wrong with it (re-checked in
Python); an end sentinel catches a failure of the last element.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from edgeflow import config as config_mod
from edgeflow.data.augment import augment, draws_per_sample
from edgeflow.data.readers import Crop, reader_for
from edgeflow.data.samples import Sample, sort_key

_CROP_STREAM = 0xC409  # separates the crop-offset generator from the order generator of an epoch
_AUGMENT_STREAM = 0xA06  # and the augmentation draws from both
# In the message of the tf.errors.InvalidArgumentError raised by iteration for an unreadable sample.
UNREADABLE = "cannot be read"


def is_data_error(exc: BaseException) -> bool:
    """True for the error the pipeline raises on a sample that cannot be read (a data error, exit 4)."""
    return isinstance(exc, tf.errors.OpError) and UNREADABLE in str(exc)


def data_error_message(exc: BaseException) -> str:
    """The one line that names the sample and what is wrong with it, out of TensorFlow's wrapping."""
    text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
    for line in text.splitlines():
        if UNREADABLE in line:
            # TensorFlow prefixes the assertion's message with its own context ("... assertion failed: [").
            start = line.find(" sample ")
            line = line[line.rfind("[", 0, start) + 1 if start > 0 else 0:].strip()
            return line.split("] [[", 1)[0].rstrip("]").strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


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


def augment_draws(num_samples: int, seed: int, epoch: int, per_sample: int) -> np.ndarray:
    """Uniform [0, 1) draws for the augmentation of each position of an epoch, seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, _AUGMENT_STREAM]).random((num_samples, per_sample))


def to_unit_range(pair: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 (v/255 - 0.5)*2, computed as v/127.5 - 1: the same float32 for every v (the
    factor 2 is exact in binary) with one pass less."""
    return tf.cast(pair, tf.float32) / 127.5 - 1.0


def _build(ordered: Sequence[Sample], draws: np.ndarray, start: int, cfg: config_mod.Config, *, batch_size: int,
           centre: bool, what: str, cache: bool = False, size: tuple[int, int] | None = None,
           aug_draws: np.ndarray | None = None, normalise: bool = True) -> tf.data.Dataset:
    """Positions start..len(ordered)-1 of `ordered`, read (and augmented when `aug_draws` are given),
    batched, checked for gaps; crops of `size` (default data.input_height x data.input_width)."""
    height, width = size or (cfg.data.input_height, cfg.data.input_width)
    end = len(ordered)
    reader = reader_for(ordered)
    crop = Crop(height, width, float(cfg.data.flow_clip), centre)
    columns = (*reader.columns(ordered[start:]), tf.constant(draws[start:end].reshape(-1, 2), tf.float64))
    if aug_draws is not None:
        columns += (tf.constant(aug_draws[start:end], tf.float32),)
    table = (*columns, tf.constant(np.arange(start, end, dtype=np.int64)))
    min_size = (height, width)

    def read(*row):
        return reader.read(*row, crop)

    def load(*row):
        if aug_draws is None:
            x, flow = read(*row[:-1])
        else:
            x, flow = augment(*read(*row[:-2]), row[-2], cfg.data.augment, crop.clip)
        return x, flow, row[-1]

    def explain(pos: tf.Tensor) -> tf.Tensor:
        sample = ordered[int(pos.numpy())]
        why = reader.diagnose(sample, min_size)
        return tf.constant(f"{what} sample {sample.sample_id} (position {int(pos)}) {UNREADABLE}: {why}")

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

    def to_float(pair, flow):
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
    if normalise:
        ds = ds.map(to_float, num_parallel_calls=parallel, deterministic=True)
    ds = ds.prefetch(_autotune(cfg.data.prefetch_batches))
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def train_dataset(samples: Sequence[Sample], cfg: config_mod.Config, epoch: int, *,
                  skip_batches: int = 0, normalise: bool = True) -> tf.data.Dataset:
    """One epoch of training batches; `skip_batches=k` yields exactly batches k.. of the same epoch.

    `normalise=False`: x as uint8 pixels (map them with `to_unit_range` where they are used)."""
    if not samples:
        raise ValueError("train_dataset: no samples")
    batch = cfg.train.batch_size
    if not 0 <= skip_batches <= steps_per_epoch(len(samples), batch):
        raise ValueError(f"skip_batches={skip_batches} outside 0..{steps_per_epoch(len(samples), batch)}")
    order = epoch_order(len(samples), cfg.runtime.seed, epoch)
    ordered = [samples[i] for i in order]
    draws = crop_draws(len(samples), cfg.runtime.seed, epoch)
    aug = cfg.data.augment
    aug_draws = augment_draws(len(samples), cfg.runtime.seed, epoch, draws_per_sample(aug)) if aug.enabled else None
    return _build(ordered, draws, min(skip_batches * batch, len(samples)), cfg, batch_size=batch, centre=False,
                  what="training", aug_draws=aug_draws, normalise=normalise)


def eval_dataset(samples: Sequence[Sample], cfg: config_mod.Config, *, batch_size: int, num_batches: int,
                 cache: bool = False, size: tuple[int, int] | None = None, normalise: bool = True) -> tf.data.Dataset:
    """The first `num_batches` batches of `samples` sorted by id, centre-cropped to `size` (default the
    input size; an evaluation split's own size); the same every time.

    `cache=True` keeps the decoded crops in memory after the first full pass (uint8 frames + float32
    flow: about 0.6 MB per sample at 180x240), so re-iterating once per arch decodes nothing again.
    """
    if not samples:
        raise ValueError("eval_dataset: no samples")
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"eval_dataset: batch_size and num_batches must be >= 1, got {batch_size}, {num_batches}")
    ordered = sorted(samples, key=lambda s: sort_key(s.sample_id))[:batch_size * num_batches]
    draws = np.zeros((len(ordered), 2))
    return _build(ordered, draws, 0, cfg, batch_size=batch_size, centre=True, what="evaluation", cache=cache,
                  size=size, normalise=normalise)
