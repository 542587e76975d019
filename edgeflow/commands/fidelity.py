"""`python -m edgeflow fidelity`: is a trained supernet's ranking true? Stand-alone trainings and a report.

    python -m edgeflow fidelity --run SUPERNET_RUN --k N [--config STANDALONE_CFG] [--set KEY=VALUE ...]
                                [--seed S] [--seeds R] [--candidates C] [--checkpoint best|latest|epoch-N]
                                [--name NAME] [--no-train]

The work is edgeflow/nas/fidelity.py (the plan, the pool, the report) and fidelity_stats.py (the
figures); the supernet side is the rank machinery (edgeflow/nas/rank.py), the stand-alone side
`python -m edgeflow train`, one training after another, each resumed if it was stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from edgeflow import rundir
from edgeflow.config import ConfigError
from edgeflow.data.samples import DataError
from edgeflow.nas import fidelity, rank
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_DATA_ERROR, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED
from edgeflow.train.checkpoint import CheckpointError
from edgeflow.train.signals import StopFlag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edgeflow fidelity",
        description="Measure whether a trained supernet ranks subnets as they rank when trained on their own: "
                    "choose k subnets (stratified over the supernet's EPE ranking and FLOPs, with the cheapest, "
                    "the most expensive and the EdgeFlowNet baseline arch), train each stand-alone, and write "
                    "RUN/fidelity/<name>/report.json and report.png (Kendall tau, Spearman, top overlap, regret, "
                    "with 95 %% bootstrap intervals, against FLOPs, params and latency alone). Rerun, it reuses "
                    "finished trainings and resumes stopped ones.")
    parser.add_argument("--run", required=True, help="the trained supernet's run directory")
    parser.add_argument("--k", type=int, required=True, metavar="N", help=f"subnets to train (>= {fidelity.MIN_K})")
    parser.add_argument("--config", metavar="STANDALONE_CFG",
                        help="the stand-alone training's config, e.g. configs/standalone_fc2_180x240.yaml (its data "
                             "and eval set must be the supernet's; default: the supernet run's own config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the stand-alone config, e.g. --set train.num_epochs=30 (repeatable)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the candidate sample, the pool's choice and the bootstrap (default 0)")
    parser.add_argument("--seeds", type=int, default=1, metavar="R",
                        help="train the cheapest, the most expensive and the baseline arch with R seeds each, to "
                             "measure label noise (default 1)")
    parser.add_argument("--candidates", type=int, metavar="C",
                        help="archs the supernet ranks to choose from, drawn as `rank --sample C --seed S` "
                             "(default max(8 k, 24))")
    parser.add_argument("--checkpoint", default="best", metavar="best|latest|epoch-N",
                        help="the supernet's checkpoint (default best; epoch-N: one kept by checkpoint.keep_every, "
                             "to measure the ranking earlier in training)")
    parser.add_argument("--name", help="report folder RUN/fidelity/NAME (default: the checkpoint's name)")
    parser.add_argument("--no-train", action="store_true",
                        help="only the report: refuse when a stand-alone training has not finished (the report "
                             "job of `python -m jobs fidelity`)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _err(message: str) -> None:
    print(f"edgeflow fidelity: {message}", file=sys.stderr)


def settings_of(args: argparse.Namespace) -> fidelity.Settings:
    return fidelity.Settings(k=args.k, seed=args.seed, seeds=args.seeds, candidates=args.candidates,
                             config=args.config, overrides=tuple(args.overrides), checkpoint=args.checkpoint)


def train(t: fidelity.Training, source: str) -> tuple[int, str]:
    """One stand-alone training as `python -m edgeflow train` (it resumes a stopped run by itself): its
    exit code, and the signal that asked this command to stop meanwhile ("" for none)."""
    cmd = [sys.executable, "-m", "edgeflow", "train", "--config", source]
    for item in t.overrides:
        cmd += ["--set", item]
    print(f"stand-alone {t.experiment}: training ({t.status()})", flush=True)
    with StopFlag() as stop:
        proc = subprocess.Popen(cmd, env=dict(os.environ))
        forwarded = False
        while True:
            try:
                return proc.wait(timeout=0.5), stop.name
            except subprocess.TimeoutExpired:
                pass
            except KeyboardInterrupt:  # the child got the same Ctrl-C: it checkpoints and stops
                proc.wait()
                raise
            if stop.requested and not forwarded:  # SIGTERM/SIGUSR2 to this command: the trainer checkpoints
                proc.send_signal(stop.signum or signal.SIGTERM)
                forwarded = True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = fidelity.prepare(args.run, settings_of(args), name=args.name)
    except DataError as exc:
        _err(str(exc))
        return EXIT_DATA_ERROR
    except (rank.RankError, ConfigError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    key = plan.key
    rp = plan.rank_plan
    print(f"fidelity {plan.name}: supernet checkpoint {key.checkpoint} (digest {key.checkpoint_digest}, protocol "
          f"{key.protocol}); {len(plan.candidates)} candidates, {len(rp.todo)} archs to rank", flush=True)
    try:
        if rp.todo:
            outcome = rank.run(rp)
            if outcome.stopped_by:
                print(f"stopped by {outcome.stopped_by} while ranking; run again to continue")
                return EXIT_PREEMPTED
            fidelity.refresh(plan)
        pool = fidelity.choose(plan)
    except CheckpointError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except rank.RankError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    fidelity.write_start(plan)
    fidelity.mark_running(plan)
    trainings = plan.trainings()
    todo = [t for t in trainings if not t.finished]
    print(f"pool of {len(pool)}: {' '.join(m.code for m in pool)}; {len(trainings)} stand-alone trainings, "
          f"{len(trainings) - len(todo)} finished, {len(todo)} to train", flush=True)
    if todo and args.no_train:
        listing = ", ".join(f"{t.experiment}: {t.status()}" for t in todo)
        _err(f"{len(todo)} stand-alone training(s) not finished ({listing}); run without --no-train to train them")
        fidelity.end(plan, "failed", f"{len(todo)} stand-alone trainings not finished")
        return EXIT_FAILED
    for t in todo:
        code, stopped = train(t, plan.source)
        fidelity.progress(plan)
        if stopped:  # SIGTERM/SIGUSR2: the trainer checkpointed (or had just finished); stop here
            reason = f"stopped by {stopped} at stand-alone {t.experiment} ({t.status()})"
            fidelity.end(plan, "preempted", reason)
            print(f"{reason}; run the same command again to continue", flush=True)
            return EXIT_PREEMPTED
        if code != EXIT_OK or not t.finished:
            status = "preempted" if code == EXIT_PREEMPTED else "failed"
            reason = f"stand-alone {t.experiment} ended with exit {code} ({t.status()})"
            fidelity.end(plan, status, reason)
            _err(f"{reason}; run the same command again to resume it")
            return code if code != EXIT_OK else EXIT_FAILED
    try:
        data = fidelity.report(plan, rp.done)
    except (rank.RankError, ValueError) as exc:
        _err(str(exc))
        fidelity.end(plan, "failed", str(exc)[:500])
        return EXIT_FAILED
    path_json, path_png = fidelity.write_report(plan, data)
    fidelity.end(plan, "completed", data["line"])
    if args.json:
        print(rundir.to_json(data, indent=2))
    else:
        print_summary(data)
    print(f"report: {path_json} {path_png}")
    print(data["line"])
    return EXIT_OK


def print_summary(data: dict) -> None:
    figs = data["figures"]["predictors"]
    print(f"{'predictor':<10}{'Kendall tau':>26}{'Spearman':>26}{'top overlap':>24}{'regret':>24}")
    for name, f in figs.items():
        cells = "".join(f"{v['value']:>+8.3f} [{v['low']:+.2f}, {v['high']:+.2f}]".rjust(w)
                        for v, w in ((f["kendall_tau"], 26), (f["spearman"], 26), (f["top_overlap"], 24),
                                     (f["regret"], 24)))
        print(f"{name:<10}{cells}")
    noise = data["seed_noise"]
    if noise.get("archs"):
        print(f"seed noise: stand-alone EPE std over seeds {noise['pooled_std']:.4f} ({noise['archs']} archs)")
