"""The argparse front ends of `python -m edgeflow COMMAND`, one module per command.

Each module has `main(argv) -> int` and stays thin: it parses, calls the module that does the work,
and maps known errors to the exit codes of `edgeflow.rundir.codes`. `edgeflow/cli.py` lists them.
"""
