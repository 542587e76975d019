"""What each training step did, recorded on the device and read by the host only now and then.

A step writes one row (loss, grad norm before clipping, clipped, outcome, loss scale) into a ring of
device memory and keeps the run of consecutive non-finite steps there too; the host reads the rows
at heartbeats, progress lines and the end of an epoch (`StepLog.read`), never after every step, so
the next steps are queued while the device still computes. Reading the rows gives the host exactly
the float32 values it used to read step by step, so epoch statistics, the console and resume are
unchanged.

Because the host learns what happened only at a read, decisions the old loop took after every step
live here: once `limit` non-finite steps come in a row (train.max_nonfinite_steps), or once a
multi-worker step carried a stop signal, the log is *halted*: later steps change nothing (their
update is a zero step, their BN statistics are put back) and are recorded as `HALTED`, so whenever
the host reads, the run's state is exactly that of the step that decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

# Row outcome: trained, skipped as non-finite, skipped as a float16 overflow, or not run (halted).
APPLIED, NONFINITE, OVERFLOW, HALTED = 0, 1, 2, 3
# Why the log halted.
RUNNING, DIVERGED, STOPPED = 0, 1, 2
_COLUMNS = 5  # loss, grad_norm, clipped, outcome, loss scale after the step (NaN without one)


@dataclass(frozen=True)
class StepRecord:
    loss: float
    grad_norm: float
    clipped: bool
    outcome: int
    loss_scale: float | None

    @property
    def applied(self) -> bool:
        return self.outcome == APPLIED

    @property
    def overflow(self) -> bool:
        return self.outcome == OVERFLOW


@dataclass(frozen=True)
class Readout:
    records: list[StepRecord]  # the steps since the previous read, in order
    halt: int                  # RUNNING, DIVERGED or STOPPED
    consecutive_nonfinite: int


class StepLog(tf.Module):
    """A ring of `capacity` step rows on the device; the host must read at least every `capacity` steps."""

    def __init__(self, capacity: int) -> None:
        super().__init__(name="step_log")
        if capacity < 1:
            raise ValueError(f"step log capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.rows = tf.Variable(tf.zeros([self.capacity, _COLUMNS]), trainable=False, name="rows")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
        self.consecutive = tf.Variable(0, dtype=tf.int64, trainable=False, name="consecutive_nonfinite")
        self.limit = tf.Variable(0, dtype=tf.int64, trainable=False, name="limit")  # 0: never halt
        self.halt = tf.Variable(RUNNING, dtype=tf.int32, trainable=False, name="halt")
        self._read = 0  # rows the host has read

    # ------------------------------------------------------------------ host side
    def start(self, *, consecutive_nonfinite: int = 0, limit: int = 0) -> None:
        """Before a run's steps: the run of non-finite steps it resumes with, and when to halt."""
        self.consecutive.assign(int(consecutive_nonfinite))
        self.limit.assign(int(limit))
        self.halt.assign(RUNNING)

    def read(self) -> Readout:
        """The rows written since the last read. Waits for the queued steps: call it rarely."""
        count = int(self.count.numpy())
        new = count - self._read
        if new > self.capacity:
            raise RuntimeError(f"step log: {new} steps since the last read, more than its {self.capacity} rows")
        rows = self.rows.numpy() if new else np.zeros((0, _COLUMNS), np.float32)
        records = []
        for i in range(self._read, count):
            loss, norm, clipped, outcome, scale = (float(v) for v in rows[i % self.capacity])
            records.append(StepRecord(loss=loss, grad_norm=norm, clipped=bool(clipped), outcome=int(outcome),
                                      loss_scale=None if np.isnan(scale) else scale))
        self._read = count
        return Readout(records, int(self.halt.numpy()), int(self.consecutive.numpy()))

    # ------------------------------------------------------------------ graph side
    def halted(self) -> tf.Tensor:
        return self.halt > RUNNING

    def write(self, *, loss: tf.Tensor, grad_norm: tf.Tensor, clipped: tf.Tensor, nonfinite: tf.Tensor,
              overflow: tf.Tensor, loss_scale: tf.Tensor | None = None, stop: tf.Tensor | None = None) -> None:
        """Record one step (inside the step function); `nonfinite`/`overflow` as the step decided them."""
        halted = self.halted()
        outcome = tf.where(halted, HALTED, tf.where(overflow, OVERFLOW, tf.where(nonfinite, NONFINITE, APPLIED)))
        before = self.consecutive
        # An overflow neither counts towards divergence nor ends a run of non-finite steps.
        consecutive = tf.where(halted, before, tf.where(nonfinite, before + 1, tf.where(overflow, before, 0)))
        diverged = tf.logical_and(self.limit > 0, consecutive >= self.limit)
        stopping = tf.constant(False) if stop is None else tf.convert_to_tensor(stop, tf.bool)
        halt = tf.where(halted, self.halt, tf.where(diverged, DIVERGED, tf.where(stopping, STOPPED, RUNNING)))
        scale = tf.constant(np.nan, tf.float32) if loss_scale is None else tf.cast(loss_scale, tf.float32)
        row = tf.stack([tf.cast(loss, tf.float32), tf.cast(grad_norm, tf.float32), tf.cast(clipped, tf.float32),
                        tf.cast(outcome, tf.float32), scale])
        index = tf.math.floormod(self.count, self.capacity)
        self.rows.scatter_nd_update(tf.reshape(index, [1, 1]), row[None])
        self.count.assign_add(1)
        self.consecutive.assign(consecutive)
        self.halt.assign(halt)
