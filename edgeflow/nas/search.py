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

With a device (--device, edgeflow/export/device.py), its limits are constraints too: an arch's device
figures (a Vela compile, edgeflow/nas/device.py) come before its EPE, and an arch that breaks a limit
is infeasible, never evaluated and never dropped: archs.csv lists it with the limits it broke. The
objectives may then be Vela's latency and SRAM, and the EPE of the int8 model at the device's input
size (deployed_epe). A device whose limits no arch of the first generation meets stops the search
with the closest arch. The end of a device search reports the front and the EdgeFlowNet baseline side
by side: float32 EPE at the training size, float32 and int8 EPE at the deployment size, the figures.

Outputs in RUN/search/<name>/: results.csv (this search's new evaluations), front.csv (the
non-dominated archs among those the search visited), front.png (every visited arch, the front
highlighted, the run's other ranked archs in grey), archs.csv (every arch the search asked for,
feasible or with the limits it broke), deploy_report.csv (device searches), state.json and
events.jsonl (progress).
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.nas import device as dev
from edgeflow.nas import rank as rank_mod
from edgeflow.nas import results as results_mod
from edgeflow.rundir import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from edgeflow.space.arch import NUM_BLOCKS, NUM_OPTIONS, format_arch
from edgeflow.train.signals import StopFlag

SEARCH_DIR = "search"
STATE_FILE = "search_state.json"  # not state.json: the monitor reads that as a trainer's state
FRONT_CSV = "front.csv"
FRONT_PNG = "front.png"
ARCHS_CSV = "archs.csv"
# objective name -> results column
OBJECTIVES = {"epe": "epe_mean", "flops": "flops", "params": "params", "latency": "latency_ms",
              "vela_latency": "vela_inference_ms", "vela_sram": "vela_sram_kib", "deployed_epe": "epe_int8"}
# The front plot's cost axis: a readable unit instead of matplotlib's 1e9 offset (divisor, label).
PLOT_UNITS = {"flops": (1e9, "GFLOPs per sample"), "params": (1e6, "parameters (millions)"),
              "latency": (1.0, "latency figure (ms)"), "vela_latency": (1.0, "Vela latency on the device (ms)"),
              "vela_sram": (1.0, "Vela SRAM on the device (KiB)")}
EPE_OBJECTIVES = ("epe", "deployed_epe")
DEVICE_OBJECTIVES = ("vela_latency", "vela_sram", "deployed_epe")

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
    device: str | None = None  # a device file (its absolute path) or a name in configs/devices/

    def record(self) -> dict[str, Any]:
        record = {**asdict(self), "objectives": list(self.objectives)}
        if self.device is None:  # the record of a search without a device, as before devices existed
            del record["device"]
        return record

    def args(self) -> list[str]:
        """The same settings as command-line arguments (what a job is given)."""
        out = ["--objectives", ",".join(self.objectives), "--evaluations", str(self.evaluations),
               "--population", str(self.population), "--seed", str(self.seed)]
        if self.max_flops is not None:
            out += ["--max-flops", repr(self.max_flops)]
        if self.max_params is not None:
            out += ["--max-params", repr(self.max_params)]
        if self.device is not None:
            out += ["--device", self.device]
        return out


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise rank_mod.RankError(f"--objectives: unknown {unknown}; choose from {', '.join(OBJECTIVES)}")
    if (len(names) < 2 or names[0] not in EPE_OBJECTIVES or any(n in EPE_OBJECTIVES for n in names[1:])
            or len(set(names)) != len(names)):
        raise rank_mod.RankError(f"--objectives: expected epe (or deployed_epe) and at least one cost, e.g. "
                                 f"epe,flops or epe,vela_latency; got {text!r}")
    return names


