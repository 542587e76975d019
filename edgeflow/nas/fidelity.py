"""Ranking fidelity: does a trained supernet order subnets as they order when trained on their own?

`prepare` checks everything (the run, its best checkpoint and pool evaluation, k, the stand-alone
config, the folder's key) and writes nothing; light at import (no TensorFlow, no SciPy), so the
launcher runs it on a login node. The supernet's checkpoint is its best (or `latest`, or an `epoch-N` kept by
checkpoint.keep_every, to measure fidelity earlier in training). The pool of k subnets is chosen from
`candidates` archs the
supernet has ranked (a seeded sample, exactly `rank --sample C --seed S`: the rank machinery's
results, keyed by checkpoint digest and protocol), stratified over the supernet's EPE ranking and over
FLOPs as a Latin hypercube, plus the cheapest and the most expensive arch of the space and the
EdgeFlowNet baseline. Each is trained stand-alone (`edgeflow train` with `train.arch`) into
`RUN/fidelity/<name>/runs/sa-<code>[-r<j>]`; the forced three once more per extra seed (--seeds),
to measure label noise. The report (report.json, report.png) compares the supernet's EPE and the
cost baselines against the stand-alone EPEs (fidelity_stats.py).

The folder belongs to one supernet checkpoint and protocol (key.json, as a ranking's) and one set of
settings (pool.json); another checkpoint or other settings are refused, never mixed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow import config as efconfig
from edgeflow import jobenv, rundir
from edgeflow.config import DEFAULT_EVAL_POOL, Config, ConfigError
from edgeflow.nas import rank
from edgeflow.nas import results as results_mod
from edgeflow.rundir import EventLog, RunPaths, atomic_write_json, read_events, read_json, read_run, update_run
from edgeflow.space.arch import BASELINE_ARCH
from edgeflow.space.cost import arch_info
from edgeflow.train.checkpoint import CheckpointError, CheckpointStore

FIDELITY_DIR = "fidelity"
RUNS_DIR = "runs"
POOL_FILE = "pool.json"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"
MIN_K = 3
FINISHED = ("completed", "early_stopped")
PREDICTORS = ("supernet", "flops", "params", "latency")
# Keys that decide the evaluation set and its numbers: a stand-alone config must share them with the
# supernet, or the two sides are measured on different sets.
EVAL_SET_KEYS = ("data.dataset", "data.root", "data.val_dir", "data.holdout_samples", "data.holdout_seed",
                 "data.input_height", "data.input_width", "data.flow_clip", "data.exclude_list",
                 "eval.batch_size", "eval.eval_batches_per_arch", "eval.splits", "eval.select_on")
# A supernet's config as the stand-alone config (no --config): not its warm start, and none of the
# options only a supernet has (the evaluation pool, batch-statistics evaluation, tf.distribute).
RESET_FOR_STANDALONE = ("checkpoint.init_from=", "checkpoint.resume_experiment_name=",
                        "eval.pool=[" + ", ".join(f"'{c}'" for c in DEFAULT_EVAL_POOL) + "]",
                        "eval.bn_mode=recalibrate", "train.distribute=none")


class FidelityError(rank.RankError):
    """Bad input to a fidelity report; nothing was written."""


def default_candidates(k: int) -> int:
    return min(rank.SPACE_SIZE, max(8 * k, 24))


@dataclass(frozen=True)
class Settings:
    k: int
    seed: int = 0
    seeds: int = 1
    candidates: int | None = None      # None: default_candidates(k)
    config: str | None = None          # the stand-alone config; None: the supernet run's own config.yaml
    overrides: tuple[str, ...] = ()    # --set on the stand-alone config
    checkpoint: str = "best"           # the supernet's checkpoint: best, latest or a kept epoch-N

    @property
    def candidate_count(self) -> int:
        return self.candidates if self.candidates is not None else default_candidates(self.k)

    def record(self) -> dict[str, Any]:
        """What pool.json keeps: a rerun with other settings is another report (another --name)."""
        return {"k": self.k, "seed": self.seed, "seeds": self.seeds, "candidates": self.candidate_count,
                "config": str(Path(self.config).resolve()) if self.config else None,
                "overrides": list(self.overrides)}

    def args(self) -> list[str]:
        """The same settings as command-line arguments (what the report job is given)."""
        out = ["--k", str(self.k), "--seed", str(self.seed), "--seeds", str(self.seeds),
               "--candidates", str(self.candidate_count), "--checkpoint", self.checkpoint]
        if self.config:
            out += ["--config", str(Path(self.config).resolve())]
        for item in self.overrides:
            out += ["--set", item]
        return out


def check_settings(s: Settings) -> None:
    for item in s.overrides:
        if item.partition("=")[0].strip() in ("train.arch", "runtime.experiment_name", "runtime.output_root"):
            raise FidelityError(f"--set {item}: the fidelity report sets this key for each stand-alone training "
                                f"itself; remove it")
    if not MIN_K <= s.k <= rank.SPACE_SIZE:
        raise FidelityError(f"--k: must be in {MIN_K}..{rank.SPACE_SIZE} (the size of the space), got {s.k}")
    if s.seeds < 1:
        raise FidelityError(f"--seeds: must be >= 1, got {s.seeds}")
    if not 1 <= s.candidate_count <= rank.SPACE_SIZE:
        raise FidelityError(f"--candidates: must be in 1..{rank.SPACE_SIZE}, got {s.candidate_count}")


# -- the space's costs ---------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _space_costs(height: int, width: int) -> tuple[tuple[int, int, str], ...]:
    """(FLOPs, params, code) of every arch, cheapest first (about a second for the 3^9 archs)."""
    rows = []
    for code in rank.all_codes():
        info = arch_info(code, height, width)
        rows.append((int(info["flops"]), int(info["params_active"]), code))
    return tuple(sorted(rows))


def forced(height: int, width: int) -> list[tuple[str, str]]:
    """The archs every pool holds: (code, why), without duplicates."""
    costs = _space_costs(height, width)
    out = {costs[0][2]: f"the cheapest arch of the space ({costs[0][0] / 1e6:.1f} MFLOPs)",
           costs[-1][2]: f"the most expensive arch of the space ({costs[-1][0] / 1e6:.1f} MFLOPs)"}
    out.setdefault(BASELINE_ARCH, "the EdgeFlowNet baseline arch")
    return list(out.items())


# -- the plan ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    code: str
    why: str
    repeats: int = 1  # trainings with seeds base, base + 1, ...

    def record(self) -> dict[str, Any]:
        return {"code": self.code, "why": self.why, "seeds": self.repeats}


@dataclass(frozen=True)
class Training:
    """One stand-alone training of a pool member."""

    code: str
    repeat: int         # 0: the config's seed; j: seed + j
    experiment: str
    run_dir: Path
    overrides: tuple[str, ...]   # on the stand-alone config, this training's own last

    def status(self) -> str:
        try:
            info = read_run(RunPaths(self.run_dir).run)
        except ValueError:
            return "unreadable"
        return str(info.get("status")) if info else "not started"

    @property
    def finished(self) -> bool:
        """run.json says it ended well, or its last checkpoint does (a trainer stopped between the two
        writes; `train` itself would find nothing left to do)."""
        if self.status() in FINISHED:
            return True
        checkpoints = RunPaths(self.run_dir).checkpoints
        try:
            latest = CheckpointStore(checkpoints).pointer("latest") if checkpoints.is_dir() else None
        except (ValueError, CheckpointError):
            return False
        return latest is not None and latest.state.get("status") in FINISHED


@dataclass
class Plan:
    rank_plan: rank.Plan        # the supernet side: candidates and forced archs, this checkpoint and protocol
    settings: Settings
    name: str
    folder: Path
    candidates: list[str]
    forced: list[tuple[str, str]]
    source: str                 # the stand-alone config file
    base_overrides: tuple[str, ...]
    standalone: Config          # the stand-alone config of the baseline arch (checked)
    pool: list[Member] = field(default_factory=list)

    @property
    def run(self) -> Any:
        return self.rank_plan.run

    @property
    def key(self) -> results_mod.Key:
        return self.rank_plan.key

    @property
    def experiment(self) -> str:
        return f"{self.run.cfg.runtime.experiment_name}/{FIDELITY_DIR}/{self.name}"

    def overrides_for(self, code: str, repeat: int) -> tuple[str, ...]:
        experiment = f"sa-{code}" + (f"-r{repeat}" if repeat else "")
        return (*self.base_overrides, f"train.arch={code}", f"runtime.output_root={self.folder / RUNS_DIR}",
                f"runtime.experiment_name={experiment}", f"runtime.seed={self.standalone.runtime.seed + repeat}")

    def trainings(self) -> list[Training]:
        out = []
        for member in self.pool:
            for j in range(member.repeats):
                over = self.overrides_for(member.code, j)
                experiment = over[-2].split("=", 1)[1]
                out.append(Training(member.code, j, experiment, self.folder / RUNS_DIR / experiment, over))
        return out


def standalone_config(source: str, overrides: Sequence[str], code: str) -> Config:
    return efconfig.load(source, [*overrides, f"train.arch={code}"])


PATH_KEYS = ("data.root", "data.val_dir", "data.exclude_list")


def _comparable(dotted: str, value: Any) -> Any:
    """A folder as the folder it names (a relative path from here, as training reads it; the launcher
    makes them absolute), so the same folder written two ways is the same."""
    if dotted in PATH_KEYS and value:
        return str(Path(value).resolve())
    if dotted == "eval.splits":
        return {name: {**vars(split), "root": str(Path(split.root).resolve()) if split.root else ""}
                for name, split in value.items()}
    return value


def check_eval_set(supernet: Config, standalone: Config, source: str) -> None:
    """Refuse a stand-alone config that evaluates on another set (or at another size) than the supernet."""
    for dotted in EVAL_SET_KEYS:
        section, key = dotted.split(".", 1)
        a = getattr(getattr(supernet, section), key)
        b = getattr(getattr(standalone, section), key)
        if _comparable(dotted, a) != _comparable(dotted, b):
            raise FidelityError(f"{source}: {dotted}: {efconfig.shown(b)}, but the supernet was evaluated with "
                                f"{efconfig.shown(a)}; both sides must be measured on the same eval set (--set "
                                f"{dotted}=...)")


def has_pool_evaluation(run_root: Path) -> bool:
    return any(e.get("event") == "eval" and e.get("arch_epe") for e in read_events(RunPaths(run_root).events))


def prepare(run_dir: str | Path, settings: Settings, *, name: str | None = None) -> Plan:
    """Check everything and work out the supernet side's plan; writes nothing.

    FidelityError / RankError for bad input, ConfigError for a bad stand-alone config, DataError for
    data that cannot be evaluated on."""
    check_settings(settings)
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise FidelityError(f"--name: must be a folder name without '/', got {name!r}")
    root = Path(run_dir)
    if not (root / rundir.RUN_FILE).is_file():
        raise FidelityError(f"--run {root}: not a run directory (no {rundir.RUN_FILE})")
    if not has_pool_evaluation(root):
        raise FidelityError(f"--run {root}: no pool evaluation in its events.jsonl (no eval event with arch EPEs); "
                            f"a fidelity report needs a supernet that was trained and evaluated")
    run = rank.open_checked(root, settings.checkpoint)
    cfg = run.cfg
    height, width = cfg.data.input_height, cfg.data.input_width
    candidates = rank.sample_codes(settings.candidate_count, settings.seed)
    must = forced(height, width)
    free = [c for c in candidates if c not in dict(must)]
    if len(free) < settings.k - len(must):
        raise FidelityError(f"--candidates {settings.candidate_count}: {len(free)} candidates besides the "
                            f"{len(must)} forced archs, fewer than the {settings.k - len(must)} to choose; "
                            f"raise --candidates")
    selection = rank.Selection(archs=tuple(dict.fromkeys([*candidates, *dict(must)])))
    rank_plan = rank.prepare(root, selection, checkpoint=settings.checkpoint)
    name = name or rank_plan.key.checkpoint
    folder = root / FIDELITY_DIR / name
    foreign = rundir.foreign_folder(folder, choose="--name")
    if foreign:
        raise FidelityError(foreign)
    rank.check_key(folder, rank_plan.key)
    existing = read_pool(folder)
    if existing is not None and existing.get("settings") != settings.record():
        raise FidelityError(f"{folder} holds a fidelity report with other settings ({existing.get('settings')}); "
                            f"these are {settings.record()}: choose another --name")
    source = str(Path(settings.config)) if settings.config else str(RunPaths(root).config)
    base = tuple(settings.overrides) if settings.config else (*RESET_FOR_STANDALONE, *settings.overrides)
    if settings.config and not Path(settings.config).is_file():
        raise FidelityError(f"--config {settings.config}: no such file")
    try:
        standalone = standalone_config(source, base, BASELINE_ARCH)
    except ConfigError as exc:
        raise ConfigError(f"the stand-alone config: {exc}") from None
    check_eval_set(cfg, standalone, source)
    return Plan(rank_plan=rank_plan, settings=settings, name=name, folder=folder, candidates=candidates,
                forced=must, source=source, base_overrides=base, standalone=standalone)


def read_pool(folder: Path) -> dict[str, Any] | None:
    try:
        data = read_json(folder / POOL_FILE)
    except ValueError as exc:
        raise FidelityError(f"{folder / POOL_FILE}: {exc}") from None
    return data if isinstance(data, dict) else None


def missing_candidates(plan: Plan) -> list[str]:
    """Candidates the supernet has not ranked yet for this checkpoint and protocol (the selection needs them)."""
    return [c for c in plan.candidates if c not in plan.rank_plan.done]


def refresh(plan: Plan) -> None:
    """Read the supernet's results again (after a ranking wrote more)."""
    done = results_mod.read_many([plan.rank_plan.results_csv], plan.key)
    plan.rank_plan.done = {c: done[c] for c in plan.rank_plan.codes if c in done}
    plan.rank_plan.todo = [c for c in plan.rank_plan.codes if c not in done]


