"""Compile the int8 TFLite model for an Arm Ethos-U NPU with Arm's Vela and read its report.

Vela is an optional dependency (`pip install 'edgeflow[deploy]'`); it runs as its own process so its
output and any crash stay apart from the export. The figures come from its summary CSV (memory,
cycles, inferences per second) and its operator listing (what runs on the NPU and what falls back to
the CPU). The target is an accelerator with Vela's default system for it, or a device
(edgeflow/export/device.py): the board's own .ini, system configuration and memory mode.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

EXTRA_HINT = "pip install 'edgeflow[deploy]'"
# Vela's --accelerator-config values (ethos-u-vela 5.x).
ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
                "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
                "ethos-u85-2048")
DEFAULT_ACCELERATOR = "ethos-u55-128"
_CPU_LINE = re.compile(r"^\s*CPU:\s*(?P<op>.+?)\s*$")
_COUNT_LINE = re.compile(r"^(?P<where>CPU|NPU) operators = (?P<n>\d+)")


class VelaError(RuntimeError):
    """Vela failed to compile the model, or wrote something this module cannot read."""


class VelaMissing(VelaError):
    """Vela is not installed (the `deploy` extra)."""


def available() -> bool:
    try:
        return importlib.util.find_spec("ethosu.vela") is not None
    except ImportError:  # the parent package itself cannot be imported
        return False


def bundled_config(name: str) -> Path | None:
    """One of the .ini files Vela ships (`Arm/vela.ini`), found without importing Vela; None if absent."""
    try:
        spec = importlib.util.find_spec("ethosu")
    except ImportError:
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "config_files" / name
        if path.is_file():
            return path.resolve()
    return None


def require() -> str:
    """Vela's version; VelaError naming the extra when it is not installed."""
    if not available():
        raise VelaMissing(f"--vela needs Arm's Vela compiler, which is not installed: {EXTRA_HINT}")
    return metadata.version("ethos-u-vela")


def _number(value: str) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


def parse_summary(path: Path) -> dict[str, Any]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 1:
        raise VelaError(f"{path}: expected one summary row, found {len(rows)}")
    return dict(rows[0])


def parse_operators(stdout: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    cpu_ops: list[str] = []
    for line in stdout.splitlines():
        if m := _COUNT_LINE.match(line.strip()):
            counts[m["where"]] = int(m["n"])
        elif m := _CPU_LINE.match(line):
            cpu_ops.append(m["op"])
    if "CPU" not in counts or "NPU" not in counts:
        raise VelaError("Vela printed no operator counts (CPU operators = ..., NPU operators = ...)")
    return {"npu_operators": counts["NPU"], "cpu_operators": counts["CPU"], "cpu_fallback": cpu_ops}


def report(summary: dict[str, str], operators: dict[str, Any]) -> dict[str, Any]:
    """The figures export.json records, in plain units (KiB for memory, as Vela reports them)."""
    def num(key: str) -> float | int:
        if key not in summary:
            raise VelaError(f"Vela's summary has no '{key}' column")
        return _number(summary[key])

    return {
        "accelerator": summary.get("accelerator_configuration"),
        "system_config": summary.get("system_config"),
        "memory_mode": summary.get("memory_mode"),
        "core_clock_hz": num("core_clock"),
        "arena_cache_kib": num("arena_cache_size"),
        "sram_used_kib": num("sram_memory_used"),
        "dram_used_kib": num("dram_memory_used"),
        "on_chip_flash_used_kib": num("on_chip_flash_memory_used"),
        "off_chip_flash_used_kib": num("off_chip_flash_memory_used"),
        "flash_used_kib": num("on_chip_flash_memory_used") + num("off_chip_flash_memory_used"),
        "weights_original_bytes": num("total_original_weights"),
        "weights_encoded_bytes": num("total_npu_encoded_weights"),
        "nn_macs": num("nn_macs"),
        "cycles_npu": num("cycles_npu"),
        "cycles_total": num("cycles_total"),
        "inference_time_s": num("inference_time"),
        "inferences_per_second": num("inferences_per_second"),
        **operators,
    }


def compile_int8(model: Path, out_dir: Path, accelerator: str = DEFAULT_ACCELERATOR,
                 target: Sequence[str] | None = None) -> dict[str, Any]:
    """Run Vela on `model` for `target` (a device's Vela options, `Device.vela_args()`), else for
    `accelerator` with Vela's default system; writes its compiled model and summary into `out_dir`;
    returns the report."""
    version = require()
    if target is not None:
        target = list(target)
    elif accelerator in ACCELERATORS:
        target = ["--accelerator-config", accelerator]
    else:
        raise VelaError(f"--vela-config must be one of {', '.join(ACCELERATORS)}, got {accelerator!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ethosu.vela", *target, "--output-dir", str(out_dir), "--show-cpu-operations",
           str(model)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out_dir / "vela_output.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise VelaError(f"Vela failed (exit {proc.returncode}) on {model.name}: " + " | ".join(tail))
    summaries = sorted(out_dir.glob(f"{model.stem}_summary_*.csv"))
    if len(summaries) != 1:
        raise VelaError(f"Vela wrote {len(summaries)} summary files in {out_dir}, expected 1")
    compiled = out_dir / f"{model.stem}_vela.tflite"
    if not compiled.is_file():
        raise VelaError(f"Vela wrote no compiled model {compiled.name}")
    result = report(parse_summary(summaries[0]), parse_operators(proc.stdout))
    return {"vela_version": version, "compiled_model": compiled.name, "summary_csv": summaries[0].name,
            **result}


# The device figures of an arch (rank, search, the device cache): Vela's report in the units the
# device limits use. vela_latency is the inference time in ms; vela_sram is SRAM in KiB.
FIGURES = ("vela_cycles", "vela_npu_cycles", "vela_inference_ms", "vela_fps", "vela_sram_kib", "vela_flash_kib",
           "vela_dram_kib", "vela_arena_cache_kib", "vela_weights_bytes", "vela_npu_ops", "vela_cpu_ops",
           "vela_cpu_fallback")


def device_figures(vela_report: dict[str, Any]) -> dict[str, Any]:
    r = vela_report
    return {"vela_cycles": int(r["cycles_total"]), "vela_npu_cycles": int(r["cycles_npu"]),
            "vela_inference_ms": float(r["inference_time_s"]) * 1000.0,
            "vela_fps": float(r["inferences_per_second"]), "vela_sram_kib": float(r["sram_used_kib"]),
            "vela_flash_kib": float(r["flash_used_kib"]), "vela_dram_kib": float(r["dram_used_kib"]),
            "vela_arena_cache_kib": float(r["arena_cache_kib"]),
            "vela_weights_bytes": int(r["weights_encoded_bytes"]), "vela_npu_ops": int(r["npu_operators"]),
            "vela_cpu_ops": int(r["cpu_operators"]), "vela_cpu_fallback": list(r["cpu_fallback"])}
