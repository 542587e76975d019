"""Multi-objective search for the EPE/cost Pareto front of a trained supernet: pymoo's NSGA-II.

The 9 choice blocks are integer variables in 0..2 (integer random sampling; SBX crossover and
polynomial mutation rounded to integers; duplicates eliminated), the objectives are the mean EPE of the
evaluation protocol and one or more analytic costs, and --max-flops / --max-params are inequality
constraints, checked before an arch is evaluated (an infeasible arch costs nothing).

Resuming is a replay: the algorithm is deterministic given its seed, every evaluation it asked for is
in an append-only results file, and evaluations already in any results file of the run for the same
checkpoint and protocol (`rank`, earlier searches) are reused. So a search that was killed, and run
again with the same settings, walks the same generations, instantly up to where it stopped, and ends
with the front an uninterrupted search gives. `state.json` holds the settings (a resume with other
settings is refused) and the progress.

Outputs in RUN/search/<name>/: results.csv (this search's new evaluations), front.csv (the
non-dominated archs among those the search visited), front.png (every visited arch, the front
highlighted, the run's other ranked archs in grey), state.json and events.jsonl (progress).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.nas import rank as rank_mod
from edgeflow.nas import results as results_mod
from edgeflow.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS, format_arch
from edgeflow.train.signals import StopFlag

SEARCH_DIR = "search"
STATE_FILE = "search_state.json"  # not state.json: the monitor reads that as a trainer's state
FRONT_CSV = "front.csv"
FRONT_PNG = "front.png"
# objective name -> results column
OBJECTIVES = {"epe": "epe_mean", "flops": "flops", "params": "params", "latency": "latency_ms"}
# The front plot's axis: a readable unit instead of matplotlib's 1e9 offset (divisor, label).
PLOT_UNITS = {"flops": (1e9, "GFLOPs per sample"), "params": (1e6, "parameters (millions)"),
              "latency": (1.0, "latency figure (ms)")}
# Objective value of an arch that breaks a constraint: never evaluated, ranked by its violation only.
INFEASIBLE = 1e12


@dataclass(frozen=True)
class Settings:
    objectives: tuple[str, ...]
    evaluations: int
    population: int
    seed: int
    max_flops: float | None = None
    max_params: float | None = None

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "objectives": list(self.objectives)}


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise rank_mod.RankError(f"--objectives: unknown {unknown}; choose from {', '.join(OBJECTIVES)}")
    if len(names) < 2 or names[0] != "epe" or len(set(names)) != len(names):
        raise rank_mod.RankError(f"--objectives: expected epe and at least one cost, e.g. epe,flops; got {text!r}")
    return names


def check_settings(s: Settings) -> None:
    if s.population < 2:
        raise rank_mod.RankError(f"--population: must be >= 2, got {s.population}")
    if s.evaluations < s.population:
        raise rank_mod.RankError(f"--evaluations: must be >= --population ({s.population}), got {s.evaluations}")
    for name, value in (("--max-flops", s.max_flops), ("--max-params", s.max_params)):
        if value is not None and not value > 0:
            raise rank_mod.RankError(f"{name}: must be > 0, got {value}")


@dataclass
class SearchPlan:
    run: Any                    # RunHandle
    settings: Settings
    name: str
    folder: Path
    key: results_mod.Key
    key_record: dict[str, Any]
    cache: dict[str, dict[str, Any]]  # every result of this key in the run's results files
    split: str | None = None  # the evaluation split (--split); None: the one the run selects on

    @property
    def results_csv(self) -> Path:
        return self.folder / results_mod.RESULTS_CSV

    @property
    def experiment(self) -> str:
        return f"{self.run.cfg.runtime.experiment_name}/{SEARCH_DIR}/{self.name}"


def results_files(run_root: Path) -> list[Path]:
    """Every results file of a run (rankings first, then searches), in a fixed order."""
    return [*sorted((run_root / rank_mod.RANK_DIR).glob(f"*/{results_mod.RESULTS_CSV}")),
            *sorted((run_root / SEARCH_DIR).glob(f"*/{results_mod.RESULTS_CSV}"))]


def prepare(run_dir: str | Path, settings: Settings, *, checkpoint: str = "best", name: str | None = None,
            overrides: Sequence[str] = (), split: str | None = None) -> SearchPlan:
    """Check everything; writes nothing. RankError for bad input, DataError for unusable data. `split`
    (--split) is the evaluation split the EPE objective is measured on (default: the one the run selects
    on); only results of that split are reused."""
    check_settings(settings)
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise rank_mod.RankError(f"--name: must be a folder name without '/', got {name!r}")
    run = rank_mod.open_checked(run_dir, checkpoint, overrides, split)
    key, record = rank_mod.key_for(run, split)
    name = name or rank_mod.default_name(f"{key.checkpoint}_{'_'.join(settings.objectives)}_s{settings.seed}",
                                         run, split)
    folder = run.paths.root / SEARCH_DIR / name
    rank_mod.check_key(folder, key)
    try:
        state = read_json(folder / STATE_FILE)
    except ValueError as exc:
        raise rank_mod.RankError(f"{folder / STATE_FILE}: {exc}") from None
    if state and state.get("settings") != settings.record():
        raise rank_mod.RankError(f"{folder} is a search with other settings ({state.get('settings')}); "
                                 f"resume it with those, or choose another --name")
    cache = results_mod.read_many(results_files(run.paths.root), key)
    return SearchPlan(run, settings, name, folder, key, record, cache, split)


def code_of(x: Sequence[Any]) -> str:
    return format_arch([int(round(float(v))) for v in x])


class Objectives:
    """F and G of a population: analytic costs and constraints first, EPE from the cache or evaluated."""

    def __init__(self, plan: SearchPlan, on_new: Callable[[dict[str, Any]], None]) -> None:
        self.plan = plan
        self.on_new = on_new
        self.evaluate: Any = None
        h, w = plan.run.cfg.data.input_height, plan.run.cfg.data.input_width
        self.size = (h, w)
        self.visited: dict[str, dict[str, Any]] = {}  # feasible archs the algorithm asked for
        self.new = 0

    def constraints(self, cost: dict[str, Any]) -> list[float]:
        s = self.plan.settings
        g = []
        if s.max_flops is not None:
            g.append((cost["flops"] - s.max_flops) / s.max_flops)
        if s.max_params is not None:
            g.append((cost["params"] - s.max_params) / s.max_params)
        return g

    def row(self, code: str) -> dict[str, Any]:
        row = self.plan.cache.get(code)
        if row is None:
            if self.evaluate is None:
                self.evaluate = rank_mod.evaluator_for(self.plan.run, self.plan.key, self.plan.split)
            row = self.evaluate(code, self.plan.key, rank_mod.writer_id())
            results_mod.append(self.plan.results_csv, row)
            self.plan.cache[code] = row
            self.new += 1
            self.visited[code] = row
            self.on_new(row)
        return row

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        columns = [OBJECTIVES[o] for o in self.plan.settings.objectives]
        F, G = [], []
        for x in X:
            code = code_of(x)
            cost = rank_mod.cost_of(code, *self.size)
            g = self.constraints(cost)
            G.append(g)
            if any(v > 0 for v in g):
                F.append([INFEASIBLE] + [float(cost[c]) for c in columns[1:]])
                continue
            row = self.row(code)
            self.visited[code] = row
            F.append([float(row[c]) for c in columns])
        g_arr = np.array(G, dtype=np.float64) if G and G[0] else None
        return np.array(F, dtype=np.float64), g_arr


def front(rows: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The non-dominated rows (pymoo's non-dominated sorting), ordered by EPE."""
    if not rows:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.array([[float(r[OBJECTIVES[o]]) for o in objectives] for r in rows], dtype=np.float64)
    index = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted((rows[i] for i in index), key=lambda r: (r["epe_mean"], r["code"]))


