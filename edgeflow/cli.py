"""`python -m edgeflow COMMAND ...`: the front ends live in edgeflow/commands/, one module each.

Commands are imported only when chosen, so `preflight` and `demo-data` never load TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo-data": ("edgeflow.commands.demo_data", "main", "render the demo data set in FlyingChairs2 layout"),
    "preflight": ("edgeflow.commands.preflight", "main", "check the data of a config before training"),
    "train": ("edgeflow.commands.train", "main", "train the supernet (resumes when the run exists)"),
    "eval": ("edgeflow.commands.eval", "main", "evaluate archs of a run's checkpoint"),
    "arch-info": ("edgeflow.commands.arch_info", "main", "parameters, output shapes and FLOPs of an arch"),
    "rank": ("edgeflow.commands.rank", "main", "evaluate many archs of a run; rank correlation of two rankings"),
    "search": ("edgeflow.commands.search", "main", "NSGA-II search for the EPE/cost Pareto front of a run"),
    "fidelity": ("edgeflow.commands.fidelity", "main", "train k subnets stand-alone: is the supernet's ranking true?"),
    "pack": ("edgeflow.commands.pack", "main", "decode the data once into a pack (data.format: packed)"),
    "import-v1": ("edgeflow.commands.import_v1", "main", "import a checkpoint of the original v1 trainer as a run"),
    "report": ("edgeflow.commands.report", "main", "a picture of runs: loss, grad norm, LR, EPE, early stopping"),
    "export": ("edgeflow.commands.export", "main", "one arch as SavedModel / TFLite files (+ Ethos-U report)"),
    # The launcher and the sidecar, for the `edgeflow` console command (`edgeflow jobs status RUN`).
    "jobs": ("edgeflow_jobs.cli", "main", "the launcher: submit, status, logs, list, cancel, rank, search"),
    "monitor": ("edgeflow_monitor.cli", "main", "the sidecar: export runs' progress to Prometheus"),
}


# Commands that never load TensorFlow (the others start it quietly first).
LIGHT_COMMANDS = frozenset({"demo-data", "preflight", "report", "jobs", "monitor"})


def usage() -> str:
    lines = ["usage: python -m edgeflow COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`python -m edgeflow COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"edgeflow: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    if name not in LIGHT_COMMANDS and not any(a in ("-h", "--help") for a in rest):
        # Before the command's modules import TensorFlow: its start-up noise stays off the console.
        from edgeflow.console import quiet_tensorflow

        quiet_tensorflow()
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
