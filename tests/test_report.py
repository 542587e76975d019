"""`edgeflow report` draws runs from their events and flow samples: a real PNG whose pixels follow the data,
a baseline, readable per-arch and early-stop panels, and flow fields in the standard colour coding."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from edgeflow import rundir
from edgeflow.rundir.events import build_event
from tests.helpers import REPO, run_cli, tiny_config

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


# ------------------------------------------------------------------ the flow colour coding

def hsv(rgb: np.ndarray) -> np.ndarray:
    from matplotlib.colors import rgb_to_hsv

    return rgb_to_hsv(rgb.astype(np.float64) / 255)


def test_a_pure_rotation_shows_the_full_colour_wheel() -> None:
    from edgeflow.data.flow_colour import flow_rgb

    n, c = 201, 100
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    rotation = np.stack([-(y - c), x - c], axis=-1)  # flow at angle a points along a + 90 degrees
    image = hsv(flow_rgb(rotation, scale=100.0))
    angles = np.radians(np.arange(0, 360, 10))
    ring = [image[int(round(c + 80 * np.sin(a))), int(round(c + 80 * np.cos(a)))] for a in angles]
    hues = np.array([p[0] for p in ring]) * 360
    steps = (np.diff(np.append(hues, hues[0])) + 180) % 360 - 180
    # Around the circle the hue turns once, one way, in small steps: every colour of the wheel appears.
    assert (steps > 0).all() and abs(steps.sum() - 360) < 1e-6, hues
    assert np.histogram(hues, bins=6, range=(0, 360))[0].min() >= 3, hues
    # Flow to the right (above the centre) is red, as in the Middlebury coding.
    top = image[c - 80, c]
    assert min(top[0], 1 - top[0]) * 360 < 8 and top[1] > 0.7, top
    # Along a ray the hue stays and the saturation grows with the length; no motion is white.
    ray = [image[c, c + r] for r in (0, 20, 40, 60, 80, 100)]
    assert ray[0][1] == 0 and ray[0][2] == 1
    assert all(a[1] < b[1] for a, b in zip(ray, ray[1:], strict=False)), [p[1] for p in ray]
    assert np.ptp([p[0] for p in ray[1:]]) < 0.01


def test_flow_colours_mark_too_long_and_broken_vectors() -> None:
    from edgeflow.data.flow_colour import flow_rgb

    flow = np.array([[[1.0, 0.0], [3.0, 0.0], [np.nan, 0.0]]])
    rgb = flow_rgb(flow, scale=2.0)
    assert hsv(rgb)[0, 1, 2] <= 0.76 < hsv(rgb)[0, 0, 2]  # longer than the scale: darkened
    assert rgb[0, 2].tolist() == [0, 0, 0]                 # not finite: black, no flow colour is


# ------------------------------------------------------------------ the report picture

def craft_pool_run(run: Path, *, pictures: bool = True) -> Path:
    """A finished run of a 12-arch pool: an epoch-1 spike, a zero-flow EPE and a flow samples file."""
    from edgeflow.rundir.flow_samples_file import FlowSamples, write_flow_samples

    run.mkdir(parents=True)
    name, codes = run.name, [f"{i:09d}" for i in range(12)]
    lines = [build_event("run_start", name, "1", dict(train_samples=8, val_samples=4, resumed_from=None,
                                                     start_epoch=1, num_epochs=4, patience=3,
                                                     zero_flow_epe=5.1479), 1.0e9)]
    for e in range(1, 5):
        arch = {c: (40.0 + i if e == 1 else 2.8995 + 0.01 * i * e) for i, c in enumerate(codes)}
        mean = float(np.mean(list(arch.values())))
        best = mean if e == 1 else 2.8995
        lines.append(build_event("epoch", name, "1", dict(
            epoch=e, step=e, lr=1e-3, train_loss=1.0, grad_norm=1.0, grad_norm_p90=1.0, clip_rate=0.0,
            fairness_gap=0, nonfinite_steps=0, epoch_seconds=1.0, samples_per_second=1.0, epoch_wall_seconds=2.0),
            1.0e9 + e))
        lines.append(build_event("eval", name, "1", dict(
            epoch=e, mean_epe=mean, std_epe=0.05, median_epe=mean, p90_epe=mean, arch_epe=arch, best_epe=best,
            best_epoch=min(e, 2), bad_epochs=max(e - 2, 0), patience=3, improved=e <= 2), 1.0e9 + e))
    (run / rundir.EVENTS_FILE).write_text("".join(rundir.to_json(x) + "\n" for x in lines))
    if pictures:
        rng = np.random.default_rng(0)
        truth = rng.normal(0, 3, (2, 24, 32, 2)).astype(np.float32)
        write_flow_samples(rundir.RunPaths(run).flow_samples, FlowSamples(
            epoch=4, sample_ids=["0000007", "0000008"], frames=rng.integers(0, 255, (2, 24, 32, 6), np.uint8),
            truth=truth, archs=[codes[0], codes[-1]], arch_epe=[2.9, 3.1],
            predicted=np.stack([truth + 0.5, truth * 0.0])))
    return run


def panel(fig, title_part: str):  # noqa: ANN001, ANN201 -- matplotlib objects
    return next(ax for ax in fig.axes if title_part in ax.get_title())


def test_report_panels_read_well(tmp_path: Path) -> None:
    from edgeflow.data.flow_colour import flow_rgb
    from edgeflow.report import curves as plots

    run = plots.load(craft_pool_run(tmp_path / "pool"))
    fig = plots.figure([run])
    # The pool EPE panel: the zero-flow line, named; the epoch-1 spike off the top, named, not squashing the rest.
    epe = panel(fig, "pool EPE")
    assert any(list(line.get_ydata()) == [5.1479, 5.1479] for line in epe.lines)
    assert "zero flow 5.148" in [t.get_text() for t in epe.texts]
    assert epe.get_ylim()[1] < 6.0 and "off the top: epoch 1: 45.50" in epe.get_title()
    # The per-arch panel: ranks, 12 lines told apart by colour, line and marker, labelled at their ends
    # with code and last EPE (4 significant digits), no legend over the data.
    ranks = panel(fig, "rank of each pool arch")
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in ranks.lines}
    assert len(ranks.lines) == 12 and len(styles) == 12 and ranks.get_legend() is None
    assert sorted(t.get_text() for t in ranks.texts)[0] == "000000000 2.900"
    assert list(ranks.lines[11].get_ydata()) == [12, 12, 12, 12] and ranks.get_ylim()[0] > 12 > ranks.get_ylim()[1]
    # The early-stop panel names its threshold and shows it.
    stop = panel(fig, "early stopping")
    assert "patience 3" in stop.get_title() and stop.get_ylim()[1] > 3
    assert any(t.get_text().startswith("patience 3: the run stops") for t in stop.texts)
    # The flow pictures: the ground truth in the flow colour coding, the best and worst arch named.
    truth_axes = panel(fig, "ground truth")
    samples = run.pictures
    assert samples is not None
    shown = truth_axes.get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), flow_rgb(samples.truth[0]))
    titles = [ax.get_title() for ax in fig.axes]
    assert "best: 000000000\n(pool EPE 2.900)" in titles and "worst: 000000011\n(pool EPE 3.100)" in titles
    # Another run's pictures: another picture.
    png = plots.png_bytes([run])
    plain = plots.load(craft_pool_run(tmp_path / "plain", pictures=False))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png != plots.png_bytes([plain])


def test_report_command_says_the_result_and_the_html_has_4_digits(tmp_path: Path) -> None:
    run = craft_pool_run(tmp_path / "pool")
    proc = run_cli("edgeflow", "report", str(run), "--out", str(tmp_path / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert "pool: best 2.900 vs zero flow 5.148 (-44 %) at epoch 2" in proc.stdout, proc.stdout
    page = (tmp_path / "r.html").read_text()
    assert "<td>2.900</td>" in page and "<td>5.148</td>" in page


def test_a_broken_flow_samples_file_is_one_line_naming_it(tmp_path: Path) -> None:
    run = craft_pool_run(tmp_path / "pool")
    (run / rundir.FLOW_SAMPLES_FILE).write_bytes(b"not an archive")
    proc = run_cli("edgeflow", "report", str(run), "--out", str(tmp_path / "x.png"))
    assert proc.returncode == rundir.EXIT_BAD_INPUT
    assert proc.stderr.strip().count("\n") == 0 and str(run / rundir.FLOW_SAMPLES_FILE) in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_report_imports_no_tensorflow(tmp_path: Path) -> None:
    run = craft_pool_run(tmp_path / "pool")
    code = ("import sys; from edgeflow.commands import report; "
            f"assert report.main([{str(run)!r}, '--out', {str(tmp_path / 'r.png')!r}]) == 0; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ the search front plot

def test_front_plot_names_its_archs_in_readable_units(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from edgeflow.nas import search

    rows = [{"code": c, "epe_mean": e, "flops": f} for c, e, f in
            (("000000000", 3.0, 1.2e9), ("111111111", 2.5, 2.4e9), ("222222222", 2.7, 3.0e9))]
    plan = SimpleNamespace(settings=SimpleNamespace(objectives=("epe", "flops")), cache={r["code"]: r for r in rows},
                           run=SimpleNamespace(cfg=SimpleNamespace(runtime=SimpleNamespace(experiment_name="x"))),
                           name="s", folder=tmp_path)
    drawn: list[Figure] = []
    save = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        drawn.append(fig)
        save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    search.write_plot(plan, rows, rows[:2])
    (ax,) = drawn[0].axes
    assert ax.get_xlabel() == "GFLOPs per sample" and ax.xaxis.get_offset_text().get_text() == ""
    assert sorted(t.get_text() for t in ax.texts) == ["000000000", "111111111"]
    assert list(ax.lines[0].get_xdata()) == [1.2, 2.4]


# ------------------------------------------------------------------ the trainer's pictures

def test_pictures_show_the_flow_the_evaluation_measured(tmp_path: Path, demo_data: Path) -> None:
    from edgeflow import config
    from edgeflow.data.flow_colour import epe_map
    from edgeflow.data.splits import resolve_splits
    from edgeflow.train import flow_pictures
    from edgeflow.train.evaluate import Evaluator, datasets, summarize
    from edgeflow.train.restore import build_supernet

    cfg = config.load(tiny_config(tmp_path, demo_data))
    splits = resolve_splits(cfg)
    model = build_supernet(cfg)
    evaluator = Evaluator(model, cfg)
    recal, evals = datasets(cfg, splits.train, splits.val)
    codes = ["000000000", "222222222", "111111111"]
    before = [v.numpy().copy() for v in model.variables]
    result = summarize({c: evaluator.arch_epe([int(ch) for ch in c], recal, evals) for c in codes})
    samples = flow_pictures.take(model, evaluator, result, 1, recal, evals, splits.val, cfg.eval.bn_mode,
                                 count=cfg.eval.batch_size)
    assert samples.archs == flow_pictures.picture_archs(result) and len(samples.archs) == 2
    for code, predicted in zip(samples.archs, samples.predicted, strict=True):
        # The whole (only) eval batch is shown: its error maps average to the EPE the evaluation measured.
        assert float(np.mean(epe_map(predicted, samples.truth))) == pytest.approx(result.arch_epe[code], rel=1e-4)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables, strict=True))
    x, _ = next(iter(evals))
    # Frame 1 as the model saw it (BGR in [-1, 1]), in RGB.
    assert np.array_equal(samples.frames[..., 2::-1], np.round((np.asarray(x)[..., :3] + 1) * 127.5).astype(np.uint8))


def test_picture_archs_are_the_best_and_the_worst_or_the_only_one() -> None:
    from edgeflow.train.evaluate import summarize
    from edgeflow.train.flow_pictures import picture_archs

    assert picture_archs(summarize({"b": 2.0, "a": 1.0, "c": float("nan"), "d": 3.0})) == ["a", "c"]
    assert picture_archs(summarize({"a": 1.0})) == ["a"]
