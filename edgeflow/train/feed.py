"""Training input of one epoch, started ahead of time and ended without waiting on the input pipeline.

An epoch's tf.data pipeline costs a start-up (building the tables, tracing its map functions,
starting its threads, decoding the first batch) and an end (the extra `next` that finds the end of
the sequence, then the teardown of the iterator and its reader threads). The loop pays neither
between steps:

- the pipeline is built and its first batch read in a background thread, started while the
  previous epoch ends (evaluation, checkpoints) or, for the first epoch, before the step's trace;
- exactly `num_batches` batches are taken (the loop knows the epoch's length); the gap check of the
  pipeline still covers every element, because a missing sample shifts the positions of the batch
  it falls in, and the end sentinel rides in the last batch;
- the exhausted iterator is released in the background.

The batches are those of `train_dataset` for the same arguments, so determinism and exact resume
are unchanged; only the time at which they are read moves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any


class EpochFeed:
    """`num_batches` batches of the dataset `make()` returns, read ahead from construction on."""

    def __init__(self, make: Callable[[], Any], num_batches: int) -> None:
        self.num_batches = int(num_batches)
        self._iterator: Iterator[Any] | None = None
        self._first: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(make,), name="epoch-feed", daemon=True)
        self._thread.start()

    def _start(self, make: Callable[[], Any]) -> None:
        try:
            if self.num_batches <= 0:
                return
            self._iterator = iter(make())
            self._first = next(self._iterator)
        except BaseException as exc:  # re-raised in the training thread, where the loop handles it
            self._error = exc

    def __iter__(self) -> Iterator[Any]:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self.num_batches <= 0:
            return
        first, self._first = self._first, None
        yield first
        iterator = self._iterator
        assert iterator is not None
        for _ in range(self.num_batches - 1):
            yield next(iterator)
        self._release()

    def _release(self) -> None:
        if self._iterator is None:
            return
        # Dropping the last reference tears the pipeline's threads down: done by a thread, not the loop.
        box = [self._iterator]
        self._iterator = None
        threading.Thread(target=box.clear, name="epoch-feed-end", daemon=True).start()

    def close(self) -> None:
        """Wait for the start-up to finish and drop the pipeline (a run ending before this epoch)."""
        self._thread.join()
        self._first = None
        self._error = None
        self._iterator = None
