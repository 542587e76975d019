"""Training input of one epoch, read ahead in a thread, placed on the step's device, ended off the loop.

An epoch's tf.data pipeline costs a start-up (building the tables, tracing its map functions,
starting its threads, decoding the first batch), a copy of every batch to the device, and an end
(the teardown of the iterator and its reader threads). The loop pays none of them between steps:

- one background thread builds the pipeline (started while the previous epoch ends: evaluation,
  checkpoints; for the first epoch, before the step's trace), reads exactly `num_batches` batches
  (the loop knows the epoch's length; the pipeline's gap check still covers every element, because
  a missing sample shifts the positions of the batch it falls in, and the end sentinel rides in the
  last batch), and hands each one over through a short queue;
- each batch arrives as the pipeline made it (uint8 frames) and is given to `place`, the step's
  own way of putting it where it computes (the GPU: a quarter of float32's bytes cross the bus, and
  the frames are mapped to [-1, 1] there), while the device still runs the previous steps;
- the probe of the data digest (the first pixel of each sample) is taken on the host here, so the
  loop never reads a device tensor back;
- the thread drops the exhausted iterator itself: the pipeline's teardown never runs on the loop.

The batches are those of `train_dataset` for the same arguments, so determinism and exact resume
are unchanged; only the time and the thread at which they are read move.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from edgeflow.data.pipeline import to_unit_range

# Batches placed ahead of the one the loop takes: enough to hide a copy behind a step.
DEPTH = 2


@dataclass(frozen=True)
class Batch:
    inputs: Any        # what `place` returned: the step's inputs on its device(s)
    probe: np.ndarray  # float32 [size, 8]: pixel (0, 0) of x (mapped to [-1, 1]) and of the flow
    size: int


def probe(x: Any, flow: Any) -> np.ndarray:
    """The data digest's probe of a host batch: pixel (0, 0) of every sample, x as the step sees it."""
    pair = x[:, 0, 0, :]
    if pair.dtype == tf.uint8:
        pair = to_unit_range(pair)
    return np.concatenate([np.asarray(pair, np.float32), np.asarray(flow[:, 0, 0, :], np.float32)], axis=1)


def _as_is(x: Any, flow: Any) -> Any:
    return (to_unit_range(x) if x.dtype == tf.uint8 else x), flow


class EpochFeed:
    """`num_batches` batches of the dataset `make()` returns, read and placed ahead from construction on."""

    def __init__(self, make: Callable[[], Any], num_batches: int,
                 place: Callable[[Any, Any], Any] | None = None) -> None:
        self.num_batches = int(num_batches)
        self._place = place or _as_is
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=DEPTH)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), name="epoch-feed", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[], Any]) -> None:
        try:
            if self.num_batches > 0:
                iterator = iter(make())
                for _ in range(self.num_batches):
                    if self._closed.is_set():
                        break
                    x, flow = next(iterator)
                    item = Batch(self._place(x, flow), probe(x, flow), int(x.shape[0]))
                    if not self._put(item):
                        break
                # The pipeline's teardown happens here, in this thread, as this frame lets go of it;
                # the loop took its last batch already and does not wait for anything more.
                del iterator
        except BaseException as exc:  # re-raised in the training thread, where the loop handles it
            self._put(exc)

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.num_batches):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading (a run ending before this epoch ends) and wait for the thread to let go."""
        self._closed.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()