def algorithm(settings: Settings) -> Any:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    return NSGA2(pop_size=settings.population, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 eliminate_duplicates=True)


def problem(settings: Settings) -> Any:
    from pymoo.core.problem import Problem

    n_constr = int(settings.max_flops is not None) + int(settings.max_params is not None)
    return Problem(n_var=NUM_BLOCKS, n_obj=len(settings.objectives), n_ieq_constr=n_constr, xl=0,
                   xu=NUM_OPTIONS - 1, vtype=int)


@dataclass
class SearchOutcome:
    n_eval: int
    new_evaluations: int
    generations: int
    visited: int
    front: list[dict[str, Any]]
    stopped_by: str | None


def run(plan: SearchPlan, *, log: Callable[[str], None] | None = None) -> SearchOutcome:
    """Run (or replay and continue) the search; outputs are replaced atomically as it goes."""
    from pymoo.problems.static import StaticProblem

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    s = plan.settings
    evaluate_first = rank_mod.evaluator_for(plan.run, plan.key, plan.split) if _needs_model(plan) else None
    rank_mod.write_key(plan.folder, plan.key_record)
    results_mod.ensure_file(plan.results_csv)
    progress = rank_mod.ProgressLog(rank_mod.progress_log(plan.folder, plan.experiment), "search", plan.name,
                                    s.evaluations)
    state: dict[str, Any] = {"n_eval": 0, "generation": 0}
    objectives_fn: Objectives

    def on_new(row: dict[str, Any]) -> None:
        rows = list(objectives_fn.visited.values())
        progress.emit(rows, generation=state["generation"], new_evaluations=objectives_fn.new)
        log(f"generation {state['generation']}: {row['code']} EPE {row['epe_mean']:.4f} "
            f"({objectives_fn.new} new evaluations)")

    objectives_fn = Objectives(plan, on_new)
    objectives_fn.evaluate = evaluate_first
    algo = algorithm(s)
    prob = problem(s)
    algo.setup(prob, termination=("n_eval", s.evaluations), seed=s.seed, verbose=False)
    progress.emit([], generation=0, new_evaluations=0)
    stopped = None
    try:
        with StopFlag() as stop:
            while algo.has_next():
                pop = algo.ask()
                F, G = objectives_fn(pop.get("X"))
                kwargs = {"F": F} if G is None else {"F": F, "G": G}
                algo.evaluator.eval(StaticProblem(prob, **kwargs), pop)
                algo.tell(infills=pop)
                state["generation"] += 1
                state["n_eval"] = int(algo.evaluator.n_eval)
                write_state(plan, state, complete=False, new=objectives_fn.new)
                progress.emit(list(objectives_fn.visited.values()), generation=state["generation"],
                              new_evaluations=objectives_fn.new)
                if stop.requested:
                    stopped = stop.name
                    break
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            progress.end("failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    rows = list(objectives_fn.visited.values())
    best = front(rows, s.objectives)
    write_front(plan, best)
    write_plot(plan, rows, best)
    write_state(plan, state, complete=stopped is None, new=objectives_fn.new)
    if stopped:
        progress.end("preempted", f"{stopped}: stopped after generation {state['generation']}; run again")
    else:
        progress.emit(rows, generation=state["generation"], new_evaluations=objectives_fn.new)
        progress.end("completed", f"{state['n_eval']} evaluations, front of {len(best)}")
    return SearchOutcome(state["n_eval"], objectives_fn.new, state["generation"], len(rows), best, stopped)


def _needs_model(plan: SearchPlan) -> bool:
    # Restoring first means a checkpoint that does not fit fails before anything is written. A search
    # whose every evaluation is cached never needs the model; we cannot know that in advance, so the
    # model is restored up front only when the cache cannot possibly hold the whole budget.
    return len(plan.cache) < plan.settings.evaluations


def write_state(plan: SearchPlan, state: dict[str, Any], complete: bool, new: int) -> None:
    atomic_write_json(plan.folder / STATE_FILE, {
        "settings": plan.settings.record(), "checkpoint": plan.key_record["checkpoint"],
        "protocol_id": plan.key.protocol, "generation": state["generation"], "n_eval": state["n_eval"],
        "new_evaluations": new, "complete": complete, "updated": time.time()})


FRONT_COLUMNS = ("code", "epe_mean", "epe_median", "epe_p90", "params", "flops", "latency_ms")


def write_front(plan: SearchPlan, rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FRONT_COLUMNS)
    for r in rows:
        writer.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in FRONT_COLUMNS])
    atomic_write_text(plan.folder / FRONT_CSV, buf.getvalue())


