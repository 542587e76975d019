"""One line, no traceback, when Ctrl-C or SIGTERM stops a command that writes a folder whole (export,
import-v1): the staged folder is already removed (edgeflow/rundir/staging.py), so nothing is lost."""

from __future__ import annotations

import sys
from pathlib import Path

from edgeflow.rundir import EXIT_FAILED, EXIT_PREEMPTED, staging


def interrupted(prog: str, exc: BaseException, target: Path) -> int:
    """Say what stopped `prog`; SIGTERM exits 75 (run it again), Ctrl-C 1, as training does."""
    what = f"stopped by {exc}" if isinstance(exc, staging.Interrupted) else "interrupted (Ctrl-C)"
    print(f"{prog}: {what} before it finished; nothing partial is left behind ({target} is as it was): "
          f"run it again", file=sys.stderr)
    return EXIT_PREEMPTED if isinstance(exc, staging.Interrupted) else EXIT_FAILED
