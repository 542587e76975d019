"""Data-layer figures: the preflight header scan of an FC2-sized tree, and input-pipeline throughput.

(1) A 22,232 + 640 sample tree made of hard links to one real rendered sample: preflight seconds.
(2) Samples/s of the tf.data training pipeline at 180x240 on real demo samples with 1 and 2 threads,
    next to the floor measured in the same run: cv2.imread of the two PNGs and np.fromfile of the
    .flo in a plain Python loop (one core). Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

FC2_TRAIN, FC2_VAL = 22_232, 640
PIPE_SAMPLES = 8  # distinct rendered samples, cycled
PIPE_EPOCH = 1024


def _fc2_tree(root: Path, source: Path) -> None:
    for split, count in (("train", FC2_TRAIN), ("val", FC2_VAL)):
        directory = root / split
        directory.mkdir(parents=True)
        for i in range(count):
            for part in ("img_0.png", "img_1.png", "flow_01.flo"):
                os.link(source / f"0000000-{part}", directory / f"{i:07d}-{part}")


def bench_preflight(tmp: Path) -> None:
    from edgeflow import config
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.data.preflight import run_preflight
    from edgeflow.data.scan import scan_split

    render_demo_dataset(tmp / "one", 1, 0, seed=0)
    start = time.perf_counter()
    _fc2_tree(tmp / "fc2", tmp / "one" / "train")
    print(f"built {FC2_TRAIN} + {FC2_VAL} sample tree of hard links in {time.perf_counter() - start:.1f} s")
    cfg = config.from_dict({"data": {"train_dir": str(tmp / "fc2/train"), "val_dir": str(tmp / "fc2/val")}})
    for attempt in ("cold-ish", "warm"):
        report = run_preflight(cfg)
        print(f"preflight header scan ({attempt}, threaded): {report.seconds:.2f} s, ok={report.ok}, "
              f"{len(report.splits.train) if report.splits else 0} + {len(report.splits.val) if report.splits else 0}"
              f" valid (target < 5 s)")
    start = time.perf_counter()
    scan_split(tmp / "fc2/train", workers=1)
    print(f"header scan of train, one thread: {time.perf_counter() - start:.2f} s")


def _floor(samples, seconds: float = 4.0) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of the plain decode loop."""
    import cv2

    from edgeflow.data.flo import read_flo

    cv2.setNumThreads(1)
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for s in samples:
            a, b = cv2.imread(s.img0), cv2.imread(s.img1)
            f = read_flo(s.flow)
            assert a is not None and b is not None and f.shape[2] == 2
            done += 1
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def _pipeline_rate(samples, threads: int, epochs: int = 2) -> tuple[float, float, float]:
    """(samples per wall second, per CPU second, build CPU seconds) of train_dataset on `threads` threads."""
    import tensorflow as tf

    from edgeflow import config
    from edgeflow.data.pipeline import train_dataset

    cfg = config.from_dict({"data": {"num_parallel_calls": threads, "prefetch_batches": 2},
                            "train": {"batch_size": 32}})
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1

    wall = cpu = build = 0.0
    done = 0
    for epoch in range(epochs + 1):
        started = time.process_time()
        # Building traces the map functions (~0.25 s CPU, once per epoch: 0.01 ms/sample on FC2's 22k).
        dataset = train_dataset(samples, cfg, epoch).with_options(options)
        built_wall, built_cpu = time.perf_counter(), time.process_time()
        n = sum(int(x.shape[0]) for x, _ in dataset)
        if epoch == 0:  # warm-up: first trace, page cache
            continue
        build += built_cpu - started
        wall += time.perf_counter() - built_wall
        cpu += time.process_time() - built_cpu
        done += n
    return done / wall, done / cpu, build / epochs


def bench_pipeline(tmp: Path) -> None:
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.data.scan import scan_split

    render_demo_dataset(tmp / "pipe", PIPE_SAMPLES, 0, seed=1)
    distinct = scan_split(tmp / "pipe/train").valid
    samples = [distinct[i % len(distinct)] for i in range(PIPE_EPOCH)]
    floor_wall, floor_cpu = _floor(distinct)
    print(f"floor (cv2.imread x2 + np.fromfile .flo, plain loop, 1 core): {floor_wall:.1f} samples/s wall, "
          f"{floor_cpu:.1f} per CPU-second")
    for threads in (1, 2):
        wall, per_cpu, build = _pipeline_rate(samples, threads)
        print(f"tf.data train pipeline 180x240, {threads} thread(s): {wall:.1f} samples/s wall "
              f"({wall / threads:.1f} per thread, {100 * wall / threads / floor_wall:.0f}% of floor), "
              f"{per_cpu:.1f} per CPU-second ({100 * per_cpu / floor_cpu:.0f}% of floor per core; target >= 85%); "
              f"dataset build {build:.2f} s CPU per epoch")
    print(f"(machine: {os.cpu_count()} cores shared with other work; wall figures vary with load, "
          f"per-CPU-second figures much less)")


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgeflow-bench-data-") as tmp:
        bench_preflight(Path(tmp))
        bench_pipeline(Path(tmp))


if __name__ == "__main__":
    main()