# -- choosing the pool ---------------------------------------------------------------------------------

def _normalised_rank(values: Sequence[float], codes: Sequence[str]) -> np.ndarray:
    """Each value's rank in [0, 1] (ties by code, so deterministic)."""
    order = sorted(range(len(codes)), key=lambda i: (values[i], codes[i]))
    ranks = np.empty(len(codes))
    ranks[order] = np.arange(len(codes))
    return ranks / max(len(codes) - 1, 1)


def _place(normalised: float, n: int) -> int:
    return int(round(normalised * (n - 1))) + 1


def select(epe: dict[str, float], flops: dict[str, int], k: int, seed: int,
           must: Sequence[tuple[str, str]], repeats: int = 1) -> list[Member]:
    """k members: the forced ones, then one per cell of a Latin hypercube over (the supernet's EPE rank,
    the FLOPs rank) among the candidates `epe` holds: every EPE stratum and every FLOPs stratum once,
    their pairing a seeded permutation, each cell taking the nearest candidate not taken yet."""
    forced_codes = dict(must)
    members = [Member(code, why, repeats) for code, why in must][:k]
    free = sorted(c for c in epe if c not in forced_codes)
    m = k - len(members)
    if m <= 0:
        return members
    if len(free) < m:
        raise FidelityError(f"{len(free)} ranked candidates for {m} places; raise --candidates")
    r_epe = _normalised_rank([epe[c] for c in free], free)
    r_cost = _normalised_rank([float(flops[c]) for c in free], free)
    pairing = np.random.default_rng(seed).permutation(m)
    taken: set[int] = set()
    for i in range(m):
        target = ((i + 0.5) / m, (pairing[i] + 0.5) / m)
        dist = np.hypot(r_epe - target[0], r_cost - target[1])
        best = min((j for j in range(len(free)) if j not in taken), key=lambda j: (dist[j], free[j]))
        taken.add(best)
        members.append(Member(free[best], (
            f"stratum {i + 1}/{m} of the supernet's EPE ranking and {pairing[i] + 1}/{m} of FLOPs (supernet rank "
            f"{_place(r_epe[best], len(free))}, FLOPs rank {_place(r_cost[best], len(free))} of {len(free)} "
            f"candidates)")))
    return members


