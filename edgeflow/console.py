"""What the kit prints on a console: its loggers, and TensorFlow's start-up noise kept off it.

Light module (no TensorFlow import). The loggers write to whatever `sys.stdout`/`sys.stderr` is at
the time of the message, so redirections (submitit's log files, pytest's capture) see them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile


class _CurrentStream(logging.StreamHandler):
    """A StreamHandler bound to the name of a sys stream, not to the object it was at start-up."""

    def __init__(self, which: str) -> None:
        self.which = which
        super().__init__(getattr(sys, which))

    @property
    def stream(self):  # noqa: ANN201 (logging's own attribute)
        return getattr(sys, self.which)

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def console_logger(name: str, fmt: str, stream: str = "stderr", datefmt: str | None = None) -> logging.Logger:
    """A logger that prints `fmt` lines to sys.<stream> (INFO and up), set up once per name."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, _CurrentStream) for h in logger.handlers):
        handler = _CurrentStream(stream)
        handler.setFormatter(logging.Formatter(fmt, datefmt=datefmt))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


# TensorFlow's start-up lines that say nothing a user can act on: Abseil's notice, info lines (oneDNN,
# CPU instructions, "Could not find cuda drivers"), the CPU-feature hint's second line, the duplicate
# CUDA-library registrations and cuInit's failure on a machine without a GPU.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|^I\d{4} [\d:.]+\s+\d+ \S+\] "
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning|failed call to cuInit"
    r"|computation_placer\.cc.*already registered")


def quiet_tensorflow() -> None:
    """Import TensorFlow (and let it look for GPUs) with its start-up noise kept off the console.

    TF_CPP_MIN_LOG_LEVEL alone no longer does it: TensorFlow logs these lines through Abseil before
    reading it. So standard error is caught at the file-descriptor level while TensorFlow starts, and
    every line that is not known noise is passed on. TF_CPP_MIN_LOG_LEVEL=0 set by the user shows all.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # CUDA's start-up lines come with the first look
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.WARNING)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", errors="replace").splitlines()
                    if line.strip() and not _NOISE.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)
