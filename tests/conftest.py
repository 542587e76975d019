"""Shared test helpers.

Tests that need a real service (SLURM, Prometheus) call `require_service`: without the service they
skip with the reason, but under EDGEFLOW_REQUIRE_SERVICES=1 (set by CI) a missing service fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO


def require_service(available: bool, reason: str) -> None:
    if available:
        return
    if os.environ.get("EDGEFLOW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing (EDGEFLOW_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo data set rendered once per session: <dir>/train (24 samples), <dir>/val (8)."""
    from edgeflow.data.demo import render_demo_dataset

    out = tmp_path_factory.mktemp("demo_data")
    render_demo_dataset(out, n_train=24, n_val=8, seed=0)
    return out
