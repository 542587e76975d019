"""Shared test helpers.

Tests that need a real service (SLURM, Prometheus) call `require_service`: without the service they
skip with the reason, but under EDGEFLOW_REQUIRE_SERVICES=1 (set by CI) a missing service fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `make test` runs the suite on several workers (pytest-xdist, --dist loadgroup): a file's tests stay
    # on one worker, so its module fixtures (a trained run, an export) are built once, and every test
    # that queues jobs on the one-node SLURM runs on the same worker, one at a time, as on a real queue.
    groups: dict[int, str] = {}
    for item in items:
        group = "slurm" if item.get_closest_marker("slurm") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        groups[id(item)] = group
    # Longest first, so no long group starts last while the other worker idles: the SLURM group, then
    # the files that train (any `slow` test), then the rest. `make test` passes --no-loadscope-reorder
    # so xdist keeps this order instead of putting the groups with most tests first.
    slow_groups = {groups[id(i)] for i in items if i.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        group = groups[id(item)]
        return 0 if group == "slurm" else 1 if group in slow_groups else 2

    items.sort(key=rank)  # stable: a file's tests keep their order


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
