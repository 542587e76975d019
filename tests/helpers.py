"""Helpers shared by the tests: the repository, a CLI runner, a tiny-config factory, sparse events.

Imported as `from tests.helpers import ...` (pytest runs with the repository on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from edgeflow.rundir import EVENT_FIELDS, EventLog

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 900,
            check: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` as a user would run it, e.g. run_cli("edgeflow", "train", "--config", c)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([PYTHON, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=check)


def tiny_config(tmp_path: Path, data: Path, name: str = "tiny", **sections: dict[str, Any]) -> Path:
    """A config file for a small CPU run on the demo data at 32x48; `sections` override keys."""
    raw: dict[str, Any] = {
        "runtime": {"experiment_name": name, "output_root": str(tmp_path / "out"), "seed": 0,
                    "heartbeat_seconds": 0.5},
        "data": {"train_dir": str(data / "train"), "val_dir": str(data / "val"), "input_height": 32,
                 "input_width": 48},
        "train": {"num_epochs": 1, "batch_size": 4, "lr": 1e-3},
        "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1,
                 "pool": ["000000000", "222222222"], "early_stop_patience": 5,
                 "min_epochs_before_early_stop": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class SparseEventLog(EventLog):
    """An EventLog for monitor tests that write only the fields under test: the schema's other fields
    are filled with None, so the production writer's schema check still runs on every line."""

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        for name in EVENT_FIELDS.get(event, ()):
            fields.setdefault(name, None)
        return super().emit(event, **fields)