def check_settings(s: Settings) -> None:
    if s.population < 2:
        raise rank_mod.RankError(f"--population: must be >= 2, got {s.population}")
    if s.evaluations < s.population:
        raise rank_mod.RankError(f"--evaluations: must be >= --population ({s.population}), got {s.evaluations}")
    for name, value in (("--max-flops", s.max_flops), ("--max-params", s.max_params)):
        if value is not None and not value > 0:
            raise rank_mod.RankError(f"{name}: must be > 0, got {value}")
    needs = [o for o in s.objectives if o in DEVICE_OBJECTIVES]
    if needs and s.device is None:
        raise rank_mod.RankError(f"--objectives {','.join(needs)}: need --device (the board Vela compiles for)")


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
    device: device_mod.Device | None = None
    figures: dev.FigurePlan | None = None    # the device figures' key and cache
    deploy: dev.DeployPlan | None = None     # the protocol at the device's input size
    workers: int = 1                         # processes computing device figures

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
            overrides: Sequence[str] = (), split: str | None = None, workers: int | None = None) -> SearchPlan:
    """Check everything; writes nothing. RankError for bad input (DeviceError, a ConfigError, for a
    device file; VelaMissing without Vela), DataError for unusable data. `split` (--split) is the
    evaluation split the EPE objective is measured on (default: the one the run selects on); only
    results of that split are reused."""
    check_settings(settings)
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise rank_mod.RankError(f"--name: must be a folder name without '/', got {name!r}")
    if workers is not None and workers < 1:
        raise rank_mod.RankError(f"--workers: must be >= 1, got {workers}")
    device = device_mod.load(settings.device) if settings.device is not None else None
    if device is not None:
        vela_mod.require()
    run = rank_mod.open_checked(run_dir, checkpoint, overrides, split)
    key, record = rank_mod.key_for(run, split)
    tag = f"_{device.name}" if device is not None else ""
    name = name or rank_mod.default_name(f"{key.checkpoint}_{'_'.join(settings.objectives)}{tag}_s{settings.seed}",
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
    if state and device is not None and state.get("device_sha256") not in (None, device.file_sha256):
        raise rank_mod.RankError(f"{folder} is a search for another version of device {device.name} (its file "
                                 f"changed since); choose another --name")
    cache = results_mod.read_many(results_files(run.paths.root), key)
    plan = SearchPlan(run, settings, name, folder, key, record, cache, split=split, device=device,
                      workers=workers or dev.default_workers())
    if device is not None:
        plan.figures = dev.prepare_figures(run, device, key)
        plan.deploy = dev.prepare_deploy(run, device.input_size)
    return plan


def code_of(x: Sequence[Any]) -> str:
    return format_arch([int(round(float(v))) for v in x])


class NoFeasibleArch(rank_mod.RankError):
    """No arch of the first generation meets the limits: the message names the closest one."""


class Objectives:
    """F and G of a population: analytic costs and constraints first, then the device figures and
    limits (a Vela compile per arch, cached), then EPE from the cache or evaluated (feasible archs only)."""

    def __init__(self, plan: SearchPlan, on_new: Callable[[dict[str, Any]], None],
                 figures: dev.Figures | None = None, deployed: dev.DeployEvaluator | None = None) -> None:
        self.plan = plan
        self.on_new = on_new
        self.figures = figures
        self.deployed = deployed
        self.evaluate: Any = None
        h, w = plan.run.cfg.data.input_height, plan.run.cfg.data.input_width
        self.size = (h, w)
        self.visited: dict[str, dict[str, Any]] = {}     # feasible archs the algorithm asked for
        self.infeasible: dict[str, dict[str, Any]] = {}  # the others, with the limits they broke
        self.last: list[tuple[str, float]] = []          # the last population: (code, total violation)
        self.new = 0

    @property
    def limits(self) -> device_mod.Limits:
        return self.plan.device.limits if self.plan.device is not None else device_mod.Limits()

    def constraints(self, cost: dict[str, Any]) -> list[float]:
        s = self.plan.settings
        g = []
        if s.max_flops is not None:
            g.append((cost["flops"] - s.max_flops) / s.max_flops)
        if s.max_params is not None:
            g.append((cost["params"] - s.max_params) / s.max_params)
        return g

    def analytic_violations(self, cost: dict[str, Any]) -> list[str]:
        s = self.plan.settings
        out = []
        if s.max_flops is not None and cost["flops"] > s.max_flops:
            out.append(f"max_flops {s.max_flops:g}: needs {cost['flops']:g}")
        if s.max_params is not None and cost["params"] > s.max_params:
            out.append(f"max_params {s.max_params:g}: has {cost['params']:g}")
        return out

    def epe_row(self, code: str) -> dict[str, Any]:
        """The protocol's row of `code` at the training size, from the cache or evaluated now."""
        row = self.plan.cache.get(code)
        if row is None:
            if self.evaluate is None:
                self.evaluate = rank_mod.evaluator_for(self.plan.run, self.plan.key, self.plan.split)
            row = self.evaluate(code, self.plan.key, rank_mod.writer_id())
            results_mod.append(self.plan.results_csv, row)
            self.plan.cache[code] = row
            self.new += 1
            self.on_new(row)
        return row

    def row(self, code: str) -> dict[str, Any]:
        row = dict(self.epe_row(code))
        if self.figures is not None:
            fig = self.figures.cached(code) or {}
            row.update({k: fig[k] for k in vela_mod.FIGURES if k in fig})
        if self.deployed is not None and "deployed_epe" in self.plan.settings.objectives:
            row["epe_int8"] = self.deployed.int8_row(code)["epe_int8"]
        self.visited[code] = row
        return row

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        columns = [OBJECTIVES[o] for o in self.plan.settings.objectives]
        codes = [code_of(x) for x in X]
        costs = {c: rank_mod.cost_of(c, *self.size) for c in codes}
        g_cost = {c: self.constraints(costs[c]) for c in codes}
        n_limits = len(self.limits.active())
        figures: dict[str, dict[str, Any]] = {}
        if self.figures is not None:
            # Only archs within the analytic limits are compiled; the others are infeasible already.
            figures = self.figures.ensure([c for c in codes if all(v <= 0 for v in g_cost[c])])
        F, G = [], []
        self.last = []
        for code in codes:
            fig = figures.get(code)
            g = g_cost[code] + (self.limits.constraints(fig) if fig is not None else [0.0] * n_limits)
            G.append(g)
            self.last.append((code, float(sum(max(v, 0.0) for v in g))))
            if any(v > 0 for v in g):
                broken = self.analytic_violations(costs[code])
                if fig is not None:
                    broken += [v.text() for v in self.limits.violations(fig)]
                known = {**costs[code], **{k: v for k, v in (fig or {}).items() if k in vela_mod.FIGURES}}
                self.infeasible[code] = {"code": code, **known, "violated": "; ".join(broken)}
                F.append([INFEASIBLE] + [float(known.get(c, INFEASIBLE)) for c in columns[1:]])
                continue
            row = self.row(code)
            F.append([float(row[c]) for c in columns])
        g_arr = np.array(G, dtype=np.float64) if G and G[0] else None
        return np.array(F, dtype=np.float64), g_arr

    def closest(self) -> tuple[str, str]:
        """The arch of the last population that comes closest to the limits, and what it breaks."""
        code, _ = min(self.last, key=lambda t: (t[1], t[0]))
        return code, self.infeasible.get(code, {}).get("violated", "")


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


def problem(settings: Settings, limits: device_mod.Limits | None = None) -> Any:
    from pymoo.core.problem import Problem

    n_constr = int(settings.max_flops is not None) + int(settings.max_params is not None)
    n_constr += len(limits.active()) if limits is not None else 0
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
    infeasible: list[dict[str, Any]] = field(default_factory=list)
    report: list[dict[str, Any]] = field(default_factory=list)   # device searches: the front and the baseline
    figures: dev.FigureStats | None = None


def run(plan: SearchPlan, *, log: Callable[[str], None] | None = None) -> SearchOutcome:
    """Run (or replay and continue) the search; outputs are replaced atomically as it goes."""
    from pymoo.problems.static import StaticProblem

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    s = plan.settings
    created = not plan.folder.exists()
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

    figures = dev.Figures(plan.figures, plan.workers, log) if plan.figures is not None else None
    deployed = (dev.DeployEvaluator(plan.deploy, results_files(plan.run.paths.root), log)
                if plan.deploy is not None else None)
    objectives_fn = Objectives(plan, on_new, figures, deployed)
    objectives_fn.evaluate = evaluate_first
    algo = algorithm(s)
    prob = problem(s, plan.device.limits if plan.device is not None else None)
    algo.setup(prob, termination=("n_eval", s.evaluations), seed=s.seed, verbose=False)
    progress.emit([], generation=0, new_evaluations=0)
    stopped = None
    try:
        with StopFlag() as stop:
            while algo.has_next():
                pop = algo.ask()
                F, G = objectives_fn(pop.get("X"))
                if state["generation"] == 0 and G is not None and not (G <= 0).all(axis=1).any():
                    code, broken = objectives_fn.closest()
                    where = f" of device {plan.device.name}" if plan.device is not None else ""
                    raise NoFeasibleArch(f"no arch of the first generation ({len(G)}) meets the limits{where}: "
                                         f"the closest, {code}, breaks {broken}. Relax the limits (or another "
                                         f"input size); nothing of the search was kept")
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
            rows = list(objectives_fn.visited.values())
            best = front(rows, s.objectives)
            report = [] if stopped or figures is None else deployment_report(plan, objectives_fn, best)
    except NoFeasibleArch:
        if figures is not None:
            figures.close()
        if created:  # the search never started: leave no folder behind (the device figures stay cached)
            import shutil

            shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):
            progress.end("failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        if figures is not None:
            figures.close()
    write_front(plan, best)
    write_archs(plan, objectives_fn)
    write_plot(plan, rows, best)
    write_state(plan, state, complete=stopped is None, new=objectives_fn.new)
    if stopped:
        progress.end("preempted", f"{stopped}: stopped after generation {state['generation']}; run again")
    else:
        progress.emit(rows, generation=state["generation"], new_evaluations=objectives_fn.new)
        progress.end("completed", f"{state['n_eval']} evaluations, front of {len(best)}")
    return SearchOutcome(state["n_eval"], objectives_fn.new, state["generation"], len(rows), best, stopped,
                         infeasible=sorted(objectives_fn.infeasible.values(), key=lambda r: r["code"]),
                         report=report, figures=figures.stats if figures is not None else None)


def deployment_report(plan: SearchPlan, objectives_fn: Objectives,
                      best: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The front and the baseline side by side (deploy_report.csv): EPE at the training size, float32 and
    int8 EPE at the device's input size, the device figures."""
    assert plan.figures is not None and plan.deploy is not None and plan.device is not None
    assert objectives_fn.figures is not None and objectives_fn.deployed is not None
    codes = [r["code"] for r in best]
    wanted = [*codes, dev.BASELINE]
    figures = objectives_fn.figures.ensure(wanted)
    train = {c: objectives_fn.epe_row(c) for c in wanted}
    rows = dev.report_rows(codes, train, figures, objectives_fn.deployed, plan.device.limits)
    dev.write_report(plan.folder, rows, dev.report_record(plan.figures, plan.deploy, plan.key))
    return rows


def _needs_model(plan: SearchPlan) -> bool:
    # Restoring first means a checkpoint that does not fit fails before anything is written. A search
    # whose every evaluation is cached never needs the model; we cannot know that in advance, so the
    # model is restored up front only when the cache cannot possibly hold the whole budget.
    return len(plan.cache) < plan.settings.evaluations


def write_state(plan: SearchPlan, state: dict[str, Any], complete: bool, new: int) -> None:
    extra = {}
    if plan.device is not None:
        extra = {"device": plan.device.record(), "device_sha256": plan.device.file_sha256,
                 "device_figures_key": plan.figures.key if plan.figures else None}
    atomic_write_json(plan.folder / STATE_FILE, {
        "settings": plan.settings.record(), "checkpoint": plan.key_record["checkpoint"],
        "protocol_id": plan.key.protocol, "generation": state["generation"], "n_eval": state["n_eval"],
        "new_evaluations": new, "complete": complete, "updated": time.time(), **extra})


FRONT_COLUMNS = ("code", "epe_mean", "epe_median", "epe_p90", "params", "flops", "latency_ms")
DEVICE_COLUMNS = ("vela_inference_ms", "vela_fps", "vela_cycles", "vela_sram_kib", "vela_flash_kib", "vela_npu_ops",
                  "vela_cpu_ops")


def _front_columns(plan: SearchPlan) -> tuple[str, ...]:
    columns: tuple[str, ...] = FRONT_COLUMNS
    if plan.device is not None:
        columns += DEVICE_COLUMNS
    if "deployed_epe" in plan.settings.objectives:
        columns += ("epe_int8",)
    return columns


def _csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([repr(r[c]) if isinstance(r.get(c), float) else r.get(c, "") for c in columns])
    return buf.getvalue()


def write_front(plan: SearchPlan, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(plan.folder / FRONT_CSV, _csv_text(_front_columns(plan), rows))


def write_archs(plan: SearchPlan, objectives_fn: Objectives) -> None:
    """archs.csv: every arch the search asked for; `feasible` 0 with the limits it broke in `violated`
    (an infeasible arch's EPE is not evaluated: its EPE columns are empty)."""
    columns = ("code", "feasible", "violated", *_front_columns(plan)[1:])
    rows = [{**r, "feasible": 1, "violated": ""} for r in objectives_fn.visited.values()]
    rows += [{**r, "feasible": 0} for r in objectives_fn.infeasible.values()]
    rows.sort(key=lambda r: r["code"])
    atomic_write_text(plan.folder / ARCHS_CSV, _csv_text(columns, rows))


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
    # The EPE objective searched on: float32 at training size, or the int8 model's at the device size.
    epe = OBJECTIVES[plan.settings.objectives[0]]

    def drawable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r.get(column) is not None and r.get(epe) is not None]

    def xs(rows: Sequence[dict[str, Any]]) -> list[float]:
        return [float(r[column]) / divisor for r in rows]

    def ys(rows: Sequence[dict[str, Any]]) -> list[float]:
        return [float(r[epe]) for r in rows]

    seen = {r["code"] for r in visited}
    others = drawable([r for c, r in plan.cache.items() if c not in seen])
    visited, best = drawable(visited), drawable(best)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    try:
        if others:
            ax.scatter(xs(others), ys(others), s=10, c="0.8", label=f"other ranked archs ({len(others)})")
        ax.scatter(xs(visited), ys(visited), s=14, c="tab:blue", label=f"evaluated by the search ({len(visited)})")
        line = sorted(best, key=lambda r: r[column])
        ax.plot(xs(line), ys(line), "-o", c="tab:red", ms=6, label=f"Pareto front ({len(best)})")
        for x, y, r in zip(xs(line), ys(line), line, strict=True):  # the front's archs by name
            ax.annotate(str(r["code"]), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color="tab:red", family="monospace")
        ax.set_xlabel(unit)
        ax.set_ylabel("EPE of the int8 model at the device size" if epe == "epe_int8"
                      else "EPE (mean over eval batches)")
        ax.set_title(f"{plan.run.cfg.runtime.experiment_name}: {plan.name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(plan.folder / FRONT_PNG, buf.getvalue())
