"""Kill probe of the commands that write folders: SIGKILL `pack`, `rank`, `export` and `import-v1` at
random moments, run each again, and compare with a run that was never killed.

    python -m bench.probe_kill_commands [--kinds pack,rank,export,import-v1] [--kills 4] [--seed 0]
                                        [--workdir DIR]                                  (make probe)

For each kind, one unkilled reference run is timed: how long until it starts writing (its folder's
parent changes) and how long in all. Each round then starts the same command and SIGKILLs it (no
handler runs) either during start-up or a random moment into its writing. Even rounds write over the
reference's own output (a replacement: the old output must be intact after the kill), odd rounds
into a new place (the output must be absent or complete after the kill). Then the command runs again
to the end, and its output must equal the reference's:

- pack: the same manifest (but its time) and the same record bytes, for every split;
- rank: the same rows (EPE, costs, key; not the timings), no code twice and no broken line in
  results.csv, the same order in results.json;
- export: the same files with the same bytes (export.json but its times; the SavedModel's
  fingerprint.pb holds a random id);
- import-v1: the same tensors, source record and state (a complete import is not run again: the
  command refuses an existing run directory).

After the rerun no hidden temporary folder or file may be left beside (or, for rank, inside) the
output. Not a benchmark: it prints what it did and exits 1 on any difference.
bench/probe_kill_resume.py does the same for training; tests/test_reliability_probe.py runs one kill
of each kind in CI.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.probe_kill_resume import kill_children, start_edgeflow

REPO = Path(__file__).resolve().parents[1]
KINDS = ("pack", "rank", "export", "import-v1")
RANK_ARCHS = ("000000000", "222222222", "012012012")
EXPORT_ARCH = "012012012"
V1_VARIABLES = REPO / "tests" / "data" / "original_v1_variables.tsv"
# Columns of a results row that are measurements of time or say who wrote it, not what was measured.
RANK_VOLATILE = ("recal_seconds", "eval_seconds", "writer", "time")
START_UP_SHARE = 0.2  # rounds killed before the command writes anything


@dataclass
class KindResult:
    kind: str
    kills: list[str] = field(default_factory=list)   # where each kill landed
    rounds: int = 0
    differences: list[str] = field(default_factory=list)
    reference_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences


@dataclass
class Setup:
    workdir: Path
    data: Path
    config: Path
    run: Path
    v1_checkpoint: Path | None


@dataclass
class Kind:
    """One command under test: how to run it to a target, read its output, and what may lie where
    leftovers would be."""

    name: str
    argv: Callable[[Setup, Path], list[str]]
    digest: Callable[[Path], Any]            # comparable summary of a finished output
    after_kill: Callable[[Any, Path, bool], list[str]]  # (reference digest, target, replacing) -> problems
    litter: Callable[[Path], Path]           # the folder where a killed run's leftovers would lie
    expected: Callable[[Path], set[str]]     # the entries allowed in that folder
    watch: Callable[[Path], Path]            # a folder whose listing changes once the command writes
    reference: Callable[[Setup], Path]
    fresh: Callable[[Setup, int], Path]
    replaces: bool = True                    # may run over its own finished output (pack, export)
    rerun_when_complete: bool = True


# ---- running and killing ---------------------------------------------------------------------------

def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return start_edgeflow(argv, log, header=True)


def _listing(folder: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except FileNotFoundError:
        return frozenset()


@dataclass
class Timing:
    """When a run changed its watched folder first and last (its writing), and when it ended."""

    code: int
    begin: float
    end_of_writing: float
    total: float


def _run_to_end(argv: list[str], log: Path, timeout: float, watch: Path | None = None) -> Timing:
    last = _listing(watch) if watch is not None else frozenset()
    started = time.perf_counter()
    proc = _start(argv, log)
    began = changed = None
    while proc.poll() is None and time.perf_counter() - started < timeout:
        if watch is not None:
            now = _listing(watch)
            if now != last:
                changed = time.perf_counter() - started
                began = began if began is not None else changed
                last = now
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
    code = proc.wait()
    total = time.perf_counter() - started
    if watch is not None and _listing(watch) != last:  # the last change came with the exit
        changed = total
    began = began if began is not None else total
    return Timing(code, began, changed if changed is not None else total, total)


class ExitedFirst(RuntimeError):
    """The command failed on its own before the kill landed."""


def _kill_round(argv: list[str], watch: Path, log: Path, rng: random.Random, ref: Timing, timeout: float,
                misses: int = 0) -> str | None:
    """Start the command and SIGKILL it at a random moment; None when it finished before the kill.
    After `misses` rounds that finished first (a less loaded machine than the reference's), the moments
    are drawn from an earlier part of the writing (half for each miss)."""
    before = _listing(watch)
    started = time.perf_counter()
    proc = _start(argv, log)
    if rng.random() < START_UP_SHARE:
        delay = rng.uniform(0.0, ref.begin)
        where = f"{delay:.2f} s after the start (start-up)"
    else:
        while proc.poll() is None and time.perf_counter() - started < timeout and _listing(watch) == before:
            time.sleep(0.01)
        # The reference's writing, from its first change of the folder to its last, and a little after.
        writing = ref.end_of_writing - ref.begin
        delay = rng.uniform(0.0, (writing * 1.1 + 0.05) * 0.5 ** misses)
        where = f"{delay:.2f} s into writing (the reference wrote for {writing:.1f} s)"
    time.sleep(delay)
    if proc.poll() is not None:
        if proc.returncode != 0:
            raise ExitedFirst(f"exited {proc.returncode} before the kill ({where})")
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return where



# ---- what is compared --------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack_digest(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        folder = root / split
        if not os.path.lexists(folder):
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest.pop("created", None)
        records = {p.name: _sha256(p) for p in sorted((folder / "records").iterdir())}
        out[split] = {"manifest": manifest, "records": records}
    return out


def pack_expected(root: Path) -> set[str]:
    names = set()
    for split in ("train", "val"):
        if os.path.lexists(root / split):
            names |= {split, os.readlink(root / split)} if (root / split).is_symlink() else {split}
    return names


def export_digest(out: Path) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(path.relative_to(out))
        if rel == "export.json":
            record = json.loads(path.read_text())
            for volatile in ("seconds", "written"):
                record.pop(volatile, None)
            files[rel] = record
        elif rel == "saved_model/fingerprint.pb":
            files[rel] = "present"  # holds a random id by design
        else:
            files[rel] = _sha256(path)
    return files


def export_expected(out: Path) -> set[str]:
    return {out.name, os.readlink(out)} if out.is_symlink() else ({out.name} if out.exists() else set())


def rank_digest(folder: Path) -> dict[str, Any]:
    from edgeflow.nas import results

    rows = {}
    broken, seen = [], []
    with open(folder / results.RESULTS_CSV, newline="") as fh:
        for n, fields in enumerate(csv.reader(fh)):
            if n == 0 and fields and fields[0] == "code":
                continue
            row = results.parse_line(fields)
            if row is None:
                broken.append(n + 1)
                continue
            seen.append(row["code"])
            rows[row["code"]] = {k: v for k, v in row.items() if k not in RANK_VOLATILE}
    summary = json.loads((folder / results.RESULTS_JSON).read_text())
    return {"rows": rows, "broken_lines": broken, "codes_twice": sorted({c for c in seen if seen.count(c) > 1}),
            "ranked": [r["code"] for r in summary["results"]]}


def rank_expected(folder: Path) -> set[str]:
    # inside the rank folder: everything but hidden temporary files
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()


def import_digest(out: Path) -> dict[str, Any]:
    import tensorflow as tf

    pointer = json.loads((out / "checkpoints" / "best.json").read_text())
    reader = tf.train.load_checkpoint(str(out / "checkpoints" / pointer["prefix"]))
    tensors = {k: hashlib.sha256(reader.get_tensor(k).tobytes()).hexdigest()
               for k in sorted(reader.get_variable_to_shape_map()) if k.startswith("model/")}
    run = json.loads((out / "run.json").read_text())
    state = json.loads((out / "state.json").read_text())
    for volatile in ("updated", "experiment"):
        state.pop(volatile, None)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config.pop("runtime", None)
    return {"tensors": tensors, "imported_from": run["imported_from"], "state": state, "config": config}


def import_expected(out: Path) -> set[str]:
    return {out.name} if out.exists() else set()


def whole_or_absent(want: Any, target: Path, replacing: bool, digest: Callable[[Path], Any]) -> list[str]:
    """Right after a kill: the output is absent (a new one) or complete and the same (the old one)."""
    if not os.path.lexists(target):
        return ["the old output is gone"] if replacing else []
    try:
        return _diff(want, digest(target))
    except (OSError, ValueError, KeyError) as exc:
        return [f"a partial output is visible ({type(exc).__name__}: {exc})"]


def pack_after_kill(want: Any, root: Path, replacing: bool) -> list[str]:
    """Each split's pack is absent (a new pack) or complete and the same (the old one): never partial."""
    try:
        got = pack_digest(root)
    except (OSError, ValueError, KeyError) as exc:
        return [f"a partial pack is visible ({type(exc).__name__}: {exc})"]
    gone = ["the old pack of " + split + " is gone" for split in want if replacing and split not in got]
    return gone + _diff({k: v for k, v in want.items() if k in got}, got)


def rank_after_kill(want: Any, folder: Path, replacing: bool) -> list[str]:
    """A ranking is kept as far as it got: every line whole, no arch twice."""
    from edgeflow.nas import results

    path = folder / results.RESULTS_CSV
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        lines = [f for n, f in enumerate(csv.reader(fh)) if not (n == 0 and f and f[0] == "code")]
    rows = [results.parse_line(f) for f in lines]
    codes = [r["code"] for r in rows if r is not None]
    problems = [f"line {n + 2} of {path} is broken" for n, r in enumerate(rows) if r is None]
    return problems + [f"{c} twice in {path}" for c in sorted({c for c in codes if codes.count(c) > 1})]


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ (at most a few places)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = [f"{path}/{k}: only in {'the reference' if k in a else 'the probed run'}"
                 for k in sorted(set(a) ^ set(b), key=str)]
        for k in sorted(set(a) & set(b), key=str):
            found += _diff(a[k], b[k], f"{path}/{k}")
        return found[:5]
    return [] if a == b else [f"{path or '/'}: {str(a)[:80]!r} != {str(b)[:80]!r}"]


# ---- the kinds ---------------------------------------------------------------------------------------

def same(target: Path) -> Path:
    return target


def parent(target: Path) -> Path:
    return target.parent


def _kinds() -> dict[str, Kind]:
    def whole(digest: Callable[[Path], Any]) -> Callable[[Any, Path, bool], list[str]]:
        return lambda want, target, replacing: whole_or_absent(want, target, replacing, digest)

    return {
        "pack": Kind(
            "pack", lambda s, t: ["pack", "--config", str(s.config), "--out", str(t), "--no-progress"],
            pack_digest, pack_after_kill, same, pack_expected, same,
            lambda s: s.workdir / "pack" / "reference", lambda s, i: s.workdir / "pack" / f"round-{i}"),
        "rank": Kind(
            "rank", lambda s, t: ["rank", "--run", str(s.run), "--archs", *RANK_ARCHS, "--name", t.name],
            rank_digest, rank_after_kill, same, rank_expected, same,
            lambda s: s.run / "rank" / "probe-reference", lambda s, i: s.run / "rank" / f"probe-round-{i}",
            replaces=False),
        "export": Kind(
            "export", lambda s, t: ["export", "--run", str(s.run), "--arch", EXPORT_ARCH, "--out", str(t),
                                    "--calibration-samples", "2"],
            export_digest, whole(export_digest), parent, export_expected, parent,
            lambda s: s.workdir / "export" / "reference" / "e",
            lambda s, i: s.workdir / "export" / f"round-{i}" / "e"),
        "import-v1": Kind(
            "import-v1", lambda s, t: ["import-v1", "--checkpoint", str(s.v1_checkpoint), "--config",
                                       str(s.config), "--out", str(t)],
            import_digest, whole(import_digest), parent, import_expected, parent,
            lambda s: s.workdir / "import" / "reference" / "run",
            lambda s, i: s.workdir / "import" / f"round-{i}" / "run", replaces=False, rerun_when_complete=False),
    }


def probe_kind(name: str, setup: Setup, kills: int, rng: random.Random, timeout: float = 900.0) -> KindResult:
    kind = _kinds()[name]
    result = KindResult(name)
    log = setup.workdir / f"{name}.log"
    ref = kind.reference(setup)
    ref.parent.mkdir(parents=True, exist_ok=True)
    timing = _run_to_end(kind.argv(setup, ref), log, timeout, kind.watch(ref))
    result.reference_seconds = timing.total
    if timing.code != 0:
        result.differences.append(f"the reference {name} exited {timing.code}; see {log}")
        return result
    want = kind.digest(ref)
    attempts = 0
    while len(result.kills) < kills and attempts < 3 * kills:
        attempts += 1
        # Odd rounds run over the reference's own output (a replacement), even ones into a new place.
        replacing = kind.replaces and attempts % 2 == 1
        target = ref if replacing else kind.fresh(setup, attempts)
        target.parent.mkdir(parents=True, exist_ok=True)
        result.rounds += 1
        try:
            where = _kill_round(kind.argv(setup, target), kind.watch(target), log, rng, timing, timeout,
                                misses=result.rounds - 1 - len(result.kills))
        except ExitedFirst as exc:
            result.differences.append(f"{name} round {attempts}: {exc}; see {log}")
            break
        if where is None:
            print(f"{name}: round {attempts} finished before its kill", flush=True)
            continue
        where = f"{'over the old output' if replacing else 'a new output'}, {where}"
        result.kills.append(where)
        print(f"{name} kill {len(result.kills)}: {where}", flush=True)
        label = f"{name} round {attempts} ({where})"
        result.differences += [f"{label}, right after the kill: {d}" for d in kind.after_kill(want, target, replacing)]
        if kind.rerun_when_complete or not os.path.lexists(target):
            code = _run_to_end(kind.argv(setup, target), log, timeout).code
            if code != 0:
                result.differences.append(f"{label}: the rerun exited {code}; see {log}")
                continue
        # (a complete import is not run again: the command rightly refuses an existing run directory)
        try:
            result.differences += [f"{label}, after the rerun: {d}" for d in _diff(want, kind.digest(target))]
        except (OSError, ValueError, KeyError) as exc:
            result.differences.append(f"{label}: the rerun's output cannot be read ({type(exc).__name__}: {exc})")
        folder = kind.litter(target)
        left = set(os.listdir(folder)) - kind.expected(target) if folder.is_dir() else set()
        if left:
            result.differences.append(f"{label}: left behind in {folder} after the rerun: {', '.join(sorted(left))}")
    if not result.kills:
        result.differences.append(f"no kill landed in {attempts} rounds: every {name} finished first")
    return result


# ---- setting up ---------------------------------------------------------------------------------------

def tiny_config(workdir: Path, data: Path) -> Path:
    raw = {
        "runtime": {"experiment_name": "source", "output_root": str(workdir / "out"), "seed": 5,
                    "heartbeat_seconds": 1.0, "progress_seconds": 60.0},
        "data": {"train_dir": str(data / "train"), "val_dir": str(data / "val"), "input_height": 32,
                 "input_width": 48},
        "train": {"num_epochs": 1, "batch_size": 4, "lr": 1e-3},
        "eval": {"batch_size": 4, "bn_recal_batches": 1, "eval_batches_per_arch": 1, "pool": [EXPORT_ARCH]},
    }
    path = workdir / "source.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_v1_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A checkpoint in the original trainer's format (tf.compat.v1 Saver, its variable names)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    variables = {}
    for line in V1_VARIABLES.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split("\t")
        value = rng.normal(0.0, 0.05, size=tuple(int(s) for s in shape.split("x"))).astype(np.float32)
        if name.endswith("moving_variance"):
            value = (np.abs(value) + 1.0).astype(np.float32)
        variables[name] = tf.compat.v1.Variable(value, name=name.replace("/", "_"))
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "supernet_best.ckpt"
    tf.compat.v1.train.Saver(var_list=variables).save(None, str(prefix), write_meta_graph=False)
    return prefix


def prepare(workdir: Path, kinds: list[str], data: Path | None = None, run: Path | None = None,
            timeout: float = 900.0) -> Setup:
    """The data (the demo set, rendered when None), a tiny config, a run to rank and export (trained one
    epoch when None) and, for import-v1, an original-format checkpoint."""
    workdir.mkdir(parents=True, exist_ok=True)
    if data is None:
        from edgeflow.data.demo import render_demo_dataset

        data = workdir / "data"
        if not (data / "train").is_dir():
            render_demo_dataset(data, n_train=24, n_val=8, seed=0)
    config = tiny_config(workdir, data)
    if run is None and {"rank", "export"} & set(kinds):
        run = workdir / "out" / "source"
        if not (run / "checkpoints" / "best.json").exists():
            code = _run_to_end(["train", "--config", str(config)], workdir / "source.log", timeout).code
            if code != 0:
                raise RuntimeError(f"training the source run failed (exit {code}); see {workdir / 'source.log'}")
    v1 = write_v1_checkpoint(workdir / "v1") if "import-v1" in kinds else None
    return Setup(workdir, data, config, run or workdir / "out" / "source", v1)


def probe(kinds: list[str], kills: int, seed: int, workdir: Path, data: Path | None = None,
          run: Path | None = None) -> list[KindResult]:
    try:
        setup = prepare(workdir, kinds, data, run)
        rng = random.Random(seed)
        return [probe_kind(k, setup, kills, rng) for k in kinds]
    finally:
        kill_children()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_kill_commands", description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"which commands (default {','.join(KINDS)})")
    parser.add_argument("--kills", type=int, default=4, help="SIGKILLs per command (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp folder)")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds or args.kills < 1:
        parser.error(f"--kinds: some of {', '.join(KINDS)} (got {args.kinds!r}); --kills must be >= 1")
    with tempfile.TemporaryDirectory(prefix="probe-kill-commands-") as tmp:
        started = time.perf_counter()
        results = probe(kinds, args.kills, args.seed, args.workdir or Path(tmp))
        bad = [r for r in results if not r.ok]
        for r in results:
            verdict = "same as the unkilled run, nothing left behind" if r.ok else "DIFFERENT"
            print(f"{r.kind}: {len(r.kills)} kills in {r.rounds} rounds (reference {r.reference_seconds:.0f} s): "
                  f"{verdict}")
            for line in r.differences:
                print(f"  {line}")
        print(f"{time.perf_counter() - started:.0f} s")
        return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