def choose(plan: Plan) -> list[Member]:
    """The plan's pool, from the supernet's ranking of its candidates (all must be ranked); the same as a
    pool.json already in the folder, or FidelityError."""
    missing = missing_candidates(plan)
    if missing:
        raise FidelityError(f"{len(missing)} of {len(plan.candidates)} candidates are not ranked yet for checkpoint "
                            f"{plan.key.checkpoint}")
    h, w = plan.run.cfg.data.input_height, plan.run.cfg.data.input_width
    epe = {c: float(plan.rank_plan.done[c]["epe_mean"]) for c in plan.candidates}
    flops = {c: int(arch_info(c, h, w)["flops"]) for c in epe}
    pool = select(epe, flops, plan.settings.k, plan.settings.seed, plan.forced, plan.settings.seeds)
    existing = read_pool(plan.folder)
    if existing is not None and [m["code"] for m in existing.get("pool", [])] != [m.code for m in pool]:
        raise FidelityError(f"{plan.folder / POOL_FILE} holds another pool than these settings choose now; "
                            f"choose another --name")
    plan.pool = pool
    return pool


def pool_record(plan: Plan) -> dict[str, Any]:
    return {"run": str(plan.run.paths.root), "name": plan.name, "settings": plan.settings.record(),
            "checkpoint": plan.rank_plan.key_record["checkpoint"], "protocol_id": plan.key.protocol,
            "candidates": plan.candidates, "standalone_config": plan.source,
            "pool": [m.record() for m in plan.pool],
            "trainings": [{"code": t.code, "seed_offset": t.repeat, "run_dir": str(t.run_dir)}
                          for t in plan.trainings()]}


