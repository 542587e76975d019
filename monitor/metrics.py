"""Prometheus collectors: render the sidecar's current state on each scrape/export (design §3).

No global mutable metrics: every value is read from the RunState built from the files, so what is
exported is always what the files say. The run's figures, their names, kinds and help texts come from the
one table of `edgeflow/rundir/figures.py`; only the values the monitor derives are declared here. Labels
are `experiment` and `job_id` only, plus `arch` for the per-arch EPE and `status` for the status gauge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edgeflow.rundir import RUN_STATUSES, clean_text
from edgeflow.rundir.figures import BY_NAME, FIGURES, SEARCH_BEST_EPE

from .runstate import RunState
from .sidecar import Sidecar

LABELS = ["experiment", "job_id"]


@dataclass(frozen=True)
class RunMetric:
    name: str  # without the prefix; a counter gets its `_total` suffix from the client
    help: str
    kind: str  # "gauge" or "counter"
    get: Callable[[RunState], float | None]


def _latest(metric: str) -> Callable[[RunState], float | None]:
    return lambda s: s.values.get(metric)


# The figures of the one table (edgeflow/rundir/figures.py) that are exported as their latest value.
FIGURE_METRICS = [RunMetric(f.metric, f.help, f.kind, _latest(f.metric))
                  for f in (*FIGURES, SEARCH_BEST_EPE) if f.metric]

# What the monitor derives from the events itself.
DERIVED_METRICS = [
    RunMetric("epochs_completed", "Distinct epochs completed in this run directory (a re-run epoch counts once).",
              "counter", lambda s: s.epochs_completed),
    RunMetric("evaluations", "Distinct epochs evaluated in this run directory (a re-run evaluation counts once).",
              "counter", lambda s: s.evaluations),
    RunMetric("epe_rising_evaluations", "Consecutive evaluations whose mean EPE rose.", "gauge",
              lambda s: s.epe_rising if s.evaluations else None),
    RunMetric("nonfinite_steps", BY_NAME["nonfinite_steps"].help, "counter", lambda s: s.nonfinite_steps),
    RunMetric("run_start_timestamp_seconds", "Time of the latest run_start (start or resume).", "gauge",
              lambda s: s.run_start_time),
    RunMetric("run_starts", "run_start events (1 + resumes).", "counter", lambda s: s.run_starts),
    RunMetric("last_progress_timestamp_seconds", "Time of the latest heartbeat, epoch, eval, checkpoint or start.",
              "gauge", lambda s: s.last_progress_time),
    RunMetric("last_event_timestamp_seconds", "Time of the latest event of any kind.", "gauge",
              lambda s: s.last_event_time),
    RunMetric("last_checkpoint_timestamp_seconds", "Time of the latest completed checkpoint.", "gauge",
              lambda s: s.last_checkpoint_time),
    RunMetric("run_end_timestamp_seconds", "Time of the run_end event, when the run has ended.", "gauge",
              lambda s: s.end_time),
]

RUN_METRICS = FIGURE_METRICS + DERIVED_METRICS

PREFIX = "edgeflow_"


def run_families(states: Iterable[RunState]) -> Iterator:
    """Metric families for the given runs (one sample per run and metric)."""
    states = list(states)
    for metric in RUN_METRICS:
        cls = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
        family = cls(PREFIX + metric.name, metric.help, labels=LABELS)
        for s in states:
            value = metric.get(s)
            if value is not None:
                family.add_metric(labels_of(s), float(value))
        yield family
    arch = GaugeMetricFamily(PREFIX + "arch_epe", "EPE of one arch of the eval pool (last evaluation).",
                             labels=[*LABELS, "arch"])
    for s in states:
        for code, value in sorted(s.arch_epe.items()):
            arch.add_metric([*labels_of(s), clean_text(code)], value)
    yield arch
    status = GaugeMetricFamily(PREFIX + "run_status", "1 for the run's current status, 0 for the others.",
                               labels=[*LABELS, "status"])
    for s in states:
        if s.status is None:
            continue
        for candidate in RUN_STATUSES:
            status.add_metric([*labels_of(s), candidate], 1.0 if candidate == s.status else 0.0)
    yield status


def labels_of(s: RunState) -> list[str]:
    # Label values come from event lines anyone can write; one lone surrogate would fail the UTF-8
    # encoding of the whole scrape (HTTP 500 for every run), so each is made encodable here.
    return [clean_text(s.experiment or ""), clean_text(s.job_id or "")]


def health_families(sidecar: Sidecar) -> Iterator:
    runs, health, counts = sidecar.snapshot()
    yield GaugeMetricFamily(PREFIX + "monitor_up", "1 while the sidecar runs.", value=1.0)
    info = GaugeMetricFamily(PREFIX + "monitor_info", "The sidecar's observer.", labels=["observer"])
    info.add_metric([sidecar.observer], 1.0)
    yield info
    yield GaugeMetricFamily(PREFIX + "monitor_runs_followed", "Run directories followed.", value=counts["runs"])
    yield GaugeMetricFamily(PREFIX + "monitor_duplicate_runs",
                            "Run directories not exported: same experiment and job id as another one.",
                            value=counts["duplicates"])
    yield GaugeMetricFamily(PREFIX + "monitor_files_followed", "Run files (events, run, state) followed.",
                            value=counts["files"])
    yield CounterMetricFamily(PREFIX + "monitor_lines_read", "events.jsonl lines read by this process.",
                              value=health.lines_read)
    yield GaugeMetricFamily(PREFIX + "monitor_malformed_lines",
                            "Malformed lines in the followed events.jsonl files (skipped).",
                            value=counts["malformed"])
    yield GaugeMetricFamily(PREFIX + "monitor_unreadable_files",
                            "Run files the last look could not read or use (not a regular file, unreadable, "
                            "not a JSON object); a run whose reading failed otherwise counts once.",
                            value=counts["unreadable"])
    yield GaugeMetricFamily(PREFIX + "monitor_future_events",
                            "Events dated more than a minute ahead of the sidecar's clock (a node's clock runs "
                            "ahead); their time was taken as the file's modification time.",
                            value=counts["future"])
    yield CounterMetricFamily(PREFIX + "monitor_scans", "Scans of the run directories.", value=health.scans)
    yield CounterMetricFamily(PREFIX + "monitor_export_errors", "Failed textfile writes or pushes.",
                              value=health.export_errors)
    if health.last_scan is not None:
        yield GaugeMetricFamily(PREFIX + "monitor_last_scan_timestamp_seconds",
                                "Time of the sidecar's latest scan; old means the sidecar is down.",
                                value=health.last_scan)
    yield GaugeMetricFamily(PREFIX + "monitor_start_timestamp_seconds", "Time the sidecar started.",
                            value=health.started)


class SidecarCollector(Collector):
    """Everything: every followed run plus the sidecar's health (HTTP and textfile modes)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    def collect(self) -> Iterator:
        runs, _, _ = self.sidecar.snapshot()
        yield from run_families(state for _, state in runs)
        yield from health_families(self.sidecar)


class RunCollector(Collector):
    """One run only (a Pushgateway group)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def collect(self) -> Iterator:
        yield from run_families([self.state])


class HealthCollector(Collector):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    def collect(self) -> Iterator:
        yield from health_families(self.sidecar)


def registry_for(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
