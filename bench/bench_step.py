"""The training step before and after its rework for GPUs (issue 24), side by side in one run.

"Before" is the trainer of commit BEFORE, exported from git into a temporary folder; "after" is this
working tree. Each figure comes from a fresh process per version (bench/step_measure.py), the two run
one after the other, so they share the machine's load; read the ratios, not the absolute times.

- graph nodes and device kernels per step, counted from the traced step (bench/stepgraph.py);
- host reads per step between heartbeats, in the real training loop;
- step time at a tiny crop (32x48, batch 2), where launching kernels costs more than computing them:
  the CPU's stand-in for a GPU's launch cost;
- step time at 180x240, batch 32, in float32 and bfloat16 (and the XLA-compiled step, after only);
- one evaluation of the demo protocol (12 archs), once its functions are traced;
- the gap between an epoch's last step and its `epoch` event, over several runs and epochs.

`EDGEFLOW_BENCH_QUICK=1` skips the 180x240 timings (minutes on a small CPU). Without git history (an
installed copy) only the "after" figures are printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MEASURE = Path(__file__).resolve().parent / "step_measure.py"
# The last commit with the old step (hand-written Adam, tf.cond, a host read after every step).
BEFORE = "85d80b6"


def _export_before(tmp: Path) -> Path | None:
    """The `edgeflow` package of BEFORE in tmp/before; None (and why) when git cannot give it."""
    target = tmp / "before"
    target.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "edgeflow"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"before: not measured (no git history with commit {BEFORE}: {exc})")
        return None
    return target


def _measure(tree: Path, kind: str, args: dict[str, Any], tmp: Path, label: str = "") -> dict[str, Any] | None:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(MEASURE), kind, json.dumps(args)], capture_output=True, text=True,
                          cwd=tmp, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"  {kind} ({label or tree.name}) failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        return None
    return json.loads(lines[-1].removeprefix("RESULT "))


def _both(trees: dict[str, Path], kind: str, args: dict[str, Any], tmp: Path) -> dict[str, dict[str, Any] | None]:
    work = tmp / f"{kind}-{int(time.time() * 1000)}"
    out = {}
    for name, tree in trees.items():
        (work / name).mkdir(parents=True)
        out[name] = _measure(tree, kind, dict(args, tmp=str(work / name)), work / name, name)
    return out


def _ratio(before: float | None, after: float | None) -> str:
    if not before or not after:
        return ""
    return f"  (x{before / after:.2f})"


def _row(label: str, res: dict[str, dict[str, Any] | None], key: str, fmt: str = "{:.0f}", scale: float = 1.0,
         unit: str = "") -> None:
    vals = {n: (r or {}).get(key) for n, r in res.items()}
    shown = "  ".join(f"{n} {fmt.format(v * scale) + unit if v is not None else '-'}" for n, v in vals.items())
    b, a = vals.get("before"), vals.get("after")
    print(f"{label}: {shown}{_ratio(b * scale if b else None, a * scale if a else None)}")


def main() -> None:
    from edgeflow.data.demo import render_demo_dataset

    quick = os.environ.get("EDGEFLOW_BENCH_QUICK") == "1"
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        trees: dict[str, Path] = {}
        before = _export_before(tmp)
        if before is not None:
            trees["before"] = before
        trees["after"] = REPO
        data = tmp / "demo"
        render_demo_dataset(data, 96, 16, seed=0)  # the demo data set (make demo-data)
        print(f"before = commit {BEFORE}, after = this tree; each measured in its own process, one after the other")

        res = _both(trees, "graph", {}, tmp)
        _row("graph nodes per step (executed)", res, "nodes")
        _row("graph nodes (static, every function)", res, "graph_nodes")
        _row("device kernels per step", res, "kernels")
        for n, r in res.items():
            if r:
                print(f"  {n}: most kernels {', '.join(f'{op} {c}' for op, c in r['top'][:6])}")

        res = _both(trees, "syncs", {"data": str(data)}, tmp)
        for n, r in res.items():
            if r and r.get("steps"):
                print(f"device-to-host reads on the training thread, {r['steps']} steps, no heartbeat or progress "
                      f"line due ({n}): {r['reads']}, {r['reads'] / r['steps']:.2f} per step ({r['in_step']} inside "
                      f"the step's call: its results; the rest: the data digest's probe of each batch before, "
                      f"the step log once per epoch after)")

        # Two rounds, before and after alternating, the faster of each: the box's load changes by the minute.
        tiny = {"height": 32, "width": 48, "batch": 2, "steps": 20, "warmup": 2}
        rounds = [_both(trees, "timing", tiny, tmp) for _ in range(2)]
        res = {n: min((m for r in rounds if (m := r[n]) is not None), key=lambda m: m["seconds"], default=None)
               for n in trees}
        _row("step time at 32x48, batch 2 (the stand-in for launch cost)", res, "seconds", "{:.1f}", 1000, " ms")
        xla = _measure(REPO, "timing", dict(tiny, jit=True, steps=5, tmp=str(tmp)), tmp)
        if xla:
            print(f"  after, XLA (train.jit_compile): {xla['seconds'] * 1000:.1f} ms per step; first call "
                  f"{xla['first']:.0f} s (compiles)")

        res = _both(trees, "eval", {"data": str(data), "config": str(REPO / "configs" / "demo.yaml")}, tmp)
        _row("evaluation of the demo pool (96x128, 12 archs, traced)", res, "seconds", "{:.2f}", 1, " s")
        for n, r in res.items():
            if r:
                print(f"  {n}: first evaluation (tracing, decoding) {r['first']:.1f} s, mean EPE {r['mean_epe']:.4f},"
                      f" repeatable {r['same']}")

        res = _both(trees, "gaps", {"data": str(data), "runs": 2, "epochs": 3}, tmp)
        for n, r in res.items():
            if r and r.get("gaps"):
                g = r["gaps"]
                print(f"last step -> epoch event ({n}, {len(g)} epochs over 2 runs): max {max(g):.2f} s, "
                      f"mean {sum(g) / len(g):.2f} s")

        if quick:
            print("180x240 step timings skipped (EDGEFLOW_BENCH_QUICK=1)")
            return
        for precision in (False, "bfloat16"):
            args = {"height": 180, "width": 240, "batch": 32, "steps": 2, "warmup": 1, "precision": precision}
            res = _both(trees, "timing", args, tmp)
            _row(f"step time at 180x240, batch 32, {precision or 'float32'}", res, "seconds", "{:.2f}", 1, " s")
        args = {"height": 180, "width": 240, "batch": 32, "steps": 1, "warmup": 0, "jit": True}
        if os.environ.get("EDGEFLOW_BENCH_XLA_FULL") == "1":
            xla = _measure(REPO, "timing", dict(args, tmp=str(tmp)), tmp)
            if xla:
                print(f"step time at 180x240, batch 32, XLA: after {xla['seconds']:.2f} s "
                      f"(first call {xla['first']:.0f} s: compiles)")
        else:
            print("step time at 180x240, batch 32, XLA: not run on a CPU by default (XLA's CPU backend runs this "
                  "step far slower than oneDNN and compiles for minutes; EDGEFLOW_BENCH_XLA_FULL=1 runs it; "
                  "on a GPU: python -m bench gpu)")


if __name__ == "__main__":
    main()