def write_start(plan: Plan, *, with_progress: bool = True) -> None:
    """key.json, pool.json and (`with_progress`) a progress event: the folder is edgeflow's from now on.
    The launcher writes no event: its report job may already have ended, and a run_end stays last."""
    rank.write_key(plan.folder, plan.rank_plan.key_record)
    if read_pool(plan.folder) is None:
        atomic_write_json(plan.folder / POOL_FILE, pool_record(plan))
    if with_progress:
        progress(plan)


def events(plan: Plan) -> EventLog:
    return rank.progress_log(plan.folder, plan.experiment)


def mark_running(plan: Plan) -> None:
    """run.json: this report is being made (so `jobs status` and `jobs list` can tell)."""
    job_id = jobenv.job_id()
    update_run(RunPaths(plan.folder).run, experiment=plan.experiment, kind="fidelity", status="running",
               reason="", host=rundir.hostname(), **({"job_id": job_id} if job_id else {}))


def end(plan: Plan, status: str, reason: str) -> None:
    """The report's end: run_end in events.jsonl and run.json's status."""
    events(plan).emit("run_end", status=status, reason=reason)
    update_run(RunPaths(plan.folder).run, status=status, reason=reason, end_time=time.time())


def progress(plan: Plan) -> None:
    """A `search` event (kind fidelity): stand-alone trainings finished of all, for the monitor."""
    runs = plan.trainings()
    done = [t for t in runs if t.finished]
    best = [e for e in (standalone_epe(t.run_dir)[0] for t in done) if e is not None]
    events(plan).emit("search", kind="fidelity", name=plan.name, evaluations=len(done), target=len(runs),
                      best_epe=min(best) if best else None, front_size=None, element=rank.writer_id())


