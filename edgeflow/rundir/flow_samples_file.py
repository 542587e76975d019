"""flow_samples.npz: the flow fields of the latest evaluation's pictures (design §2).

After each evaluation the trainer runs a few fixed eval samples (the first of the first eval batch)
through some archs of the pool (the best and the worst) and keeps the frames, the ground truth and
each arch's predicted flow here, replacing the previous evaluation's; `edgeflow report` draws them and
the trainer writes the same pictures as TensorBoard images. A NumPy archive read without pickles.

Light module (NumPy only).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeflow.rundir.atomic import atomic_write_bytes

FORMAT_VERSION = 1


class FlowSamplesError(ValueError):
    """flow_samples.npz is missing a part or its parts do not fit together; the message names the file."""


@dataclass(frozen=True)
class FlowSamples:
    epoch: int                 # the evaluation's epoch
    sample_ids: list[str]      # the eval samples shown, in eval order
    frames: np.ndarray         # uint8 [N, H, W, 6]: frame 1 then frame 2, RGB, as the model saw them (crop)
    truth: np.ndarray          # float32 [N, H, W, 2]: the label at the output's size, in pixels
    archs: list[str]           # arch codes shown (best first)
    arch_epe: list[float]      # each arch's pool EPE at this evaluation (mean over the eval batches)
    predicted: np.ndarray      # float32 [A, N, H, W, 2]: each arch's full-resolution flow
    bn_mode: str = "recalibrate"

    def __post_init__(self) -> None:
        n, a = len(self.sample_ids), len(self.archs)
        problems = []
        if self.frames.ndim != 4 or self.frames.shape[0] != n or self.frames.shape[-1] != 6:
            problems.append(f"frames {self.frames.shape} for {n} samples (expected [N, H, W, 6])")
        if self.truth.ndim != 4 or self.truth.shape[0] != n or self.truth.shape[-1] != 2:
            problems.append(f"truth {self.truth.shape} for {n} samples (expected [N, H, W, 2])")
        if self.predicted.shape != (a, *self.truth.shape):
            problems.append(f"predicted {self.predicted.shape} for {a} archs (expected {(a, *self.truth.shape)})")
        if len(self.arch_epe) != a:
            problems.append(f"{len(self.arch_epe)} pool EPEs for {a} archs")
        if problems:
            raise FlowSamplesError("; ".join(problems))


def write_flow_samples(path: str | Path, samples: FlowSamples) -> None:
    """Atomically replace `path` with `samples` (compressed)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf, version=np.int64(FORMAT_VERSION), epoch=np.int64(samples.epoch),
        sample_ids=np.asarray(samples.sample_ids, dtype=str), archs=np.asarray(samples.archs, dtype=str),
        arch_epe=np.asarray(samples.arch_epe, dtype=np.float64), bn_mode=np.asarray(samples.bn_mode, dtype=str),
        frames=np.asarray(samples.frames, dtype=np.uint8), truth=np.asarray(samples.truth, dtype=np.float32),
        predicted=np.asarray(samples.predicted, dtype=np.float32))
    atomic_write_bytes(path, buf.getvalue())


def read_flow_samples(path: str | Path) -> FlowSamples:
    """The samples in `path`; FlowSamplesError naming the file when it is not one of ours."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            parts = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FlowSamplesError(f"{path}: not a flow samples archive ({exc})") from None
    missing = sorted({"version", "epoch", "sample_ids", "archs", "arch_epe", "bn_mode", "frames", "truth",
                      "predicted"} - set(parts))
    if missing:
        raise FlowSamplesError(f"{path}: missing {', '.join(missing)}")
    if int(parts["version"]) != FORMAT_VERSION:
        raise FlowSamplesError(f"{path}: format version {int(parts['version'])}, this edgeflow reads {FORMAT_VERSION}")
    try:
        return FlowSamples(epoch=int(parts["epoch"]), sample_ids=[str(s) for s in parts["sample_ids"]],
                           frames=parts["frames"].astype(np.uint8, copy=False),
                           truth=parts["truth"].astype(np.float32, copy=False),
                           archs=[str(a) for a in parts["archs"]],
                           arch_epe=[float(v) for v in parts["arch_epe"]],
                           predicted=parts["predicted"].astype(np.float32, copy=False),
                           bn_mode=str(parts["bn_mode"]))
    except FlowSamplesError as exc:
        raise FlowSamplesError(f"{path}: {exc}") from None
