"""One measurement of bench_step.py, in a process of its own: `python bench/step_measure.py KIND ARGS_JSON`.

Run as a script (not `-m`), so `edgeflow` comes from PYTHONPATH: the working tree for "after", an
export of the commit before the step's rework for "before" (bench_step.py sets it). It uses only what
both versions have, and prints one line `RESULT {json}`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _inputs(batch: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (batch, height, width, 6)).astype(np.float32),
            rng.normal(0, 5, (batch, height, width, 2)).astype(np.float32))


def _step(height: int, width: int, precision: Any = False, jit: bool = False) -> Any:
    import tensorflow as tf

    from edgeflow.config import Config
    from edgeflow.model.supernet import Supernet, compute_dtype_for
    from edgeflow.train.step import TrainStep

    cfg = Config()
    cfg.data.input_height, cfg.data.input_width = height, width
    cfg.train.mixed_precision, cfg.train.jit_compile = precision, jit
    step = TrainStep(Supernet(seed=0, compute_dtype=compute_dtype_for(precision)), cfg)
    if jit and not hasattr(step, "launch"):
        tf.config.optimizer.set_jit(False)  # the old step's auto-clustering: global state, undone
    return step


def graph(args: dict[str, Any]) -> dict[str, Any]:
    from stepgraph import count

    step = _step(32, 48)
    return count(step.function.get_concrete_function())


def timing(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per step, steps queued as the training loop queues them (the old loop read each one)."""
    from edgeflow.space.sampler import FairSampler

    height, width, batch = args["height"], args["width"], args["batch"]
    step = _step(height, width, args.get("precision", False), args.get("jit", False))
    sampler = FairSampler(1)
    x, flow = _inputs(batch, height, width)
    started = time.perf_counter()
    step(x, flow, sampler.next_archs(), 1e-4)
    first = time.perf_counter() - started
    for _ in range(args.get("warmup", 1)):
        step(x, flow, sampler.next_archs(), 1e-4)
    n = args["steps"]
    if hasattr(step, "launch"):
        placed = step.place(x, flow)
        started = time.perf_counter()
        for _ in range(n):
            step.launch(placed, sampler.next_archs(), 1e-4)
        step.log.read()
    else:
        started = time.perf_counter()
        for _ in range(n):
            step(x, flow, sampler.next_archs(), 1e-4)
    return {"seconds": (time.perf_counter() - started) / n, "first": first, "traces": step.tracing_count()}


def _write_config(path: Path, demo: Path, out: Path, **sections: dict[str, Any]) -> Path:
    import yaml

    raw: dict[str, Any] = {
        "runtime": {"experiment_name": path.stem, "output_root": str(out), "seed": 0},
        "data": {"train_dir": str(demo / "train"), "val_dir": str(demo / "val")},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def syncs(args: dict[str, Any]) -> dict[str, Any]:
    """Device-to-host reads on the training thread during the epochs' steps, with no heartbeat or
    progress line due (the old loop read every step's results; the new one its step log once per epoch)."""
    from tensorflow.python.framework import ops

    from edgeflow.cli import main
    from edgeflow.train import loop

    counts = {"reads": 0, "in_step": 0, "steps": 0}
    state = {"on": False, "in_step": 0}
    original_numpy = ops._EagerTensorBase._numpy
    training_thread = threading.main_thread()

    def counting_numpy(self: Any) -> Any:
        if state["on"] and threading.current_thread() is training_thread:
            counts["reads"] += 1
            counts["in_step"] += bool(state["in_step"])
        return original_numpy(self)

    ops._EagerTensorBase._numpy = counting_numpy
    original_epoch = loop.Trainer._train_epoch

    def counted_epoch(self: Any, epoch: int) -> bool:
        step_type = type(self.step_fn)
        if not getattr(step_type, "_bench_wrapped", False):
            for name in ("__call__", "launch", "place"):
                method = getattr(step_type, name, None)
                if method is None:
                    continue

                def wrapped(*a: Any, _m: Any = method, **k: Any) -> Any:
                    mine = threading.current_thread() is training_thread
                    state["in_step"] += mine
                    try:
                        return _m(*a, **k)
                    finally:
                        state["in_step"] -= mine
                setattr(step_type, name, wrapped)
            step_type._bench_wrapped = True
        before = self.state.step
        state["on"] = True
        try:
            return original_epoch(self, epoch)
        finally:
            state["on"] = False
            counts["steps"] += self.state.step - before

    loop.Trainer._train_epoch = counted_epoch  # type: ignore[method-assign]
    tmp = Path(args["tmp"])
    cfg = _write_config(tmp / "syncs.yaml", Path(args["data"]), tmp / "out",
                        runtime={"heartbeat_seconds": 1e6, "progress_seconds": 1e6},
                        data={"input_height": 32, "input_width": 48},
                        train={"num_epochs": 2, "batch_size": 4},
                        eval={"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1,
                              "pool": ["000000000"], "every_epochs": 100})
    code = main(["train", "--config", str(cfg)])
    return dict(counts, exit_code=code)


def gaps(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds between each epoch's last step (a heartbeat after every step) and its `epoch` event."""
    import subprocess

    from edgeflow.rundir import read_events

    tmp, data, results = Path(args["tmp"]), Path(args["data"]), []
    for run in range(args["runs"]):
        cfg = _write_config(tmp / f"gap{run}.yaml", data, tmp / "out",
                            runtime={"heartbeat_seconds": 1e-6, "progress_seconds": 1e6},
                            data={"input_height": 48, "input_width": 64},
                            train={"num_epochs": args["epochs"], "batch_size": 4},
                            eval={"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1,
                                  "pool": ["000000000"], "every_epochs": 100})
        proc = subprocess.run([sys.executable, "-m", "edgeflow", "train", "--config", str(cfg)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        last = None
        for event in read_events(tmp / "out" / f"gap{run}" / "events.jsonl"):
            if event["event"] == "heartbeat":
                last = event["time"]
            elif event["event"] == "epoch" and last is not None:
                results.append(event["time"] - last)
    return {"gaps": results}


def evaluation(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one evaluation of the demo protocol (configs/demo.yaml), after a first one that traced
    the functions; the batches as the loop keeps them (decoded on every pass before, cached now)."""
    from edgeflow import config as config_mod
    from edgeflow.data.splits import resolve_splits
    from edgeflow.model.supernet import Supernet
    from edgeflow.train import evaluate

    cfg = config_mod.load(args["config"])
    cfg.data.train_dir, cfg.data.val_dir = f"{args['data']}/train", f"{args['data']}/val"
    splits = resolve_splits(cfg)
    model = Supernet(seed=0)
    cached = hasattr(evaluate, "CachedBatches")  # what this version's loop does
    started = time.perf_counter()
    recal, evals = evaluate.datasets(cfg, splits.train, splits.val, cache=cached)
    prepare = time.perf_counter() - started
    evaluator = evaluate.Evaluator(model, cfg)
    started = time.perf_counter()
    first = evaluator.evaluate(cfg.eval.pool, recal, evals)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = evaluator.evaluate(cfg.eval.pool, recal, evals)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "first": first_seconds + prepare, "archs": len(cfg.eval.pool),
            "mean_epe": second.mean_epe, "same": first == second}


KINDS = {"graph": graph, "timing": timing, "syncs": syncs, "gaps": gaps, "eval": evaluation}


if __name__ == "__main__":
    result = KINDS[sys.argv[1]](json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
    print("RESULT " + json.dumps(result), flush=True)
