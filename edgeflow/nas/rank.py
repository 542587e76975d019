"""Rank subnets of a trained supernet: evaluate many archs exactly as the evaluation protocol does.

`prepare` checks everything a ranking needs -- the arch codes, the run and its checkpoint, the
supernet signature, the data -- and writes nothing, so bad input costs nothing and the launcher can
run it on a login node (light at import: TensorFlow loads in `run`). `run` evaluates the archs not yet
in `RUN/rank/<name>/results.csv` for this checkpoint and protocol, appends each result as it is done
(results.py), reports progress in the folder's events.jsonl for the monitor, and stops cleanly after
the current arch on SIGTERM/SIGUSR2 (exit 75: run it again to continue).

EPE statistics of one arch are over its fixed eval batches: each batch's EPE is the protocol's (mean
end-point error over the batch's pixels and samples, full-resolution output), and `epe_mean` -- the
mean over the batches -- is exactly the number `eval` prints; `epe_median` and `epe_p90` are the
median and 90th percentile of the same per-batch values.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow import jobenv
from edgeflow.config import ConfigError
from edgeflow.data.samples import DataError, sort_key
from edgeflow.export.deploy import at_size
from edgeflow.nas import results as results_mod
from edgeflow.progress import Reporter
from edgeflow.rundir import EventLog, atomic_write_json, read_json, read_run
from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS, format_arch, parse_arch
from edgeflow.space.cost import FLOPS_CONVENTION, PARAMS_CONVENTION, arch_info
from edgeflow.space.latency import LATENCY_CONVENTION, latency_ms
from edgeflow.train.checkpoint import CheckpointError
from edgeflow.train.restore import RunHandle, build_supernet, check_split_name, open_run, require_supernet
from edgeflow.train.signals import StopFlag
from edgeflow.train.signature import SignatureMismatch, check_signature

RANK_DIR = "rank"
KEY_FILE = "key.json"
EVENTS_FILE = "events.jsonl"
EPE_STATISTICS = "per-arch mean, median and p90 over the fixed eval batches (each batch: the protocol's EPE)"
SPACE_SIZE = NUM_OPTIONS ** NUM_BLOCKS


class RankError(ValueError):
    """Bad input to a ranking or a search: the message says what and where; nothing was written."""


# -- which archs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    archs: tuple[str, ...] = ()
    archs_file: str | None = None
    sample: int | None = None
    seed: int = 0
    all: bool = False

    def args(self) -> list[str]:
        """The same selection as command-line arguments (what an array element is given)."""
        if self.archs:
            return ["--archs", *self.archs]
        if self.archs_file:
            return ["--archs-file", str(Path(self.archs_file).resolve())]
        if self.sample is not None:
            return ["--sample", str(self.sample), "--seed", str(self.seed)]
        return ["--all"]


def all_codes() -> list[str]:
    return ["".join(map(str, digits)) for digits in itertools.product(range(NUM_OPTIONS), repeat=NUM_BLOCKS)]


def sample_codes(n: int, seed: int) -> list[str]:
    """`n` distinct archs drawn uniformly from the whole space; the same for the same seed."""
    if not 1 <= n <= SPACE_SIZE:
        raise RankError(f"--sample: must be in 1..{SPACE_SIZE}, got {n}")
    index = np.random.default_rng(seed).choice(SPACE_SIZE, size=n, replace=False)
    return [format_arch(np.base_repr(int(i), NUM_OPTIONS).zfill(NUM_BLOCKS)) for i in index]


def read_archs_file(path: str | Path) -> list[str]:
    """Codes one per line ('#' starts a comment), or the `code` column of a CSV such as a search's
    front.csv; an error names the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RankError(f"--archs-file {path}: cannot read: {exc.strerror}") from None
    header = lines[0].split(",") if lines else []
    column = header.index("code") if "code" in header else None
    codes = []
    for number, line in enumerate(lines, 1):
        if column is not None:  # a CSV with a header: its code column
            if number == 1:
                continue
            fields = line.split(",")
            line = fields[column] if len(fields) > column else line
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            codes.append(format_arch(parse_arch(text)))
        except ValueError as exc:
            raise RankError(f"--archs-file {path} line {number}: {exc}") from None
    if not codes:
        raise RankError(f"--archs-file {path}: no arch code in the file")
    return codes


