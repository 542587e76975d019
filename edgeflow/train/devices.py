"""The devices a trainer computes on: recorded in run.json, and GPUs asked for but missing refused at start.

A job that SLURM gave GPUs (CUDA_VISIBLE_DEVICES, read through edgeflow.jobenv) but whose TensorFlow
sees none would otherwise train on the node's CPU cores, a hundred times slower, until its time limit:
it stops before anything is written instead (exit 2), saying why.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from edgeflow import jobenv
from edgeflow.config import ConfigError

# What CUDA_VISIBLE_DEVICES holds when a job got no GPU (or hides them on purpose).
_NO_GPU = {"", "-1", "NoDevFiles"}


class DeviceError(ConfigError):
    """GPUs were asked for but TensorFlow cannot use them; raised before training starts (exit 2)."""


def asked_for_gpus() -> list[str]:
    """The GPUs the job (SLURM, or the user) made visible to this process."""
    return [g for g in jobenv.visible_gpus() if g not in _NO_GPU]


def check_gpus() -> None:
    """Refuse to start on the CPU when the job was given GPUs that TensorFlow does not see."""
    asked = asked_for_gpus()
    if asked and not tf.config.list_physical_devices("GPU"):
        build = tf.sysconfig.get_build_info()
        cuda = build.get("cuda_version") if build.get("is_cuda_build") else None
        why = (f"this TensorFlow {tf.__version__} is built for CUDA {cuda}: the driver or the GPU is not "
               f"reachable (inside Apptainer: run with --nv; check nvidia-smi and `make image-check`)"
               if cuda else f"this TensorFlow {tf.__version__} has no CUDA support (install tensorflow[and-cuda], "
                            f"or use the image `make image` builds)")
        raise DeviceError(f"the job was given GPU(s) {','.join(asked)} (CUDA_VISIBLE_DEVICES) but TensorFlow sees "
                          f"none: {why}; refusing to train on the CPU")


def describe() -> dict[str, Any]:
    """The devices this trainer computes on, for run.json."""
    gpus = tf.config.list_physical_devices("GPU")
    build = tf.sysconfig.get_build_info()
    record: dict[str, Any] = {"kind": "GPU" if gpus else "CPU", "count": len(gpus), "tensorflow": tf.__version__}
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(str(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)))
            except (ValueError, RuntimeError):
                names.append(gpu.name)
        record.update(names=names, cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
    asked = asked_for_gpus()
    if asked:
        record["visible"] = ",".join(asked)
    return record
