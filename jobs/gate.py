"""The preflight gate: nothing is queued, and no trainer starts, unless the data check passes.

Runs `edgeflow.data.preflight.run_preflight` (light: no TensorFlow) on the login node before
submission and again on the compute node before the trainer starts (the node may see other files).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeflow.config import Config


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    report: str  # the preflight report as the user should see it


def run_gate(cfg: Config) -> GateResult:
    """Run the data preflight for `cfg`; any error it raises is a refusal with that error as reason."""
    try:
        from edgeflow.data.preflight import run_preflight
    except ImportError as exc:
        return GateResult(False, f"the data preflight is not available: {exc}", "")
    try:
        report = run_preflight(cfg)
    except Exception as exc:  # a crashing check must refuse, not submit
        reason = f"{type(exc).__name__}: {exc}"
        return GateResult(False, reason, f"preflight could not run: {reason}")
    ok = bool(getattr(report, "ok", False))
    reason = str(getattr(report, "reason", "") or ("" if ok else "preflight failed"))
    to_text = getattr(report, "to_text", None)
    text = to_text() if callable(to_text) else str(report)
    return GateResult(ok, reason, text)
