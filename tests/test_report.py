"""`edgeflow report` draws runs from their events: a real PNG whose pixels follow the data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from edgeflow import rundir
from edgeflow.rundir.events import build_event
from tests.helpers import run_cli

POOL = ("000000000", "111111111", "222222222")


def craft(run: Path, losses: list[float], resume_at: int | None = None) -> Path:
    """A run's events.jsonl: one epoch and one eval per loss; a requeue re-runs epoch `resume_at`."""
    run.mkdir(parents=True)
    name, t = run.name, 1.0e9
    lines = []

    def add(kind: str, **fields: object) -> None:
        nonlocal t
        t += 60
        lines.append(rundir.to_json(build_event(kind, name, "1", fields, t)))

    def epoch(e: int, loss: float) -> None:
        add("epoch", epoch=e, step=10 * e, lr=1e-4 / e, train_loss=loss, grad_norm=5.0 / e, grad_norm_p90=8.0 / e,
            clip_rate=0.0, fairness_gap=0, nonfinite_steps=0, epoch_seconds=60.0, samples_per_second=3.0)
        add("eval", epoch=e, mean_epe=loss * 2, std_epe=0.1, median_epe=loss * 2, p90_epe=loss * 3,
            arch_epe={c: loss * 2 + i / 10 for i, c in enumerate(POOL)}, best_epe=loss * 2, best_epoch=e,
            bad_epochs=e % 2, patience=5, improved=True)

    add("run_start", train_samples=8, val_samples=4, resumed_from=None, start_epoch=1, num_epochs=len(losses),
        patience=5)
    for e, loss in enumerate(losses, 1):
        epoch(e, loss * 1.5 if resume_at == e else loss)  # the attempt a kill interrupted
        if resume_at == e:
            add("run_start", train_samples=8, val_samples=4, resumed_from="checkpoints/latest", start_epoch=e,
                num_epochs=len(losses), patience=5)
            epoch(e, loss)
    (run / rundir.EVENTS_FILE).write_text("\n".join(lines) + "\n")
    return run


def pixels(path: Path) -> np.ndarray:
    return imread(io.BytesIO(path.read_bytes()), format="png")


def test_report_png_follows_the_data(tmp_path: Path) -> None:
    a = craft(tmp_path / "a", [3.0, 2.0, 1.5, 1.2], resume_at=3)
    b = craft(tmp_path / "b", [3.0, 2.5, 2.4, 2.6])
    proc = run_cli("edgeflow", "report", str(a), "--out", str(tmp_path / "a.png"))
    assert proc.returncode == 0, proc.stderr
    assert f"report: {tmp_path / 'a.png'}" in proc.stdout
    from edgeflow.report import curves as plots

    plots.write_report([a], tmp_path / "a2.png")
    plots.write_report([b], tmp_path / "b.png")
    pa, pa2, pb = pixels(tmp_path / "a.png"), pixels(tmp_path / "a2.png"), pixels(tmp_path / "b.png")
    assert pa.ndim == 3 and pa.shape[0] > 500 and pa.shape[1] > 500
    assert np.array_equal(pa, pa2)            # the same data draws the same picture
    assert not np.array_equal(pa, pb)        # other data, another picture
    # The requeue's re-run epoch replaces the first attempt: one point per epoch.
    curves = plots.load(a)
    assert curves.series("train_loss") == ([1, 2, 3, 4], [3.0, 2.0, 1.5, 1.2]) and curves.restarts == [3]


def test_report_side_by_side_html_and_errors(tmp_path: Path) -> None:
    a = craft(tmp_path / "a", [3.0, 2.0])
    b = craft(tmp_path / "b", [2.0, 1.0])
    proc = run_cli("edgeflow", "report", str(a), str(b), "--out", str(tmp_path / "both.html"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "both.html").read_text()
    assert page.count("<tr><td>") == 2 and "data:image/png;base64," in page
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / rundir.EVENTS_FILE).write_text("")
    bad = run_cli("edgeflow", "report", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png"))
    assert bad.returncode == rundir.EXIT_BAD_INPUT and "no epoch recorded yet" in bad.stderr
    assert not (tmp_path / "x.png").exists()
