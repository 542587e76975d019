"""The run signature and code version that run.json records (docs/design.md).

Light module. The signature names what makes two runs' checkpoints interchangeable (model, input size,
arch semantics, loss); it is checked against an existing run before anything is written.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import edgeflow
from edgeflow.config import Config
from edgeflow.space.arch import BLOCK_NAMES, NUM_OPTIONS

MODEL_ID = "edgeflownas-supernet-v1"
LOSS_ID = "edgeflownas-v1 multiscale uncertainty 0.125/0.25/0.5, coupled L2 on conv kernels"


class SignatureMismatch(ValueError):
    """An existing run was trained with a different model, input size, arch semantics or loss."""


def signature(cfg: Config) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "input_size": [cfg.data.input_height, cfg.data.input_width],
        "arch_blocks": list(BLOCK_NAMES),
        "arch_options": NUM_OPTIONS,
        "loss": LOSS_ID,
        "flow_clip": cfg.data.flow_clip,
    }


def signature_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: run has {old.get(k)!r}, config gives {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_signature(run_json: dict[str, Any] | None, cfg: Config, where: Path) -> None:
    """Raise SignatureMismatch when the run at `where` is incompatible with `cfg`."""
    if not run_json or "signature" not in run_json:
        return
    diffs = signature_differences(run_json["signature"], signature(cfg))
    if diffs:
        raise SignatureMismatch(f"run {where} was trained with a different setup, so its checkpoints "
                                f"cannot be continued with this config: " + "; ".join(diffs))


def code_version() -> str:
    """EDGEFLOW_CODE_VERSION (set in the image), else the git commit of the checkout, else the package."""
    env = os.environ.get("EDGEFLOW_CODE_VERSION")
    if env:
        return env
    repo = Path(edgeflow.__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5, check=True)
        return f"{edgeflow.__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return edgeflow.__version__
