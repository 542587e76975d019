"""The batch script `make submit` queues, compared with a reviewed copy (tests/data/golden_sbatch.sh).

Built by submitit itself (jobs.backends.batch_script, no SLURM needed). A submitit upgrade that changes
what the job runs (resources, signal, requeue, the srun line) fails here; review the new script and
update the golden file with `EDGEFLOW_UPDATE_GOLDEN=1`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobs import profile as profile_mod
from jobs.backends import batch_script

GOLDEN = Path(__file__).parent / "data" / "golden_sbatch.sh"
PROFILE = {"name": "golden", "executor": "slurm",
           "slurm": {"partition": "gpu", "account": "proj", "nodes": 1, "gpus_per_node": 4, "cpus_per_task": 16,
                     "mem_gb": 64, "time_min": 240, "signal_delay_s": 120, "max_requeues": 3,
                     "setup": ["module load cuda"], "additional": {"exclusive": True}}}


def normalise(text: str, folder: Path) -> str:
    return text.replace(str(folder), "<FOLDER>").replace(sys.executable, "<PYTHON>")


def test_batch_script_matches_the_golden_file(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    script = normalise(batch_script(profile_mod.from_dict(PROFILE), folder, "edgeflow-golden",
                                    comment="edgeflow golden"), folder)
    if os.environ.get("EDGEFLOW_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text(), "submitit's batch script changed: review it, then update the golden file"
