"""What watching a run costs: the progress reporter per training step, TensorBoard summaries per epoch,
`jobs status` on a long run, and drawing a report."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgeflow import rundir
from edgeflow.rundir.events import build_event


def _per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def _long_run(root: Path, epochs: int, beats_per_epoch: int) -> Path:
    run = root / "long"
    run.mkdir()
    lines, t = [], 1.0e9
    for e in range(1, epochs + 1):
        for b in range(beats_per_epoch):
            t += 30
            lines.append(build_event("heartbeat", "long", "1", dict(epoch=e, step=b, samples_per_second=30.0), t))
        t += 30
        lines.append(build_event("epoch", "long", "1", dict(
            epoch=e, step=e * 700, lr=1e-4, train_loss=1.0 / e, grad_norm=1.0, grad_norm_p90=2.0, clip_rate=0.0,
            fairness_gap=0, nonfinite_steps=0, epoch_seconds=600.0, samples_per_second=30.0), t))
        lines.append(build_event("eval", "long", "1", dict(
            epoch=e, mean_epe=5.0 / e, std_epe=0.1, median_epe=5.0 / e, p90_epe=6.0 / e,
            arch_epe={f"{i:09d}": 5.0 / e for i in range(12)}, best_epe=5.0 / e, best_epoch=e, bad_epochs=0,
            patience=15, improved=True), t))
    (run / rundir.EVENTS_FILE).write_text("".join(rundir.to_json(x) + "\n" for x in lines))
    rundir.atomic_write_json(run / rundir.RUN_FILE, {"experiment": "long", "status": "running"})
    return run


def main() -> None:
    from edgeflow.progress import Reporter

    sink = io.StringIO()
    bar = Reporter("epoch 1/1", 10**9, every_seconds=60, stream=sink, tty=False)
    per_update = _per_call(lambda: bar.update(samples=32, loss=1.0), 100_000)
    print(f"progress reporter (off a terminal): {per_update * 1e6:.2f} us per training step")
    with tempfile.TemporaryDirectory() as tmp:
        run = _long_run(Path(tmp), epochs=200, beats_per_epoch=20)
        size = (run / rundir.EVENTS_FILE).stat().st_size
        from jobs.status import describe

        per_status = _per_call(lambda: describe(run), 5)
        print(f"jobs status of a 200-epoch run ({size / 1e6:.1f} MB of events): {per_status * 1e3:.0f} ms")
        from edgeflow.report import curves as plots

        start = time.perf_counter()
        plots.write_report([run], Path(tmp) / "r.png")
        print(f"report of a 200-epoch run with 12 archs: {time.perf_counter() - start:.2f} s")
        from edgeflow.console import quiet_tensorflow

        quiet_tensorflow()
        from edgeflow.train.summaries import Summaries

        summaries = Summaries(Path(tmp) / "tb")
        event = next(e for e in rundir.read_events(run / rundir.EVENTS_FILE) if e["event"] == "eval")
        per_epoch = _per_call(lambda: summaries.write("eval", event), 50)
        summaries.close()
        print(f"TensorBoard summaries of one evaluation (12 archs): {per_epoch * 1e3:.1f} ms per epoch")