# -- the stand-alone side --------------------------------------------------------------------------------

def standalone_epe(run_dir: Path) -> tuple[float | None, int | None]:
    """The EPE of a stand-alone run's best checkpoint on the split it selects on (its last eval event's
    best), and that epoch; (None, None) before its first evaluation."""
    last = None
    for event in read_events(RunPaths(run_dir).events):
        if event.get("event") == "eval" and event.get("best_epe") is not None:
            last = event
    if last is None:
        return None, None
    return float(last["best_epe"]), int(last["best_epoch"])


# -- the report ---------------------------------------------------------------------------------------

def top_count(k: int) -> int:
    """How many best subnets top overlap compares: a quarter of the pool, at least one."""
    return max(1, math.ceil(k / 4))


def report(plan: Plan, supernet_rows: dict[str, dict[str, Any]], *, resamples: int | None = None) -> dict[str, Any]:
    """Every figure, the verdict and what they were computed on (needs SciPy)."""
    from edgeflow.nas import fidelity_stats as fs

    by_code: dict[str, list[float]] = {}
    epochs: dict[str, list[int | None]] = {}
    for t in plan.trainings():
        epe, epoch = standalone_epe(t.run_dir)
        if epe is None:
            raise FidelityError(f"stand-alone run {t.run_dir} has no evaluation; train it first")
        by_code.setdefault(t.code, []).append(epe)
        epochs.setdefault(t.code, []).append(epoch)
    codes = [m.code for m in plan.pool]
    missing = [c for c in codes if c not in supernet_rows]
    if missing:
        raise FidelityError(f"the supernet has not ranked {' '.join(missing)} for checkpoint {plan.key.checkpoint}")
    rows: list[dict[str, Any]] = []
    for member in plan.pool:
        r = supernet_rows[member.code]
        rows.append({"code": member.code, "why": member.why, "supernet_epe": float(r["epe_mean"]),
                     "standalone_epe": float(np.mean(by_code[member.code])), "standalone_epes": by_code[member.code],
                     "best_epochs": epochs[member.code], "flops": int(r["flops"]), "params": int(r["params"]),
                     "latency_ms": float(r["latency_ms"])})
    actual = [r["standalone_epe"] for r in rows]
    predictors = {"supernet": [r["supernet_epe"] for r in rows], "flops": [-r["flops"] for r in rows],
                  "params": [-r["params"] for r in rows], "latency": [-r["latency_ms"] for r in rows]}
    figures = fs.compare(predictors, actual, top=top_count(len(rows)), seed=plan.settings.seed,
                         count=resamples or fs.RESAMPLES)
    word, line = fs.verdict(figures)
    sa = plan.standalone
    return {
        "run": str(plan.run.paths.root), "name": plan.name, **plan.rank_plan.key_record,
        "settings": plan.settings.record(), "k": len(rows), "seeds": plan.settings.seeds,
        "standalone": {"config": plan.source, "overrides": list(plan.base_overrides),
                       "epochs": sa.train.num_epochs, "batch_size": sa.train.batch_size, "lr": sa.train.lr,
                       "bn": f"{efconfig.STANDALONE_BN_MODE} (the stand-alone net's own BN statistics)",
                       "selected_on": sa.eval.select_on},
        "predictors": {"supernet": "the supernet's mean EPE of the arch (rank protocol, this checkpoint)",
                       "flops": "more FLOPs predicted better", "params": "more parameters predicted better",
                       "latency": "a longer cost-model latency predicted better"},
        "figures": figures, "verdict": word, "rule": fs.RULE, "line": line,
        "seed_noise": fs.seed_noise(by_code), "subnets": rows,
    }


