"""Pictures of runs from their files: loss, gradient norm, LR, pool EPE, per-arch EPE, early stopping.

Read from events.jsonl through `rundir.metrics_rows`, so requeues and resumes are one curve (a re-run
epoch replaces the earlier attempt) and each restart is marked with a dotted line. Several runs share
the panels, one colour each. No TensorFlow; matplotlib (the `report` extra) without pyplot's global
state, so it works on a headless node.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from edgeflow import rundir
from edgeflow.rundir.metrics_file import ARCH_COLUMN_PREFIX


class ReportError(ValueError):
    """A run that cannot be drawn (no run directory, no epoch yet); the message names it."""


@dataclass
class RunCurves:
    name: str
    path: Path
    rows: list[dict[str, Any]]
    restarts: list[int] = field(default_factory=list)  # epochs a requeue or resume started from

    def series(self, column: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for row in self.rows:
            value = rundir.as_float(row.get(column))
            if value is not None and math.isfinite(value):
                xs.append(int(row["epoch"]))
                ys.append(value)
        return xs, ys

    def arch_columns(self) -> list[str]:
        return sorted({k for r in self.rows for k in r if k.startswith(ARCH_COLUMN_PREFIX)})


def load(run_dir: str | Path) -> RunCurves:
    path = Path(run_dir)
    events_file = rundir.RunPaths(path).events
    if not events_file.is_file():
        raise ReportError(f"{path}: not a run directory (no {rundir.EVENTS_FILE})")
    events = list(rundir.read_events(events_file))
    rows = rundir.metrics_rows(events)
    if not rows:
        raise ReportError(f"{path}: no epoch recorded yet in {rundir.EVENTS_FILE}; nothing to draw")
    restarts = [int(e["start_epoch"]) for e in events
                if e.get("event") == "run_start" and e.get("resumed_from") and isinstance(e.get("start_epoch"), int)]
    name = next((str(e["experiment"]) for e in events if e.get("experiment")), path.name)
    return RunCurves(name, path, rows, restarts)


def _panel(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def figure(runs: list[RunCurves]) -> Figure:
    """A matplotlib Figure of 6 panels for the runs."""
    fig = Figure(figsize=(13, 11), dpi=90, layout="constrained")
    axes = fig.subplots(3, 2)
    loss, grad, lr, epe, arch, stop = axes.flat
    _panel(loss, "train loss (epoch mean)", "loss")
    _panel(grad, "gradient norm (mean, dashed: p90)", "global norm")
    _panel(lr, "learning rate", "lr")
    _panel(epe, "pool EPE (mean, band: ±1 std over the pool)", "EPE")
    _panel(arch, "EPE per arch of the pool", "EPE")
    _panel(stop, "early stopping: evaluations without improvement", "count")
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for run, colour in zip(runs, colours, strict=True):
        label = run.name if len(runs) > 1 else None
        loss.plot(*run.series("train_loss"), color=colour, marker=".", label=label)
        grad.plot(*run.series("grad_norm"), color=colour, marker=".")
        grad.plot(*run.series("grad_norm_p90"), color=colour, linestyle="--", alpha=0.7)
        lr.plot(*run.series("lr"), color=colour, marker=".")
        xs, mean = run.series("mean_epe")
        epe.plot(xs, mean, color=colour, marker=".", label=label)
        std = dict(zip(*run.series("std_epe"), strict=True))
        if std and xs:
            low = [m - std.get(x, 0.0) for x, m in zip(xs, mean, strict=True)]
            high = [m + std.get(x, 0.0) for x, m in zip(xs, mean, strict=True)]
            epe.fill_between(xs, low, high, color=colour, alpha=0.2)
        for i, column in enumerate(run.arch_columns()):
            code = column.removeprefix(ARCH_COLUMN_PREFIX)
            style = ("-", "--", ":", "-.")[i // 10 % 4] if len(runs) == 1 else "-"
            arch.plot(*run.series(column), color=f"C{i % 10}" if len(runs) == 1 else colour, linestyle=style,
                      linewidth=1, label=code if len(runs) == 1 else None)
        xs, bad = run.series("bad_epochs")
        stop.step(xs, bad, where="post", color=colour, label=label)
        _, patience = run.series("patience")
        if patience:
            stop.axhline(patience[-1], color=colour, linestyle=":", linewidth=1)
        for epoch in run.restarts:
            for ax in axes.flat:
                ax.axvline(epoch - 0.5, color=colour, linestyle=":", alpha=0.5)
    if len(runs) > 1:
        loss.legend(fontsize=8)
    elif arch.lines:
        arch.legend(fontsize=7, ncol=3)
    names = ", ".join(r.name for r in runs)
    fig.suptitle(f"edgeflow: {names}" + ("  (dotted: resumed)" if any(r.restarts for r in runs) else ""))
    return fig


def png_bytes(runs: list[RunCurves]) -> bytes:
    fig = figure(runs)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_page(runs: list[RunCurves], png: bytes) -> str:
    """One self-contained page: the picture and each run's last figures."""
    rows = []
    for run in runs:
        last = run.rows[-1]
        best = rundir.as_float(last.get("best_epe"))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            run.name, str(run.path), last.get("epoch"), f"{best:.4g}" if best is not None else "-",
            len(run.restarts))) + "</tr>")
    image = base64.b64encode(png).decode("ascii")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeflow report</title></head><body>"
            "<table border='1' cellpadding='4'><tr><th>experiment</th><th>run directory</th><th>last epoch</th>"
            "<th>best EPE</th><th>resumes</th></tr>" + "".join(rows) + "</table>"
            f"<img alt='edgeflow report' src='data:image/png;base64,{image}'></body></html>\n")


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Draw the runs into `out` (.png or .html), written under a temporary name and renamed."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise ReportError(f"--out {out}: must end in .png or .html")
    runs = [load(r) for r in run_dirs]
    png = png_bytes(runs)
    if out.suffix.lower() == ".png":
        rundir.atomic_write_bytes(out, png)
    else:
        rundir.atomic_write_text(out, html_page(runs, png))
    return out
