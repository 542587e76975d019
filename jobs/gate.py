"""The preflight gate: nothing is queued, and no trainer starts, unless the data check passes.

Runs `edgeflow.data.preflight.run_preflight` (light: no TensorFlow) on the login node before
submission and again on the compute node before the trainer starts (the node may see other files).
Beyond the headers it decodes samples as `data.preflight_deep` says (default `auto`: all of a small
data set, `data.preflight_sample` of a large one), in parallel with a progress line and a time
estimate, so a corrupt PNG body or an all-NaN .flo stops here and never reaches a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeflow.config import Config
from edgeflow.data.preflight import run_preflight


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    report: str  # the preflight report as the user should see it
    # What the node prints, after the login node printed the table at submission: the one OK line when the
    # data passed with nothing to point out (no invalid sample, no note), else the whole report.
    brief: str = ""


def run_gate(cfg: Config) -> GateResult:
    """Run the data preflight for `cfg`; any error it raises is a refusal with that error as reason."""
    try:
        report = run_preflight(cfg, deep=cfg.data.preflight_deep, progress=True)
    except Exception as exc:  # a crashing check must refuse, not submit
        reason = f"{type(exc).__name__}: {exc}"
        return GateResult(False, reason, f"preflight could not run: {reason}")
    reason = report.reason or ("" if report.ok else "preflight failed")
    text = report.to_text()
    clean = report.ok and not report.notes and not any(r.scan is not None and r.scan.invalid for r in report.rows)
    return GateResult(report.ok, reason, text, text.splitlines()[-1] if clean else text)
