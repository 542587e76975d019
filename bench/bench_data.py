"""Data-layer figures: the preflight header scan of an FC2-sized tree, and input-pipeline throughput.

(1) A 22,232 + 640 sample tree made of hard links to one real rendered sample: preflight seconds.
(2) Samples/s of the input paths at 180x240 on real demo samples, at 1 and 2 threads: the PNG floor
    (cv2.imread of the two PNGs and np.fromfile of the .flo in a plain Python loop), the tf.data PNG
    path, and the tf.data path over a decode-once pack (data.format: packed), with the packed/PNG
    ratios per core.
(3) FlyingThings3D (540x960 frames, PFM flow) next to FC2 (384x512, .flo): flow files decoded per
    second (NumPy, and TensorFlow's native ops as the pipeline uses them), and samples/s of the tf.data
    PNG+PFM path and of a pack of it at 180x240, per CPU-second.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

FC2_TRAIN, FC2_VAL = 22_232, 640
PIPE_SAMPLES = 8  # distinct rendered samples, cycled
PIPE_EPOCH = 256  # PNG samples per measured epoch
PACKED_EPOCH = 768  # packed samples per measured epoch (a faster path: more for the same precision)
# Distinct pack records (2.75 MB each): more than any CPU cache holds, so reads come from memory.
PACK_RECORDS = 128


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
    from edgeflow.data.fc2 import scan_split
    from edgeflow.data.preflight import run_preflight

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


def _floor(samples, threads: int = 1, seconds: float = 2.0) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) of the plain decode loop on `threads` threads
    (cv2.imread and file reads release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from edgeflow.data.flo import read_flo

    cv2.setNumThreads(1)

    def loop(_: int) -> int:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for s in samples:
                a, b = cv2.imread(s.img0), cv2.imread(s.img1)
                f = read_flo(s.flow)
                assert a is not None and b is not None and f.shape[2] == 2
                done += 1
        return done

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(loop, range(threads)))
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def _pipeline_rate(samples, threads: int, epochs: int = 2, packed_dir: str = "") -> tuple[float, float, float]:
    """(samples per wall second, per CPU second, build CPU seconds) of train_dataset on `threads` threads."""
    import tensorflow as tf

    from edgeflow import config
    from edgeflow.data.pipeline import train_dataset

    fmt = {"format": "packed", "packed_dir": packed_dir} if packed_dir else {}
    cfg = config.from_dict({"data": {"num_parallel_calls": threads, "prefetch_batches": 2, **fmt},
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


def _packed_samples(tmp: Path, source: Path) -> list:
    """PACK_RECORDS distinct record files (copies of a real pack of the rendered samples), as samples."""
    import dataclasses
    import shutil

    from edgeflow.data.fc2 import FolderSource
    from edgeflow.data.pack import RECORD_SUFFIX, open_pack
    from edgeflow.data.packing import pack_split

    pack_split(FolderSource("train", str(source), "data.train_dir"), tmp / "pack", input_size=(180, 240),
               show_progress=False)
    packed = open_pack(tmp / "pack/train").samples
    out = []
    for i in range(PACK_RECORDS):
        base = packed[i % len(packed)]
        record = tmp / "pack/copies" / f"{i:07d}{RECORD_SUFFIX}"
        record.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base.record, record)
        out.append(dataclasses.replace(base, record=str(record)))
    return [out[i % len(out)] for i in range(PACKED_EPOCH)]


def bench_pipeline(tmp: Path) -> None:
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.data.fc2 import scan_split

    render_demo_dataset(tmp / "pipe", PIPE_SAMPLES, 0, seed=1)
    distinct = scan_split(tmp / "pipe/train").valid
    samples = [distinct[i % len(distinct)] for i in range(PIPE_EPOCH)]
    packed = _packed_samples(tmp, tmp / "pipe/train")
    print("input paths at 180x240, samples/s: wall, per thread (wall / threads), per CPU-second")
    rates: dict[tuple[str, int], tuple[float, float]] = {}
    for threads in (1, 2):
        wall, per_cpu = _floor(distinct, threads)
        rates["floor", threads] = wall, per_cpu
        print(f"  PNG floor (cv2.imread x2 + np.fromfile .flo, plain loop), {threads} thread(s): {wall:8.1f} wall "
              f"{wall / threads:8.1f} per thread {per_cpu:8.1f} per CPU-s")
    for name, packed_dir in (("PNG tf.data", ""), ("packed tf.data", str(tmp / "pack"))):
        for threads in (1, 2):
            wall, per_cpu, build = _pipeline_rate(packed if packed_dir else samples, threads, packed_dir=packed_dir)
            rates[name, threads] = wall, per_cpu
            print(f"  {name} train pipeline, {threads} thread(s): {wall:8.1f} wall {wall / threads:8.1f} per thread "
                  f"{per_cpu:8.1f} per CPU-s (dataset build {build:.2f} s CPU per epoch)")
    for threads in (1, 2):
        floor, png, packed_rate = (rates[k, threads] for k in ("floor", "PNG tf.data", "packed tf.data"))
        print(f"  {threads} thread(s): packed / PNG floor = {packed_rate[0] / floor[0]:.1f}x wall, "
              f"{packed_rate[1] / floor[1]:.1f}x per CPU-s (target >= 5x); packed / PNG tf.data = "
              f"{packed_rate[0] / png[0]:.1f}x wall, {packed_rate[1] / png[1]:.1f}x per CPU-s; PNG tf.data / floor "
              f"{100 * png[1] / floor[1]:.0f}% per CPU-s")
    print(f"(machine: {os.cpu_count()} cores shared with other work; wall figures vary with load, "
          f"per-CPU-second figures much less)")


def _files_per_second(read, paths: list[str], seconds: float = 2.0) -> tuple[float, float]:
    """(files per wall second, per CPU second) of `read` over `paths` in a loop on one thread."""
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for path in paths:
            read(path)
            done += 1
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


FT3D_PACKED_EPOCH = 256


def bench_ft3d(tmp: Path) -> None:
    import dataclasses
    import shutil

    import tensorflow as tf

    from edgeflow.data import flo, pfm
    from edgeflow.data.demo import render_demo_dataset
    from edgeflow.data.demo_layouts import render_ft3d
    from edgeflow.data.fc2 import scan_split
    from edgeflow.data.ft3d import Ft3dSelection, Ft3dSource
    from edgeflow.data.pack import open_pack
    from edgeflow.data.packing import pack_split
    from edgeflow.data.samples import ScanOptions

    render_ft3d(tmp / "ft3d", scenes=1, test_scenes=0, frames=5, seed=0)
    source = Ft3dSource("train", str(tmp / "ft3d"), Ft3dSelection())
    ft3d_samples = source.scan(ScanOptions()).valid  # 2 passes x 2 directions x 4 frames
    if not (tmp / "pipe/train").is_dir():
        render_demo_dataset(tmp / "pipe", PIPE_SAMPLES, 0, seed=1)
    fc2_samples = scan_split(tmp / "pipe/train").valid
    pfms = sorted({s.flow for s in ft3d_samples})
    flos = [s.flow for s in fc2_samples]

    header = pfm.read_header(pfms[0])[0]  # the demo's PFMs are all little-endian 540x960

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def tf_pfm_graph(path: tf.Tensor) -> tf.Tensor:
        # As the pipeline reads a whole PFM for packing: one read, the values after the header, rows flipped.
        data = tf.io.read_file(path)
        values = tf.io.decode_raw(tf.strings.substr(data, header.bytes, header.data_bytes), tf.float32,
                                  little_endian=True)
        return tf.reduce_sum(tf.reverse(tf.reshape(values, [header.height, header.width, 3])[..., :2], axis=[0]))

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def tf_flo_graph(path: tf.Tensor) -> tf.Tensor:
        data = tf.io.read_file(path)
        return tf.reduce_sum(tf.io.decode_raw(tf.strings.substr(data, 12, 8 * 384 * 512), tf.float32))

    def tf_pfm(path: str) -> None:
        tf_pfm_graph(tf.constant(path)).numpy()

    def tf_flo(path: str) -> None:
        tf_flo_graph(tf.constant(path)).numpy()

    print("flow files decoded per second, one thread (wall, per CPU-second):")
    for name, read, paths, size in (("PFM 540x960 (FT3D), NumPy", pfm.read_pfm, pfms, "6.2 MB"),
                                    ("PFM 540x960 (FT3D), TF ops, whole", tf_pfm, pfms, "6.2 MB"),
                                    (".flo 384x512 (FC2), NumPy", flo.read_flo, flos, "1.6 MB"),
                                    (".flo 384x512 (FC2), TF ops, whole", tf_flo, flos, "1.6 MB")):
        read(paths[0])  # warm-up: first trace, page cache
        wall, per_cpu = _files_per_second(read, paths)
        print(f"  {name:<36} ({size}): {wall:8.1f} wall {per_cpu:8.1f} per CPU-s")

    pack_split(source, tmp / "pack-ft3d", input_size=(180, 240), show_progress=False)
    packed = open_pack(tmp / "pack-ft3d/train").samples
    copies = []
    for i, base in enumerate(packed):  # distinct record files: 16 x 7.3 MB, more than any CPU cache holds
        record = tmp / "pack-ft3d/copies" / f"{i:07d}.rec"
        record.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base.record, record)
        copies.append(dataclasses.replace(base, record=str(record)))
    epochs = {"FC2 PNG+.flo": [fc2_samples[i % len(fc2_samples)] for i in range(PIPE_EPOCH)],
              "FT3D PNG+PFM": [ft3d_samples[i % len(ft3d_samples)] for i in range(PIPE_EPOCH)],
              "FT3D packed": [copies[i % len(copies)] for i in range(FT3D_PACKED_EPOCH)]}
    print("train pipeline at 180x240, samples/s: wall, per thread, per CPU-second")
    for threads in (1, 2):
        for name, samples in epochs.items():
            wall, per_cpu, build = _pipeline_rate(samples, threads)
            print(f"  {name:<14} {threads} thread(s): {wall:8.1f} wall {wall / threads:8.1f} per thread "
                  f"{per_cpu:8.1f} per CPU-s (dataset build {build:.2f} s CPU per epoch)")
    print(f"(machine: {os.cpu_count()} cores shared with other work; wall figures vary with load, "
          f"per-CPU-second figures much less)")


def main(parts: list[str] | None = None) -> None:
    """All three parts; `python -m bench.bench_data ft3d` runs only (3)."""
    parts = parts or ["preflight", "pipeline", "ft3d"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgeflow-bench-data-") as tmp:
        for part in parts:
            {"preflight": bench_preflight, "pipeline": bench_pipeline, "ft3d": bench_ft3d}[part](Path(tmp))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
