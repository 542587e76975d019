"""`python -m monitor`: follow run directories and export their progress to Prometheus."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from edgeflow.console import console_logger

from .observe import OBSERVER_KINDS, WakeHandler, Watches, choose_observer, make_observer
from .publish import Exporter, HttpExporter, PushExporter, TextfileExporter, parse_listen, render
from .sidecar import Sidecar

# Longest delay between a SIGTERM and the start of the final export.
STOP_CHECK_SECONDS = 0.5
# Exit code of `--once` when the export failed (a file not written, a push refused): cron and tests see it.
EXIT_EXPORT_FAILED = 1

log = console_logger("monitor", "monitor: %(message)s")  # stderr: stdout is for --print

EPILOG = """\
examples:
  python -m monitor --run outputs/demo --http 127.0.0.1:9464
  python -m monitor --root /shared/outputs --textfile /var/lib/node_exporter/textfile
  python -m monitor --root /shared/outputs --pushgateway http://pushgw:9091
  python -m monitor --run outputs/demo --print          # scan once, print the metrics, exit
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m monitor", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Follow edgeflow run directories (events.jsonl, run.json, state.json) and export "
                    "their progress to Prometheus.")
    where = p.add_argument_group("what to follow (at least one)")
    where.add_argument("--run", action="append", default=[], metavar="DIR",
                       help="a run directory (<output_root>/<experiment>); waited for if missing")
    where.add_argument("--root", action="append", default=[], metavar="DIR",
                       help="follow every run directory below DIR, including runs created later")
    out = p.add_argument_group("export mode (exactly one)").add_mutually_exclusive_group(required=True)
    out.add_argument("--http", metavar="ADDR:PORT",
                     help="serve /metrics (a bare PORT binds 127.0.0.1; port 0 picks a free one)")
    out.add_argument("--textfile", metavar="DIR", help="write DIR/edgeflow_<name>.prom for node_exporter")
    out.add_argument("--pushgateway", metavar="URL",
                     help="push one group per run (job=edgeflow, experiment, job_id), deleted at run end")
    out.add_argument("--print", action="store_true", help="scan once, print the metrics to stdout, exit")
    p.add_argument("--textfile-name", metavar="NAME",
                   help="file name without .prom (default edgeflow_<experiment> or edgeflow_<root name>)")
    p.add_argument("--observer", choices=OBSERVER_KINDS, default="auto",
                   help="auto: polling on network filesystems (NFS, Lustre, GPFS, ...), inotify otherwise")
    p.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often the polling observer looks at the files (default 2)")
    p.add_argument("--rescan-interval", type=float, default=10.0, metavar="SECONDS",
                   help="full rescan even without file events, a safety net (default 10)")
    p.add_argument("--push-refresh", type=float, default=60.0, metavar="SECONDS",
                   help="re-push unchanged Pushgateway groups this often (default 60)")
    p.add_argument("--instance", default=socket.gethostname(),
                   help="instance label of the sidecar's own health group on the Pushgateway")
    p.add_argument("--once", action="store_true", help="scan, export once and exit (tests, cron)")
    return p


def _textfile_name(args: argparse.Namespace) -> str:
    if args.textfile_name:
        return args.textfile_name
    first = (args.run or args.root)[0]
    return f"edgeflow_{Path(first).resolve().name}"


def _exporter(args: argparse.Namespace, sidecar: Sidecar) -> Exporter:
    if args.http is not None:
        host, port = parse_listen(args.http)
        exporter = HttpExporter(sidecar, host, port)
        shown = f"[{host}]" if ":" in host else host
        log.info("serving http://%s:%s/metrics", shown, exporter.port)
        return exporter
    if args.textfile is not None:
        textfile = TextfileExporter(Path(args.textfile), _textfile_name(args))
        log.info("writing %s", textfile.path)
        return textfile
    if args.pushgateway is not None:
        if not args.pushgateway.startswith(("http://", "https://")):
            raise ValueError(f"--pushgateway expects an http(s) URL, got {args.pushgateway!r}")
        log.info("pushing to %s", args.pushgateway)
        return PushExporter(args.pushgateway, instance=args.instance, refresh=args.push_refresh)
    return Exporter()


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.run and not args.root:
        parser.error("give --run DIR or --root DIR")
    for flag, value in (("--poll-interval", args.poll_interval), ("--rescan-interval", args.rescan_interval),
                        ("--push-refresh", args.push_refresh)):
        if not value > 0:
            parser.error(f"{flag} must be > 0, got {value}")
    for flag, paths in (("--run", args.run), ("--root", args.root)):
        for path in paths:
            if Path(path).exists() and not Path(path).is_dir():
                parser.error(f"{flag} {path}: not a directory")
    if args.textfile is not None and Path(args.textfile).exists() and not Path(args.textfile).is_dir():
        parser.error(f"--textfile {args.textfile}: not a directory")
    if args.http is not None:
        try:
            parse_listen(args.http)
        except ValueError as exc:
            parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    watched = [Path(p) for p in args.run + args.root]
    observer_kind = choose_observer(args.observer, watched)
    sidecar = Sidecar(runs=[Path(p) for p in args.run], roots=[Path(p) for p in args.root],
                      observer=observer_kind)
    if args.print:
        sidecar.scan()
        sys.stdout.buffer.write(render(sidecar))
        sys.stdout.flush()
        return 0
    try:
        exporter = _exporter(args, sidecar)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    for path in watched:
        if not path.exists():
            log.info("%s does not exist yet; waiting for it", path)
    try:
        if args.once:
            errors = sidecar.health.export_errors
            exporter.export(sidecar, sidecar.scan())
            if sidecar.health.export_errors > errors:
                log.error("--once: the export failed (see above); nothing or not everything was written")
                return EXIT_EXPORT_FAILED
            return 0
        return _loop(args, sidecar, exporter, observer_kind)
    finally:
        exporter.close()


def _loop(args: argparse.Namespace, sidecar: Sidecar, exporter: Exporter, observer_kind: str) -> int:
    wake, stop = threading.Event(), threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ignore = [Path(args.textfile)] if args.textfile else []
    observer = make_observer(observer_kind, args.poll_interval)
    watches = Watches(observer, WakeHandler(wake, ignore=ignore))
    targets = {Path(p).resolve(): False for p in args.run} | {Path(p).resolve(): True for p in args.root}
    watches.update(targets)
    observer.start()
    log.info("observer %s, watching %s", observer_kind, ", ".join(map(str, watches.watched)))
    try:
        while not stop.is_set():
            wake.clear()
            # A missing run directory or root may have appeared: move its watch from the ancestor
            # before reading, so nothing written after this scan goes unnoticed.
            watches.update(targets)
            changed = sidecar.scan()
            exporter.export(sidecar, changed)
            _wait(wake, stop, args.rescan_interval)
        # Stopped (SIGTERM from the launcher once the trainer exited): export the final state, e.g. the
        # run_end just written, which a polling observer may not have seen yet.
        exporter.export(sidecar, sidecar.scan())
    finally:
        observer.stop()
        observer.join(timeout=5)
    log.info("stopped")
    return 0


def _wait(wake: threading.Event, stop: threading.Event, seconds: float) -> None:
    """Wait for a file event, a stop, or the rescan timeout.

    In short slices: SIGTERM may be delivered to another thread (HTTP server, observer), and then it does
    not interrupt the main thread's wait; its Python handler runs only once the main thread wakes.
    """
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or wake.wait(min(left, STOP_CHECK_SECONDS)):
            return
