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
    sig: dict[str, Any] = {
        "model": MODEL_ID,
        "input_size": [cfg.data.input_height, cfg.data.input_width],
        "arch_blocks": list(BLOCK_NAMES),
        "arch_options": NUM_OPTIONS,
        "loss": LOSS_ID,
        "flow_clip": cfg.data.flow_clip,
    }
    if cfg.train.arch:  # a stand-alone net of one arch; absent for a supernet (older runs' signatures too)
        sig["arch"] = cfg.train.arch
    return sig


def network(arch: str | None) -> str:
    return f"the stand-alone net of arch {arch}" if arch else "a supernet"


def signature_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: run has {old.get(k)!r}, config gives {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_signature(run_json: dict[str, Any] | None, cfg: Config, where: Path, *, weights_only: bool = False) -> None:
    """Raise SignatureMismatch when the run at `where` is incompatible with `cfg`.

    `weights_only`: a warm start, which takes weights and nothing else: a stand-alone net may start from
    a supernet's weights of its arch (or its own arch's stand-alone run), never the reverse."""
    if not run_json or "signature" not in run_json:
        return
    old = dict(run_json["signature"])
    have, want = old.pop("arch", None), cfg.train.arch or None
    if weights_only:
        if have and have != want:
            raise SignatureMismatch(f"run {where} is {network(have)}: its weights cannot start {network(want)}; "
                                    f"start from a supernet run or a stand-alone run of the same arch")
    elif have != want:
        raise SignatureMismatch(f"run {where} trained {network(have)} and the config trains {network(want)} "
                                f"(train.arch): its checkpoints cannot be continued; choose another "
                                f"runtime.experiment_name (checkpoint.init_from={where} starts from its weights)")
    new = signature(cfg)
    new.pop("arch", None)
    diffs = signature_differences(old, new)
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
