"""`python -m monitor`: see monitor/cli.py."""

from monitor.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
