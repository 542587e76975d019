"""The three ways out: an HTTP /metrics endpoint, a node_exporter textfile, or a Pushgateway."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import delete_from_gateway, generate_latest, push_to_gateway, start_http_server

from edgeflow.console import console_logger
from edgeflow.rundir import atomic_write_bytes, clean_text

from .metrics import HealthCollector, RunCollector, SidecarCollector, registry_for
from .sidecar import Sidecar

log = console_logger("monitor", "monitor: %(message)s")  # stderr: stdout is for --print

DEFAULT_HTTP_HOST = "127.0.0.1"
PUSH_JOB = "edgeflow"
PUSH_HEALTH_JOB = "edgeflow_monitor"


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT, [IPv6]:PORT, :PORT or PORT; the host defaults to loopback (never all interfaces)."""
    usage = f"--http expects ADDR:PORT (e.g. 127.0.0.1:9464), got {text!r}"
    text = text.strip()
    if text.isdigit():
        host, port_text = "", text
    elif text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
        if not match:
            raise ValueError(usage)
        host, port_text = match.groups()
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit() or ":" in host:
            raise ValueError(usage)
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"--http port must be 0..65535, got {port}")
    return host or DEFAULT_HTTP_HOST, port


def render(sidecar: Sidecar) -> bytes:
    """The text exposition of everything the sidecar exports (what /metrics serves)."""
    return generate_latest(registry_for(SidecarCollector(sidecar)))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "runs"


class Exporter:
    def export(self, sidecar: Sidecar, changed: bool) -> None:
        """Called after each scan."""

    def close(self) -> None:
        pass


class HttpExporter(Exporter):
    """Serves /metrics; the scrape renders the current state, so export() has nothing to do."""

    def __init__(self, sidecar: Sidecar, host: str, port: int) -> None:
        self.server, self.thread = start_http_server(port, addr=host, registry=registry_for(SidecarCollector(sidecar)))
        self.host, self.port = host, self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TextfileExporter(Exporter):
    """Writes <dir>/<name>.prom atomically for node_exporter's textfile collector."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = Path(directory) / f"{safe_name(name)}.prom"
        self._last: bytes | None = None

    def export(self, sidecar: Sidecar, changed: bool) -> None:
        data = render(sidecar)
        if data == self._last:
            return
        try:
            atomic_write_bytes(self.path, data)
            self._last = data
        except OSError as exc:
            sidecar.health.export_errors += 1
            log.warning("cannot write %s: %s", self.path, exc)


@dataclass
class _Group:
    payload: bytes
    pushed_at: float


# Ends after which a run's group is deleted: done, or preempted (its requeue pushes a group of its own).
# A run that ends otherwise (failed, diverged, data_error, timeout) keeps its group with its final status,
# so EdgeflowRunEndedBadly sees the end; the rule stops a day later, the group stays until deleted.
DELETED_AT = frozenset({"completed", "early_stopped", "preempted"})


class PushExporter(Exporter):
    """One Pushgateway group per run (job="edgeflow", experiment, job_id), deleted when the run ends well.

    Pushed series never go stale, so a group is re-pushed only when its values change, plus every
    `refresh` seconds; the sidecar's own health goes to job="edgeflow_monitor".
    """

    def __init__(self, url: str, *, instance: str, refresh: float = 60.0, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.instance = instance
        self.refresh = refresh
        self.timeout = timeout
        self._groups: dict[tuple[str, str], _Group] = {}
        self._deleted: set[tuple[str, str]] = set()
        self._health_pushed = 0.0

    def export(self, sidecar: Sidecar, changed: bool) -> None:
        runs, _, _ = sidecar.snapshot()
        now = time.time()
        live: set[tuple[str, str]] = set()
        for _, state in runs:
            # Made valid UTF-8 like the labels (monitor/metrics.py): the grouping key goes into the URL.
            key = (clean_text(state.experiment or ""), clean_text(state.job_id or ""))
            grouping = {"experiment": key[0], "job_id": key[1]}
            if state.status in DELETED_AT:
                if key not in self._deleted:
                    if self._call(sidecar, delete_from_gateway, self.url, job=PUSH_JOB, grouping_key=grouping,
                                  timeout=self.timeout):
                        self._deleted.add(key)
                        self._groups.pop(key, None)
                continue
            live.add(key)
            self._deleted.discard(key)
            registry = registry_for(RunCollector(state))
            payload = generate_latest(registry)
            last = self._groups.get(key)
            if last is not None and last.payload == payload and now - last.pushed_at < self.refresh:
                continue
            if self._call(sidecar, push_to_gateway, self.url, job=PUSH_JOB, registry=registry,
                          grouping_key=grouping, timeout=self.timeout):
                self._groups[key] = _Group(payload, now)
        # A run that vanished (or whose job id changed) leaves its old group to the stall alert on purpose:
        # the old job did not say it ended.
        for key in set(self._groups) - live:
            self._groups.pop(key)
        if changed or now - self._health_pushed >= min(self.refresh, 15.0):
            if self._call(sidecar, push_to_gateway, self.url, job=PUSH_HEALTH_JOB,
                          registry=registry_for(HealthCollector(sidecar)),
                          grouping_key={"instance": self.instance}, timeout=self.timeout):
                self._health_pushed = now

    def _call(self, sidecar: Sidecar, func, *args, **kwargs) -> bool:
        try:
            func(*args, **kwargs)
            return True
        except Exception as exc:  # network errors of any kind must not stop the sidecar
            sidecar.health.export_errors += 1
            log.warning("pushgateway %s: %s", self.url, exc)
            return False
