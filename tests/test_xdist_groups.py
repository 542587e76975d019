"""`make test` runs pytest-xdist with --dist loadgroup, and tests/conftest.py puts each file in one group
(the SLURM tests in one group of their own): a file's module fixtures are built once, and SLURM jobs of
the tests queue one at a time. A pytest/xdist pair that drops the group does so silently; this fails."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="not run by pytest-xdist (make test is)")
def test_the_file_is_this_tests_xdist_group(request: pytest.FixtureRequest) -> None:
    # xdist appends "@<group>" to the node id of a grouped test; the scheduler keeps a group on one worker.
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py"), request.node.nodeid
