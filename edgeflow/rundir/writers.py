"""Who made a hidden temporary file or folder: its name carries the writer's host and process id, so
a later writer tells what a dead writer left (to remove) from a live writer's work (never touched).

A name's tail is `HOST-PID-TOKEN`; only the host's own dead processes count as dead (on a shared file
system a writer on another node may be alive, and its PIDs mean nothing here).

Light module (no TensorFlow).
"""

from __future__ import annotations

import os
import re
import uuid

from edgeflow import jobenv
from edgeflow.rundir.paths import hostname


def host() -> str:
    return re.sub(r"[^A-Za-z0-9._]", "_", hostname()) or "host"


def tag() -> str:
    """`HOST-PID-TOKEN` for a new temporary of this process."""
    return f"{host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def writer(tail: str) -> tuple[str, int] | None:
    """(host, pid) from a name's tail `HOST-PID-TOKEN`, or a bare `PID` (older names: this host's)."""
    if tail.isdigit():
        return host(), int(tail)
    parts = tail.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def dead_here(tail: str) -> bool:
    """The writer named by `tail` was a process of this host that has ended."""
    found = writer(tail)
    return found is not None and found[0] == host() and found[1] != os.getpid() and not jobenv.pid_alive(found[1])
