"""TensorBoard scalars of a run: `tensorboard --logdir outputs` shows every run under its name.

Written with tf.summary into `<run>/tensorboard/`, one point per epoch with the epoch as the step, so
a requeued or resumed run continues the same curves (each start adds an event file; TensorBoard
reads them all). Which figures, under which group (`train/`, `eval/`), is the figure table's call
(edgeflow/rundir/figures.py); the pool's per-arch EPE goes under `eval_arch/<code>`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from edgeflow.rundir.figures import tensorboard_figures


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def tag(group: str, name: str) -> str:
    """`train/loss` for train_loss (the group already says it), `eval/mean_epe`, ..."""
    return f"{group}/{name.removeprefix(group + '_')}"


class Summaries:
    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer = tf.summary.create_file_writer(str(self.logdir))

    def write(self, event: str, fields: Mapping[str, Any]) -> None:
        """The figures of one `epoch` or `eval` event (missing or non-finite ones are left out)."""
        values = {tag(f.tensorboard, f.name): _finite(fields.get(f.name)) for f in tensorboard_figures(event)}
        arch_epe = fields.get("arch_epe") if event == "eval" else None
        if isinstance(arch_epe, Mapping):
            values.update({f"eval_arch/{code}": _finite(v) for code, v in arch_epe.items()})
        with self.writer.as_default(step=int(fields["epoch"])):
            for name, value in values.items():
                if value is not None:
                    tf.summary.scalar(name, value)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