def select_codes(sel: Selection) -> list[str]:
    """The selected codes, canonical, without duplicates, in selection order."""
    if sel.archs:
        codes = []
        for code in sel.archs:
            try:
                codes.append(format_arch(parse_arch(code)))
            except ValueError as exc:
                raise RankError(f"--archs: {exc}") from None
    elif sel.archs_file:
        codes = read_archs_file(sel.archs_file)
    elif sel.sample is not None:
        codes = sample_codes(sel.sample, sel.seed)
    elif sel.all:
        codes = all_codes()
    else:
        raise RankError("choose the archs: --archs CODE ..., --archs-file F, --sample N or --all")
    return list(dict.fromkeys(codes))


def parse_shard(text: str | None) -> tuple[int, int]:
    """'K/N' -> (K, N) with 0 <= K < N (K as SLURM's array task id); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise RankError(f"--shard: expected K/N such as 0/4, got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise RankError(f"--shard {text}: need 0 <= K < N")
    return k, n


def shard_of(codes: Sequence[str], k: int, n: int) -> list[str]:
    """Round-robin shard `k` of `n`: every code in exactly one shard, shards within one of each other."""
    return list(codes[k::n])


# -- what a result is keyed by ---------------------------------------------------------------------

def checkpoint_digest(prefix: Path) -> str:
    """sha256 over the checkpoint's files (index and data shards), in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + "."))
    for path in files:
        digest.update(path.name[len(prefix.name):].encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _ids_digest(samples: Sequence[Any], count: int) -> str:
    ordered = sorted((s.sample_id for s in samples), key=sort_key)[:count]
    return hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]


def protocol_of(run: RunHandle, split: str | None = None) -> dict[str, Any]:
    """Everything besides the weights that decides an arch's numbers, the evaluation split included:
    results on two splits are never mixed. The run's own FC2 split ("val") keeps the protocol it always
    had, so results ranked before splits existed stay valid."""
    cfg, splits = run.cfg, run.splits
    chosen = run.eval_split(split)
    e = cfg.eval
    batches = chosen.num_batches(e.batch_size)
    protocol = {
        "input_size": [cfg.data.input_height, cfg.data.input_width],
        "eval_batch_size": e.batch_size,
        "bn_recal_batches": e.bn_recal_batches,
        "eval_batches_per_arch": batches,
        "bn_mode": e.bn_mode,  # "recalibrate" (exact average over the fixed train batches) or "batch_stats"
        "mixed_precision": cfg.train.mixed_precision,
        "flow_clip": cfg.data.flow_clip,
        "val_source": chosen.record.get("source", chosen.name),
        "recal_samples": _ids_digest(splits.train, e.batch_size * e.bn_recal_batches),
        "eval_samples": _ids_digest(chosen.samples, e.batch_size * batches),
        "epe_statistics": EPE_STATISTICS,
    }
    if chosen.name != "val" or chosen.record.get("dataset", "fc2") != "fc2":
        protocol["split"] = {"name": chosen.name, "eval_size": list(chosen.size), **chosen.record}
    return protocol


def protocol_id(protocol: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:12]


# -- the plan ----------------------------------------------------------------------------------------

@dataclass
class Plan:
    run: RunHandle
    codes: list[str]          # the whole selection
    todo: list[str]           # this shard's codes without a result yet
    shard: tuple[int, int]
    name: str
    folder: Path
    key: results_mod.Key
    key_record: dict[str, Any]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # this selection's results so far
    split: str | None = None  # the evaluation split (--split); None: the one the run selects on

    @property
    def results_csv(self) -> Path:
        return self.folder / results_mod.RESULTS_CSV

    @property
    def experiment(self) -> str:
        return f"{self.run.cfg.runtime.experiment_name}/{RANK_DIR}/{self.name}"


def open_checked(run_dir: str | Path, checkpoint: str, overrides: Sequence[str] = (),
                 split: str | None = None) -> RunHandle:
    """The run and its checkpoint, with the run's supernet signature checked against its config and
    `split` (--split) one of its evaluation splits."""
    try:
        run = open_run(run_dir, checkpoint, list(overrides))
        check_split_name(run.cfg, split)
        require_supernet(run.cfg, "ranking and searching archs (`eval` evaluates its one arch)")
    except (ConfigError, CheckpointError) as exc:
        raise RankError(str(exc)) from None
    try:
        check_signature(read_run(run.paths.run), run.cfg, run.paths.root)
    except SignatureMismatch as exc:
        raise RankError(f"checkpoint of another supernet: {exc}") from None
    except ValueError as exc:
        raise RankError(str(exc)) from None
    return run


