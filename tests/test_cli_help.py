"""Every command line of the kit has a description, and every option a help text."""

from __future__ import annotations

import argparse
import importlib

from edgeflow.cli import COMMANDS


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    import jobs.cli
    import monitor.cli

    found = [("jobs", jobs.cli.build_parser()), ("monitor", monitor.cli.build_parser())]
    for name, (module, _, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        build = getattr(mod, "build_parser", None)
        assert build is not None, f"edgeflow {name}: {module} has no build_parser()"
        found.append((f"edgeflow {name}", build()))
    return found


def walk(name: str, parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(name, parser)]
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out += walk(f"{name} {sub_name}", sub)
    return out


def test_every_cli_has_a_description_and_help_for_each_option() -> None:
    missing = []
    for top, parser in parsers():
        for name, p in walk(top, parser):
            if not (p.description or "").strip():
                missing.append(f"{name}: no description")
            for action in p._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                if not (action.help or "").strip():
                    missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, "\n".join(missing)
