"""`python -m edgeflow COMMAND ...`: each command lives in the module that does the work.

Commands are imported only when chosen, so `preflight` and `demo-data` never load TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking argv and returning an exit code, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo-data": ("edgeflow.data.demo", "main", "render the demo data set in FlyingChairs2 layout"),
    "preflight": ("edgeflow.data.preflight", "main", "check the data of a config before training"),
    "train": ("edgeflow.train.run", "main", "train the supernet (resumes when the run exists)"),
    "eval": ("edgeflow.train.evaluate_cli", "main", "evaluate archs of a run's checkpoint"),
    "arch-info": ("edgeflow.model.cost", "main", "parameters, output shapes and FLOPs of an arch"),
}


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
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
