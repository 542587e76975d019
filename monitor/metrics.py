"""Prometheus collectors: render the sidecar's current state on each scrape/export (design §3).

No global mutable metrics: every value is read from the RunState built from the files, so what is
exported is always what the files say. Labels are `experiment` and `job_id` only, plus `arch` for the
per-arch EPE and `status` for the status gauge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edgeflow.rundir import RUN_STATUSES, clean_text

from .runstate import RunState
from .sidecar import Sidecar

LABELS = ["experiment", "job_id"]

# (name without prefix, help, kind, getter). Kind "counter" gets the `_total` suffix from the client.
RUN_METRICS: list[tuple[str, str, str, Callable[[RunState], float | None]]] = [
    ("epoch", "Current epoch (latest heartbeat, epoch or eval event).", "gauge", lambda s: s.epoch),
    ("step", "Current global training step.", "gauge", lambda s: s.step),
    ("num_epochs", "Planned number of epochs.", "gauge", lambda s: s.num_epochs),
    ("epochs_completed", "Distinct epochs completed in this run directory (a re-run epoch counts once).",
     "counter", lambda s: s.epochs_completed),
    ("train_loss", "Train loss, mean over the last epoch's archs and steps.", "gauge", lambda s: s.train_loss),
    ("grad_norm", "Global gradient norm before clipping, mean over the last epoch.", "gauge",
     lambda s: s.grad_norm),
    ("grad_norm_p90", "90th percentile of the gradient norm over the last epoch.", "gauge",
     lambda s: s.grad_norm_p90),
    ("grad_clip_ratio", "Fraction of the last epoch's steps whose gradient was clipped.", "gauge",
     lambda s: s.clip_rate),
    ("learning_rate", "Learning rate at the end of the last epoch.", "gauge", lambda s: s.learning_rate),
    ("epe_mean", "Mean EPE over the eval arch pool (last evaluation).", "gauge", lambda s: s.mean_epe),
    ("epe_std", "Population std of EPE over the eval arch pool (last evaluation).", "gauge",
     lambda s: s.std_epe),
    ("epe_median", "Median EPE over the eval arch pool (last evaluation).", "gauge", lambda s: s.median_epe),
    ("epe_p90", "90th percentile EPE over the eval arch pool (last evaluation).", "gauge",
     lambda s: s.p90_epe),
    ("epe_best", "Best mean EPE so far (the early-stopping metric).", "gauge", lambda s: s.best_epe),
    ("epe_best_epoch", "Epoch of the best mean EPE.", "gauge", lambda s: s.best_epoch),
    ("epe_rising_evaluations", "Consecutive evaluations whose mean EPE rose.", "gauge",
     lambda s: s.epe_rising if s.evaluations else None),
    ("evaluations", "Distinct epochs evaluated in this run directory (a re-run evaluation counts once).",
     "counter", lambda s: s.evaluations),
    ("early_stop_bad_evaluations", "Evaluations without improvement (early-stopping counter).", "gauge",
     lambda s: s.bad_epochs),
    ("early_stop_patience", "Early-stopping patience (bad evaluations that stop the run).", "gauge",
     lambda s: s.patience),
    ("fairness_gap", "Max over blocks of max-min option count; 0 unless the sampler is broken.", "gauge",
     lambda s: s.fairness_gap),
    ("nonfinite_steps", "Steps skipped because the loss or gradient was not finite.", "counter",
     lambda s: s.nonfinite_steps),
    ("samples_per_second", "Training throughput (latest heartbeat or epoch).", "gauge",
     lambda s: s.samples_per_second),
    ("replicas", "tf.distribute replicas training the run (1: one device).", "gauge", lambda s: s.replicas),
    ("train_samples", "Valid training samples found at start.", "gauge", lambda s: s.train_samples),
    ("val_samples", "Valid validation samples found at start.", "gauge", lambda s: s.val_samples),
    ("epoch_duration_seconds", "Wall time of the last epoch.", "gauge", lambda s: s.epoch_seconds),
    ("run_start_timestamp_seconds", "Time of the latest run_start (start or resume).", "gauge",
     lambda s: s.run_start_time),
    ("run_starts", "run_start events (1 + resumes).", "counter", lambda s: s.run_starts),
    ("last_progress_timestamp_seconds", "Time of the latest heartbeat, epoch, eval, checkpoint or start.",
     "gauge", lambda s: s.last_progress_time),
    ("last_event_timestamp_seconds", "Time of the latest event of any kind.", "gauge",
     lambda s: s.last_event_time),
    ("last_checkpoint_timestamp_seconds", "Time of the latest completed checkpoint.", "gauge",
     lambda s: s.last_checkpoint_time),
    ("search_evaluations", "Archs evaluated by a ranking or search (RUN/rank|search/<name>).", "gauge",
     lambda s: s.search_evaluations),
    ("search_target", "Archs a ranking selected, or a search's evaluation budget.", "gauge",
     lambda s: s.search_target),
    ("search_best_epe", "Lowest mean EPE among the archs a ranking or search evaluated.", "gauge",
     lambda s: s.search_best_epe),
    ("search_front_size", "Archs on the EPE/cost Pareto front of a ranking or search.", "gauge",
     lambda s: s.search_front_size),
    ("run_end_timestamp_seconds", "Time of the run_end event, when the run has ended.", "gauge",
     lambda s: s.end_time),
]

PREFIX = "edgeflow_"


def run_families(states: Iterable[RunState]) -> Iterator:
    """Metric families for the given runs (one sample per run and metric)."""
    states = list(states)
    for name, help_, kind, getter in RUN_METRICS:
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = cls(PREFIX + name, help_, labels=LABELS)
        for s in states:
            value = getter(s)
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