def read_front(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [{k: (v if k == "code" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def write_plot(plan: SearchPlan, visited: Sequence[dict[str, Any]], best: Sequence[dict[str, Any]]) -> None:
    """front.png: EPE against the first cost objective; every visited arch, the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = plan.settings.objectives[1]
    column = OBJECTIVES[cost]
    divisor, unit = PLOT_UNITS[cost]

    def xs(rows: Sequence[dict[str, Any]]) -> list[float]:
        return [float(r[column]) / divisor for r in rows]

    seen = {r["code"] for r in visited}
    others = [r for c, r in plan.cache.items() if c not in seen]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    try:
        if others:
            ax.scatter(xs(others), [r["epe_mean"] for r in others], s=10, c="0.8",
                       label=f"other ranked archs ({len(others)})")
        ax.scatter(xs(visited), [r["epe_mean"] for r in visited], s=14, c="tab:blue",
                   label=f"evaluated by the search ({len(visited)})")
        line = sorted(best, key=lambda r: r[column])
        ax.plot(xs(line), [r["epe_mean"] for r in line], "-o", c="tab:red", ms=6,
                label=f"Pareto front ({len(best)})")
        for x, r in zip(xs(line), line, strict=True):  # the front's archs by name, to pick one from the plot
            ax.annotate(str(r["code"]), (x, r["epe_mean"]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color="tab:red", family="monospace")
        ax.set_xlabel(unit)
        ax.set_ylabel("EPE (mean over eval batches)")
        ax.set_title(f"{plan.run.cfg.runtime.experiment_name}: {plan.name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(plan.folder / FRONT_PNG, buf.getvalue())