def key_for(run: RunHandle, split: str | None = None) -> tuple[results_mod.Key, dict[str, Any]]:
    """The key of this run's checkpoint and protocol on an evaluation split (default: the one the run
    selects on); DataError when the data cannot be evaluated."""
    splits = run.splits
    chosen = run.eval_split(split)
    if not chosen.samples:
        raise DataError(f"the eval split ({chosen.name}) has no valid sample: nothing to evaluate on")
    if not splits.train:
        raise DataError("the train split has no valid sample: no batch for BN recalibration")
    protocol = protocol_of(run, split)
    digest = checkpoint_digest(run.pointer.prefix)
    key = results_mod.Key(run.pointer.prefix.name, digest, protocol_id(protocol))
    record = {"checkpoint": {"kind": run.checkpoint, "prefix": key.checkpoint, "digest": digest,
                             "epoch": run.epoch},
              "protocol_id": key.protocol, "protocol": protocol, "split": chosen.name}
    return key, record


def default_name(base: str, run: RunHandle, split: str | None) -> str:
    """A results folder's default name: `base`, with the split when it is not the one the run selects on."""
    return base if split is None or split == run.splits.select_on else f"{base}_{split}"


def check_key(folder: Path, key: results_mod.Key, what: str = "--name") -> None:
    """A results folder belongs to one checkpoint and protocol; another one's results are refused."""
    try:
        existing = read_json(folder / KEY_FILE)
    except ValueError as exc:
        raise RankError(f"{folder / KEY_FILE}: {exc}") from None
    if not existing:
        return
    old = existing.get("checkpoint", {})
    if old.get("digest") != key.checkpoint_digest or existing.get("protocol_id") != key.protocol:
        raise RankError(
            f"{folder} holds results of checkpoint {old.get('prefix')} (digest {old.get('digest')}, protocol "
            f"{existing.get('protocol_id')}); this is {key.checkpoint} (digest {key.checkpoint_digest}, protocol "
            f"{key.protocol}). Results of two checkpoints, or of two protocols (another evaluation split, "
            f"--split), are never mixed: choose another {what}")


def write_key(folder: Path, record: dict[str, Any]) -> None:
    if not (folder / KEY_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / KEY_FILE, record)


def prepare(run_dir: str | Path, selection: Selection, *, checkpoint: str = "best", name: str | None = None,
            shard: str | None = None, overrides: Sequence[str] = (), split: str | None = None,
            input_size: tuple[int, int] | None = None) -> Plan:
    """Check everything and work out what is left to do; writes nothing.

    `input_size` evaluates at another size than the run's (a device's: float32, BN recalibrated there;
    another protocol, so other results; default name <checkpoint>_<H>x<W>).
    RankError for bad input (codes, run, checkpoint, signature, a folder of another checkpoint),
    DataError for data that cannot be evaluated on."""
    codes = select_codes(selection)
    k, n = parse_shard(shard)
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise RankError(f"--name: must be a folder name without '/', got {name!r}")
    run = open_checked(run_dir, checkpoint, overrides, split)
    if input_size is not None:
        run = at_size(run, *input_size)
    key, record = key_for(run, split)
    base = key.checkpoint if input_size is None else f"{key.checkpoint}_{input_size[0]}x{input_size[1]}"
    name = name or default_name(base, run, split)
    folder = run.paths.root / RANK_DIR / name
    check_key(folder, key)
    done = results_mod.read_many([folder / results_mod.RESULTS_CSV], key)
    mine = shard_of(codes, k, n)
    return Plan(run=run, codes=codes, todo=[c for c in mine if c not in done], shard=(k, n), name=name,
                folder=folder, key=key, key_record=record,
                done={c: done[c] for c in codes if c in done}, split=split)


# -- evaluating ----------------------------------------------------------------------------------------

def restore_checked(run: RunHandle) -> Any:
    """The run's supernet with the checkpoint's weights; CheckpointError when they do not fit it."""
    import tensorflow as tf

    model = build_supernet(run.cfg)
    prefix = str(run.pointer.prefix)
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {prefix} does not hold this supernet's weights (made by another "
                              f"model or signature): {first[:300]}") from None
    status.expect_partial()
    return model


