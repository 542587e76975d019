"""TensorBoard scalars of a run: `tensorboard --logdir outputs` shows every run under its name.

Written with tf.summary into `<run>/tensorboard/`, one point per epoch with the epoch as the step, so
a requeued or resumed run continues the same curves (each start adds an event file; TensorBoard
reads them all). The figures are those of the `epoch` and `eval` events, under `train/`, `eval/` and
`eval_arch/<code>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

TRAIN_SCALARS = ("train_loss", "grad_norm", "grad_norm_p90", "clip_rate", "lr", "fairness_gap",
                 "nonfinite_steps", "samples_per_second", "epoch_seconds", "loss_scale")
EVAL_SCALARS = ("mean_epe", "std_epe", "median_epe", "p90_epe", "best_epe", "bad_epochs")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Summaries:
    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer = tf.summary.create_file_writer(str(self.logdir))

    def _write(self, values: Mapping[str, float | None], step: int) -> None:
        with self.writer.as_default(step=step):
            for tag, value in values.items():
                if value is not None:
                    tf.summary.scalar(tag, value)
        self.writer.flush()

    def epoch(self, fields: Mapping[str, Any]) -> None:
        """The figures of one `epoch` event (missing or non-finite ones are left out)."""
        epoch = int(fields["epoch"])
        values = {f"train/{name.removeprefix('train_')}": _finite(fields.get(name)) for name in TRAIN_SCALARS}
        self._write(values, epoch)

    def evaluation(self, fields: Mapping[str, Any]) -> None:
        """The figures of one `eval` event, with one curve per arch of the pool."""
        epoch = int(fields["epoch"])
        values = {f"eval/{name}": _finite(fields.get(name)) for name in EVAL_SCALARS}
        arch_epe = fields.get("arch_epe")
        if isinstance(arch_epe, Mapping):
            values.update({f"eval_arch/{code}": _finite(v) for code, v in arch_epe.items()})
        self._write(values, epoch)

    def close(self) -> None:
        self.writer.close()