def read_report(folder: Path) -> dict[str, Any] | None:
    try:
        data = read_json(folder / REPORT_JSON)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def write_report(plan: Plan, data: dict[str, Any]) -> tuple[Path, Path]:
    atomic_write_json(plan.folder / REPORT_JSON, data)
    return plan.folder / REPORT_JSON, plot(plan.folder / REPORT_PNG, data)


def plot(path: Path, data: dict[str, Any]) -> Path:
    """Supernet EPE against stand-alone EPE, and rank against rank (1 = best)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = data["subnets"]
    sup = np.array([r["supernet_epe"] for r in rows])
    alone = np.array([r["standalone_epe"] for r in rows])
    tau = data["figures"]["predictors"]["supernet"]["kendall_tau"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    # the spread over seeds (--seeds): the label noise
    spread = np.array([[r["standalone_epe"] - min(r["standalone_epes"]),
                        max(r["standalone_epes"]) - r["standalone_epe"]] for r in rows]).T
    left.errorbar(sup, alone, yerr=spread, fmt="o", color="tab:blue", ecolor="lightsteelblue", capsize=3)
    for r in rows:
        left.annotate(r["code"], (r["supernet_epe"], r["standalone_epe"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    left.set_xlabel("supernet EPE (shared weights)")
    left.set_ylabel("stand-alone EPE (best checkpoint)")
    epochs = data["standalone"]["epochs"]
    left.set_title(f"{len(rows)} subnets, {epochs} epoch{'s' if epochs != 1 else ''} each")
    rank_sup = np.argsort(np.argsort(sup, kind="stable"), kind="stable") + 1
    rank_alone = np.argsort(np.argsort(alone, kind="stable"), kind="stable") + 1
    right.scatter(rank_sup, rank_alone, color="tab:orange")
    right.plot([1, len(rows)], [1, len(rows)], color="grey", linewidth=0.8, linestyle="--")
    for axis in (right.xaxis, right.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("rank by the supernet")
    right.set_ylabel("rank stand-alone")
    right.set_title(f"Kendall tau {tau['value']:+.2f} [{tau['low']:+.2f}, {tau['high']:+.2f}]")
    fig.suptitle(data["line"], fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
