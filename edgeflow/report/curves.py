"""Pictures of runs from their files: loss, gradient norm, LR, early stopping, pool EPE against the zero-flow
baseline, each arch's rank in the pool over the evaluations with the ranking's stability (Kendall tau), and
the flow pictures of the latest evaluation.

Read from events.jsonl through `rundir.metrics_rows`, so requeues and resumes are one curve (a re-run
epoch replaces the earlier attempt) and each restart is marked with a dotted line; figures outside the
per-epoch rows (the zero-flow EPE) are read through the figure table (`rundir/figures.py`), and the
flow pictures from flow_samples.npz. Several runs share the panels, one colour each, and get a rank
panel and pictures of their own. No TensorFlow; matplotlib (the `report` extra) without pyplot's
global state, so it works on a headless node.
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
from matplotlib.ticker import FuncFormatter, MaxNLocator

from edgeflow import rundir
from edgeflow.progress import against_zero_flow, significant
from edgeflow.report import flows
from edgeflow.rundir.figures import BY_NAME
from edgeflow.rundir.flow_samples_file import FlowSamples, FlowSamplesError, read_flow_samples
from edgeflow.rundir.metrics_file import ARCH_COLUMN_PREFIX

PANEL_INCHES = (7.0, 3.4)
# Line styles for the per-arch panel: 10 colours, then the same colours with another line and marker.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


class ReportError(ValueError):
    """A run that cannot be drawn (no run directory, no epoch yet); the message names it."""


@dataclass
class RunCurves:
    name: str
    path: Path
    rows: list[dict[str, Any]]
    restarts: list[int] = field(default_factory=list)  # epochs a requeue or resume started from
    latest: dict[str, Any] = field(default_factory=dict)  # each figure's latest value (the figure table's events)
    pictures: FlowSamples | None = None

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

    def figure(self, name: str) -> float | None:
        """The latest value of a figure of the table (e.g. zero_flow_epe), None when not reported."""
        value = rundir.as_float(self.latest.get(name))
        return value if value is not None and math.isfinite(value) else None

    def ranks(self) -> dict[str, tuple[list[int], list[int]]]:
        """Each arch's rank in the pool (1 = lowest EPE; not finite ranks last, ties by code) at each
        evaluation: code -> (epochs, ranks)."""
        out: dict[str, tuple[list[int], list[int]]] = {}
        codes = [c.removeprefix(ARCH_COLUMN_PREFIX) for c in self.arch_columns()]
        for row in self.rows:
            values = {c: rundir.as_float(row.get(ARCH_COLUMN_PREFIX + c)) for c in codes}
            present = {c: v for c, v in values.items() if v is not None}
            if not present:
                continue
            order = sorted(present, key=lambda c: (present[c] if math.isfinite(present[c]) else math.inf, c))
            for rank, code in enumerate(order, 1):
                xs, ys = out.setdefault(code, ([], []))
                xs.append(int(row["epoch"]))
                ys.append(rank)
        return out

    def result(self) -> str:
        """One line: the best EPE against the zero-flow EPE ("best 2.900 vs zero flow 5.148 (-44 %)")."""
        epoch = self.latest.get("best_epoch")
        return against_zero_flow(self.figure("best_epe"), self.figure("zero_flow_epe")) + (
            f" at epoch {epoch}" if isinstance(epoch, int) else "")


def latest_figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of each figure the events carry, as the figure table says which events carry it."""
    out: dict[str, Any] = {}
    for ev in events:
        kind = ev.get("event")
        for name, value in ev.items():
            figure = BY_NAME.get(name)
            if figure is not None and kind in figure.events:
                out[name] = value
    return out


def load(run_dir: str | Path) -> RunCurves:
    path = Path(run_dir)
    paths = rundir.RunPaths(path)
    if not paths.events.is_file():
        raise ReportError(f"{path}: not a run directory (no {rundir.EVENTS_FILE})")
    events = list(rundir.read_events(paths.events))
    rows = rundir.metrics_rows(events)
    if not rows:
        raise ReportError(f"{path}: no epoch recorded yet in {rundir.EVENTS_FILE}; nothing to draw")
    restarts = [int(e["start_epoch"]) for e in events
                if e.get("event") == "run_start" and e.get("resumed_from") and isinstance(e.get("start_epoch"), int)]
    name = next((str(e["experiment"]) for e in events if e.get("experiment")), path.name)
    pictures = None
    if paths.flow_samples.is_file():
        try:
            pictures = read_flow_samples(paths.flow_samples)
        except FlowSamplesError as exc:
            raise ReportError(str(exc)) from None
    return RunCurves(name, path, rows, restarts, latest_figures(events), pictures)