class ArchEvaluator:
    """Evaluates one arch at a time with the protocol's Evaluator and batches (decoded once)."""

    def __init__(self, run: RunHandle, split: str | None = None) -> None:
        from edgeflow.train.evaluate import Evaluator, datasets

        self.run = run
        self.model = restore_checked(run)
        chosen = run.eval_split(split)
        self.recal, self.evals = datasets(run.cfg, run.splits.train, chosen.samples, cache=True, size=chosen.size,
                                          batches=chosen.num_batches(run.cfg.eval.batch_size))
        self.evaluator = Evaluator(self.model, run.cfg)

    def __call__(self, code: str, key: results_mod.Key, writer: str = "") -> dict[str, Any]:
        if self.run.cfg.eval.bn_mode == "batch_stats":  # the original trainer's protocol: no recalibration
            start = time.perf_counter()
            epes = self.evaluator.batch_stats_epes(parse_arch(code), self.evals)
            recal_s, eval_s = 0.0, time.perf_counter() - start
        else:
            epes = self.evaluator.batch_epes(parse_arch(code), self.recal, self.evals)
            recal_s, eval_s = self.evaluator.last_seconds
        return make_row(code, epes, self.run, key, recal_s, eval_s, writer)


# The last evaluator of this process, by key: tracing the supernet's two functions is most of the cost of
# a short ranking, and a second ranking or search of the same checkpoint and protocol in one process
# (a notebook, a test) gets the same numbers from the same traced functions. One entry bounds memory.
_LAST: dict[tuple[str, str], ArchEvaluator] = {}


def evaluator_for(run: RunHandle, key: results_mod.Key, split: str | None = None) -> ArchEvaluator:
    """An ArchEvaluator for this checkpoint and protocol (the process's last one when the key matches);
    the protocol names the split, so two splits never share one."""
    wanted = (key.checkpoint_digest, key.protocol)
    if wanted not in _LAST:
        evaluator = ArchEvaluator(run, split)
        _LAST.clear()
        _LAST[wanted] = evaluator
    return _LAST[wanted]


def cost_of(code: str, height: int, width: int) -> dict[str, Any]:
    info = arch_info(code, height, width)
    return {"params": int(info["params_active"]), "flops": int(info["flops"]),
            "latency_ms": float(latency_ms(code, height, width))}


def make_row(code: str, epes: Sequence[float], run: RunHandle, key: results_mod.Key, recal_s: float,
             eval_s: float, writer: str) -> dict[str, Any]:
    values = np.asarray(epes, dtype=np.float64)
    cfg = run.cfg
    return {"code": code, "epe_mean": float(np.mean(values)), "epe_median": float(np.median(values)),
            "epe_p90": float(np.percentile(values, 90)), "eval_batches": len(values),
            **cost_of(code, cfg.data.input_height, cfg.data.input_width),
            "recal_seconds": float(recal_s), "eval_seconds": float(eval_s), "checkpoint": key.checkpoint,
            "checkpoint_digest": key.checkpoint_digest, "protocol": key.protocol, "writer": writer,
            "time": time.time()}


def front_size(rows: Sequence[dict[str, Any]], cost: str = "flops") -> int:
    """How many rows are on the EPE/cost Pareto front."""
    if not rows:
        return 0
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.array([[r["epe_mean"], r[cost]] for r in rows], dtype=np.float64)
    return len(NonDominatedSorting().do(F, only_non_dominated_front=True))


def writer_id() -> str:
    return jobenv.job_id() or f"pid-{os.getpid()}"


def array_job_id() -> str | None:
    """The job id every element of an array shares (the monitor's job_id label stays put)."""
    return jobenv.array_job_id()


@dataclass
class ProgressLog:
    """Progress in the folder's events.jsonl: the sidecar exports it, a stalled array alerts."""

    log: EventLog
    kind: str
    name: str
    target: int

    def emit(self, rows: Sequence[dict[str, Any]], **extra: Any) -> None:
        best = min((r["epe_mean"] for r in rows), default=None)
        self.log.emit("search", kind=self.kind, name=self.name, evaluations=len(rows), target=self.target,
                      best_epe=best, front_size=front_size(rows),
                      element=writer_id(), **extra)

    def end(self, status: str, reason: str) -> None:
        self.log.emit("run_end", status=status, reason=reason)


def progress_log(folder: Path, experiment: str) -> EventLog:
    return EventLog(folder / EVENTS_FILE, experiment, array_job_id())


@dataclass
class Outcome:
    evaluated: int
    remaining: int
    stopped_by: str | None
    rows: list[dict[str, Any]]


