"""Exit codes and run statuses: one table for every command of the kit.

The trainer exits with these, the launcher decides on a requeue from them, the monitor exports the
statuses, and every other command (`preflight`, `eval`, `jobs ...`) uses the same code for the same
failure.
"""

from __future__ import annotations

EXIT_OK = 0            # completed or early_stopped (or: the command did what was asked)
EXIT_FAILED = 1        # an unexpected error; see run_end.reason
EXIT_BAD_INPUT = 2     # bad config, arguments or run directory: nothing to retry until a human fixes it
EXIT_DIVERGED = 3      # too many consecutive non-finite steps
EXIT_DATA_ERROR = 4    # a sample broke while reading it (or preflight refused the data): never requeued
EXIT_SUBMIT_FAILED = 5  # the scheduler refused or failed a submission (jobs submit)
EXIT_PREEMPTED = 75    # SIGTERM/SIGUSR2: checkpoint written, resume by running again (EX_TEMPFAIL)

END_STATUSES = ("completed", "early_stopped", "diverged", "failed", "data_error", "preempted", "timeout")
# `imported`: a run folder made by `import-v1` from the original trainer's checkpoint; it holds weights
# to start a new experiment from, and was never trained here.
RUN_STATUSES = ("running", *END_STATUSES, "imported")

# The trainer's exit code for each way a run ends (`timeout` is the launcher's: out of requeues).
STATUS_EXIT_CODE = {
    "completed": EXIT_OK,
    "early_stopped": EXIT_OK,
    "failed": EXIT_FAILED,
    "diverged": EXIT_DIVERGED,
    "data_error": EXIT_DATA_ERROR,
    "preempted": EXIT_PREEMPTED,
}

# Exit codes after which running the same job again can succeed without a human.
REQUEUE_EXIT_CODES = frozenset({EXIT_PREEMPTED})

EXIT_CODE_MEANING = {
    EXIT_OK: "done",
    EXIT_FAILED: "unexpected failure (see the log)",
    EXIT_BAD_INPUT: "bad config, arguments or run directory",
    EXIT_DIVERGED: "training diverged",
    EXIT_DATA_ERROR: "bad data",
    EXIT_SUBMIT_FAILED: "the scheduler refused or failed the submission",
    EXIT_PREEMPTED: "preempted; checkpoint written, run again to resume",
}