def _panel(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _epe_panel(ax: Any, runs: list[RunCurves], colours: list[str]) -> None:
    """Mean EPE with the ±1 std band, the best point and the zero-flow line; the y-range leaves out a
    first evaluation far above the rest (named in the title) so the later ones keep their spread."""
    tops: list[float] = []
    off_scale: list[str] = []
    for run, colour in zip(runs, colours, strict=True):
        xs, mean = run.series("mean_epe")
        std = dict(zip(*run.series("std_epe"), strict=True))
        high = [m + std.get(x, 0.0) for x, m in zip(xs, mean, strict=True)]
        ax.plot(xs, mean, color=colour, marker=".", label=f"{run.name}: mean" if len(runs) > 1 else "mean")
        if std and xs:
            low = [m - std.get(x, 0.0) for x, m in zip(xs, mean, strict=True)]
            ax.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
        zero = run.figure("zero_flow_epe")
        if zero is not None:
            ax.axhline(zero, color=colour, linestyle="--", linewidth=1)
            ax.annotate(f"zero flow {significant(zero)}", xy=(0.01, zero), xycoords=("axes fraction", "data"),
                        xytext=(0, 2), textcoords="offset points", fontsize=8, color=colour, va="bottom")
            tops.append(zero)
        best, best_epoch = run.figure("best_epe"), run.latest.get("best_epoch")
        if best is not None and isinstance(best_epoch, int):
            ax.plot([best_epoch], [best], marker="*", markersize=11, color=colour, linestyle="none")
            ax.annotate(f"best {significant(best)}", xy=(best_epoch, best), xytext=(0, -12),
                        textcoords="offset points", fontsize=8, color=colour, ha="center", va="top")
        rest = high[1:] if len(high) >= 3 else high
        if rest:
            tops.append(max(rest))
            if len(high) >= 3 and high[0] > 1.5 * max(rest):
                off_scale.append(f"epoch {xs[0]}: {significant(mean[0])}")
    if tops:
        bottom = ax.get_ylim()[0]
        ax.set_ylim(max(0.0, min(bottom, ax.get_ylim()[1])), max(tops) * 1.12)
    title = "pool EPE (mean, band ±1 std, star best) vs zero flow"
    _panel(ax, title + (f"\n(off the top: {', '.join(off_scale)})" if off_scale else ""), "EPE (px)")


def _rank_panel(ax: Any, run: RunCurves) -> None:
    """Each arch's rank in the pool over the evaluations, labelled at its right end with its code and
    latest EPE (no legend to cover the lines)."""
    ranks = run.ranks()
    _panel(ax, f"{run.name}: rank of each pool arch by EPE\n(1 = best; label: arch code, last EPE)",
           "rank in the pool")
    if not ranks:
        ax.text(0.5, 0.5, "no evaluation with per-arch EPE yet", transform=ax.transAxes, ha="center")
        return
    last_row = next(r for r in reversed(run.rows) if any(k.startswith(ARCH_COLUMN_PREFIX) for k in r))
    epochs = sorted({x for xs, _ in ranks.values() for x in xs})
    span = max(epochs[-1] - epochs[0], 1)
    for i, code in enumerate(sorted(ranks)):
        xs, ys = ranks[code]
        colour = f"C{i % 10}"
        style = LINESTYLES[(i // 10) % len(LINESTYLES)]
        marker = MARKERS[(i // 10 + i) % len(MARKERS)]
        ax.plot(xs, ys, color=colour, linestyle=style, marker=marker, markersize=4, linewidth=1.2)
        last = significant(last_row.get(ARCH_COLUMN_PREFIX + code))
        ax.annotate(f"{code} {last}", xy=(xs[-1], ys[-1]), xytext=(6, 0), textcoords="offset points",
                    fontsize=7, color=colour, va="center", family="monospace")
    count = len(ranks)
    _tau_axis(ax, run)
    ax.set_ylim(count + 0.6, 0.4)
    ax.set_xlim(epochs[0] - 0.05 * span, epochs[-1] + 0.45 * span)
    ax.set_xticks([t for t in ax.get_xticks() if epochs[0] <= t <= epochs[-1]])  # none under the labels
    ax.set_yticks(range(1, count + 1) if count <= 16 else range(1, count + 1, math.ceil(count / 12)))


def _tau_axis(ax: Any, run: RunCurves) -> None:
    """The ranking's stability on a right-hand axis: Kendall tau-b against the previous evaluation and
    the best checkpoint's (pool_rank_tau, pool_rank_tau_best; none before the second evaluation)."""
    series = [(name, *run.series(name)) for name in ("pool_rank_tau", "pool_rank_tau_best")]
    if not any(xs for _, xs, _ in series):
        return
    tau = ax.twinx()
    for (name, xs, ys), style in zip(series, ("-", ":"), strict=True):
        label = "tau vs previous" if name == "pool_rank_tau" else "tau vs best"
        # Thick and black, drawn over the arch lines, so it reads apart from them.
        tau.plot(xs, ys, color="black", linestyle=style, linewidth=2.5, marker="s", markersize=4, label=label,
                 zorder=5)
    tau.set_ylim(-1.05, 1.05)
    tau.set_ylabel("Kendall tau-b of the ranking (black)")
    tau.legend(loc="lower left", fontsize=7)


def _stop_panel(ax: Any, runs: list[RunCurves], colours: list[str]) -> None:
    patience_seen: list[float] = []
    for run, colour in zip(runs, colours, strict=True):
        xs, bad = run.series("bad_epochs")
        ax.step(xs, bad, where="post", color=colour, marker=".", label=run.name if len(runs) > 1 else None)
        patience = run.figure("patience")
        if patience is not None:
            patience_seen.append(patience)
            ax.axhline(patience, color=colour, linestyle=":", linewidth=1.5)
            ax.annotate(f"patience {patience:g}: the run stops at this count", xy=(0.01, patience),
                        xycoords=("axes fraction", "data"), xytext=(0, -3), textcoords="offset points",
                        fontsize=8, color=colour, va="top")
        if bad:
            ax.annotate(f"now {bad[-1]:g}", xy=(xs[-1], bad[-1]), xytext=(-4, 4), textcoords="offset points",
                        fontsize=8, color=colour, ha="right")
    top = max(patience_seen + [1.0]) + 0.6
    ax.set_ylim(-0.3, top)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    threshold = f" (patience {', '.join(f'{p:g}' for p in sorted(set(patience_seen)))})" if patience_seen else ""
    _panel(ax, f"early stopping: evaluations without improvement{threshold}", "evaluations")


def figure(runs: list[RunCurves]) -> Figure:
    """A matplotlib Figure of the runs: shared panels, one rank panel per run, then each run's flow pictures."""
    panels = 5 + len(runs)
    rows = math.ceil(panels / 2)
    pictured = [r for r in runs if r.pictures is not None]
    heights = [rows * PANEL_INCHES[1]] + [flows.height_inches(r.pictures) for r in pictured if r.pictures]
    fig = Figure(figsize=(2 * PANEL_INCHES[0], sum(heights)), dpi=90, layout="constrained")
    parts = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]
    curves = parts[0]
    axes = list(curves.subplots(rows, 2, squeeze=False).flat)
    loss, grad, lr, stop, epe = axes[:5]
    _panel(loss, "train loss (epoch mean)", "loss")
    _panel(grad, "gradient norm before clipping (mean; dashed: p90)", "global norm")
    _panel(lr, "learning rate", "lr")
    lr.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for run, colour in zip(runs, colours, strict=True):
        loss.plot(*run.series("train_loss"), color=colour, marker=".", label=run.name)
        grad.plot(*run.series("grad_norm"), color=colour, marker=".")
        grad.plot(*run.series("grad_norm_p90"), color=colour, linestyle="--", alpha=0.7)
        lr.plot(*run.series("lr"), color=colour, marker=".")
    _epe_panel(epe, runs, colours)
    _stop_panel(stop, runs, colours)
    for run, ax in zip(runs, axes[5:], strict=False):
        _rank_panel(ax, run)
    for ax in axes[panels:]:
        ax.axis("off")
    for run, colour in zip(runs, colours, strict=True):
        for epoch in run.restarts:
            for ax in axes[:5]:
                ax.axvline(epoch - 0.5, color=colour, linestyle=":", alpha=0.5)
    if len(runs) > 1:
        handles, labels = loss.get_legend_handles_labels()
        curves.legend(handles, labels, loc="outside lower center", ncol=min(len(runs), 4), fontsize=9)
    names = ", ".join(r.name for r in runs)
    curves.suptitle(f"edgeflow: {names}" + ("  (dotted: resumed)" if any(r.restarts for r in runs) else ""))
    for part, run in zip(parts[1:], pictured, strict=True):
        if run.pictures is not None:
            flows.draw(part, run.name, run.pictures)
    return fig


def png_bytes(runs: list[RunCurves]) -> bytes:
    fig = figure(runs)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def html_page(runs: list[RunCurves], png: bytes) -> str:
    """One self-contained page: each run's last figures (EPE to 4 significant digits) and the picture."""
    rows = []
    for run in runs:
        last = run.rows[-1]
        cells = (run.name, str(run.path), last.get("epoch"), significant(run.figure("best_epe")),
                 run.latest.get("best_epoch", "-"), significant(run.figure("mean_epe")),
                 significant(run.figure("zero_flow_epe")), run.result(), len(run.restarts))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>")
    head = ("experiment", "run directory", "last epoch", "best EPE", "best epoch", "last mean EPE",
            "zero-flow EPE", "result", "resumes")
    image = base64.b64encode(png).decode("ascii")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeflow report</title></head><body>"
            "<table border='1' cellpadding='4'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>"
            f"<img alt='edgeflow report' src='data:image/png;base64,{image}'></body></html>\n")


def check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise ReportError(f"--out {out}: must end in .png or .html")
    return out


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Draw the runs into `out` (.png or .html), written under a temporary name and renamed."""
    check_out(out)
    return write_runs([load(r) for r in run_dirs], out)


def write_runs(runs: list[RunCurves], out: str | Path) -> Path:
    out = check_out(out)
    png = png_bytes(runs)
    if out.suffix.lower() == ".png":
        rundir.atomic_write_bytes(out, png)
    else:
        rundir.atomic_write_text(out, html_page(runs, png))
    return out