def run(plan: Plan, *, log: Callable[[str], None] | None = None) -> Outcome:
    """Evaluate the plan's archs; each result is appended as soon as it is known."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    # Restored before anything is written: a checkpoint that does not fit leaves no folder behind.
    evaluate = evaluator_for(plan.run, plan.key, plan.split) if plan.todo else None
    write_key(plan.folder, plan.key_record)
    results_mod.ensure_file(plan.results_csv)
    progress = ProgressLog(progress_log(plan.folder, plan.experiment), "rank", plan.name, len(plan.codes))
    rows = dict(plan.done)
    progress.emit(list(rows.values()), shard=f"{plan.shard[0]}/{plan.shard[1]}")
    evaluated = 0
    stopped = None
    bar = None
    try:
        with StopFlag() as stop:
            if evaluate is not None:
                bar = Reporter(f"rank {plan.name}", len(plan.todo), unit="arch", every_seconds=0.0,
                               stream=sys.stderr)
                started = time.perf_counter()
                selected_codes = set(plan.codes)
                tail = results_mod.Tail(plan.results_csv, plan.key)
                for i, code in enumerate(plan.todo, 1):
                    row = evaluate(code, plan.key, writer_id())
                    results_mod.append(plan.results_csv, row)
                    rows[code] = row
                    evaluated += 1
                    # the other shards' results too, for the monitor's totals
                    rows.update({r["code"]: r for r in tail.read() if r["code"] in selected_codes})
                    rate = 60.0 * i / max(time.perf_counter() - started, 1e-9)
                    progress.emit(list(rows.values()), archs_per_minute=rate)
                    bar.label = f"rank {plan.name}: {code}"
                    bar.update(epe=row["epe_mean"])
                    if stop.requested:
                        stopped = stop.name
                        break
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            progress.end("failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        if bar is not None:
            bar.close()
    final = results_mod.read_many([plan.results_csv], plan.key)
    selected = {c: final[c] for c in plan.codes if c in final}
    write_summary(plan, selected)
    remaining = len(plan.codes) - len(selected)
    if stopped:
        progress.end("preempted", f"{stopped}: stopped after {evaluated} archs; run again to continue")
    elif remaining == 0:
        progress.emit(list(selected.values()))
        progress.end("completed", f"{len(selected)} archs ranked")
    return Outcome(evaluated, remaining, stopped, sorted(selected.values(), key=lambda r: r["epe_mean"]))


def write_summary(plan: Plan, rows: dict[str, dict[str, Any]]) -> None:
    """results.json: the key, the protocol and the rows ranked by mean EPE (replaced atomically)."""
    ranked = sorted(rows.values(), key=lambda r: (r["epe_mean"], r["code"]))
    atomic_write_json(plan.folder / results_mod.RESULTS_JSON, {
        "run": str(plan.run.paths.root), "name": plan.name, **plan.key_record,
        "epe_statistics": EPE_STATISTICS, "cost_conventions": {"flops": FLOPS_CONVENTION,
                                                               "params": PARAMS_CONVENTION,
                                                               "latency_ms": LATENCY_CONVENTION},
        "selected": len(plan.codes), "evaluated": len(ranked),
        "results": [{k: r[k] for k in results_mod.COLUMNS if k in r} for r in ranked],
    })


# -- ranking quality -------------------------------------------------------------------------------

VALUE_COLUMNS = ("epe_mean", "epe", "standalone_epe", "value")


def read_ranking(path: str | Path, column: str | None = None) -> dict[str, float]:
    """code -> value from a results.csv of this kit or any CSV with a `code` (or `arch`) column."""
    import csv

    path = Path(path)
    rows = results_mod.read_rows(path)
    if rows and (column in (None, "epe_mean") or column in rows[0]):
        return {r["code"]: float(r[column or "epe_mean"]) for r in rows}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            code_col = next((c for c in ("code", "arch") if c in fields), None)
            value_col = column or next((c for c in VALUE_COLUMNS if c in fields), None)
            if code_col is None or value_col is None or value_col not in fields:
                raise RankError(f"{path}: needs a 'code' (or 'arch') column and a value column "
                                f"({column or ' or '.join(VALUE_COLUMNS)}); has {fields}")
            out: dict[str, float] = {}
            for number, row in enumerate(reader, 2):
                try:
                    out[format_arch(parse_arch(str(row[code_col]).strip()))] = float(row[value_col])
                except (ValueError, TypeError) as exc:
                    raise RankError(f"{path} line {number}: {exc}") from None
    except OSError as exc:
        raise RankError(f"{path}: cannot read: {exc.strerror}") from None
    return out


def compare(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Kendall tau and Spearman rho between two rankings over the codes both have."""
    from scipy import stats

    common = sorted(set(a) & set(b))
    if len(common) < 3:
        raise RankError(f"the two rankings share {len(common)} arch codes; at least 3 are needed")
    x = np.array([a[c] for c in common])
    y = np.array([b[c] for c in common])
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    return {"archs": len(common), "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}
