"""The start decision of `edgeflow train`: every check that can fail on bad input, then the start files.

Light module (no TensorFlow). The order, which nothing may reorder:
  1. load and validate the config (done by the caller: edgeflow/commands/train.py);
  2. resolve the data splits (the scan: broken samples excluded and named, empty splits refused);
  3. refuse an existing folder that is not a run directory (never written into); read an existing
     run.json and check its signature against the config;
  4. find this run's own latest checkpoint: resume it, or refuse when checkpoint.resume is false;
     a run that already ended and has nothing left to do returns None (exit 0, nothing written);
  5. on a resume, compare the sample set with the one recorded at the first start and refuse a
     changed one unless data.allow_changed_samples says so;
  6. otherwise, a warm start from another run (checkpoint.init_from: any run directory by path, an
     imported one included; checkpoint.resume_experiment_name NAME is the same for <output_root>/NAME);
     an imported run is never resumed in place;
  7. only now write config.yaml and run.json (write_run_start_files), then the trainer runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeflow import config as config_mod
from edgeflow import jobenv, rundir
from edgeflow.config import Config
from edgeflow.data import exclude, sampleset
from edgeflow.data.samples import Splits
from edgeflow.data.splits import data_source_record, eval_splits_record, excluded_files, resolve_splits
from edgeflow.rundir import RunPaths
from edgeflow.train.checkpoint import CheckpointError, CheckpointStore, Pointer
from edgeflow.train.signature import check_signature, code_version, signature


class StartError(ValueError):
    """The run cannot start as configured; nothing was written."""


@dataclass
class Plan:
    cfg: Config
    splits: Splits
    paths: RunPaths
    previous_run: dict[str, Any] | None
    resume: Pointer | None       # this run's own checkpoint to continue from
    warm_start: Pointer | None   # another run's checkpoint to take weights from
    init_from: dict[str, Any] | None = None  # the warm start's source, as run_start and run.json record it
    data_change: dict[str, Any] | None = None  # an allowed change of the sample set (run_start data_change)

    @property
    def data_record(self) -> dict[str, Any]:
        """The sample set this start trains on, as run.json and run_start record it (`data`)."""
        return sampleset.record(sampleset.split_ids(self.splits))


def prepare(cfg: Config) -> Plan | None:
    """Steps 2-6 above, without writing anything. None: nothing left to do."""
    splits = resolve_splits(cfg, stage=True)
    where = cfg.data.train_dir if cfg.data.dataset == "fc2" else splits.train_scan.directory
    print(f"train_samples={len(splits.train)} ({where}) val_samples={len(splits.val)} "
          f"({splits.val_source})", flush=True)
    for name, split in splits.evals.items():
        if name != splits.select_on:
            print(f"evaluation split {name}: {len(split.samples)} samples ({split.where}) at "
                  f"{split.size[0]}x{split.size[1]}", flush=True)
    for path, kind, detail in excluded_files(splits.train_scan, splits.val_scan, *splits.eval_scans.values()):
        print(f"excluded {path}: {kind}: {detail}", flush=True)
    if splits.exclusion is not None:
        left_out = sum(splits.exclusion["samples"].values())
        print(f"data.exclude_list {splits.exclusion['list']}: {left_out} samples left out on purpose "
              f"({', '.join(f'{n} {c}' for n, c in splits.exclusion['samples'].items())})", flush=True)
        for note in exclude.notes(splits.exclusion):
            print(f"note: {note}", flush=True)
    if cfg.data.format != "packed":
        print("data: file headers checked now; pixel data and flow values are checked as each sample is read "
              "(a bad one stops the run, naming it); `edgeflow preflight --deep` checks every file first",
              flush=True)
    paths = RunPaths(cfg.run_dir)
    foreign = rundir.foreign_folder(paths.root)
    if foreign:
        raise StartError(foreign)
    previous = read_run_json(paths.run)
    check_signature(previous, cfg, paths.root)
    resume = CheckpointStore(paths.checkpoints).pointer("latest") if paths.checkpoints.is_dir() else None
    if resume is not None:
        check_flow_meaning(previous, cfg, paths.root)
    if resume is not None and resume.state.get("imported"):
        raise StartError(f"{paths.root} holds an imported checkpoint (import-v1), which has no training state "
                         f"to resume; start a new experiment from it with checkpoint.init_from={paths.root}")
    if resume is not None and not cfg.checkpoint.resume:
        raise StartError(f"{paths.root} already has a checkpoint ({resume.prefix.name}) and checkpoint.resume "
                         f"is false; set checkpoint.resume=true to continue it or choose another "
                         f"runtime.experiment_name")
    if resume is not None and finished(resume.state, cfg):
        print(f"{paths.root}: already {resume.state['status']} at epoch {resume.state['epoch']}; "
              f"nothing to do (raise train.num_epochs to continue)", flush=True)
        return None
    data_change = None
    if resume is not None:
        data_change = sampleset.resume_change(cfg.data.allow_changed_samples, paths.root, previous,
                                              sampleset.split_ids(splits), sampleset.read_ids(paths.samples),
                                              resume.state)
    warm, init_from = None, None
    source, key = warm_start_source(cfg)
    if resume is None and source:
        warm, init_from = init_from_source(cfg, paths, source, key)
    return Plan(cfg=cfg, splits=splits, paths=paths, previous_run=previous, resume=resume, warm_start=warm,
                init_from=init_from, data_change=data_change)


def warm_start_source(cfg: Config) -> tuple[str, str]:
    """The run directory a new experiment takes its weights from, and the key that named it ("" if none).

    checkpoint.resume_experiment_name NAME is short for checkpoint.init_from <output_root>/NAME: one
    warm start, one set of checks and errors, whichever key the user wrote."""
    if cfg.checkpoint.init_from:
        return cfg.checkpoint.init_from, "checkpoint.init_from"
    if cfg.checkpoint.resume_experiment_name:
        return (str(Path(cfg.runtime.output_root) / cfg.checkpoint.resume_experiment_name),
                "checkpoint.resume_experiment_name")
    return "", ""


def init_from_source(cfg: Config, paths: RunPaths, source_dir: str, key: str) -> tuple[Pointer, dict[str, Any]]:
    """The checkpoint a warm start reads (weights only) from any run directory, an import-v1 one too."""
    named = f"{key}={source_dir!r}" if key == "checkpoint.init_from" else \
        f"{key}={cfg.checkpoint.resume_experiment_name!r} ({source_dir})"
    source = RunPaths(Path(source_dir))
    if not source.root.is_dir():
        raise StartError(f"{named}: no such run directory")
    if source.root.resolve() == paths.root.resolve():
        raise StartError(f"{key} names this experiment's own run directory; leave it empty to resume in place")
    run_json = read_run_json(source.run)
    check_signature(run_json, cfg, source.root, weights_only=True)
    kind = cfg.checkpoint.resume_checkpoint
    store = CheckpointStore(source.checkpoints)
    try:
        pointer = store.pointer(kind) if source.checkpoints.is_dir() else None
    except CheckpointError as exc:
        raise StartError(f"{named}: {exc}") from None
    if pointer is None:
        raise StartError(f"{named}: {source.checkpoints} has no '{kind}' checkpoint (checkpoint.resume_checkpoint)")
    imported = (run_json or {}).get("imported_from") or {}
    record = {"run": str(source.root.resolve()), "key": key, "checkpoint": kind, "prefix": str(pointer.prefix),
              "epoch": pointer.state.get("epoch"), "imported_from": imported.get("checkpoint")}
    if cfg.train.arch:
        # What a stand-alone net takes: its arch's layers of a supernet, or a stand-alone run's whole net.
        record["source_arch"] = ((run_json or {}).get("signature") or {}).get("arch")
        record["layers"] = ("the whole net" if record["source_arch"]
                            else f"arch {cfg.train.arch}'s layers of the supernet")
    return pointer, record


def check_flow_meaning(run_json: dict[str, Any] | None, cfg: Config, where: Path) -> None:
    """A run continues only with the flow values it trained on: a changed data.ft3d_flow_divisor would
    change what every label means mid-run (a new experiment may start from its weights instead)."""
    before = ((run_json or {}).get("data_source") or {}).get("flow_divisor")
    now = data_source_record(cfg).get("flow_divisor")
    if before is not None and before != now:
        raise StartError(f"run {where} trained on flow divided by {before} (data.ft3d_flow_divisor), the config "
                         f"gives {now}: continuing would change what its labels mean; restore the value, or start a "
                         f"new experiment from its weights (checkpoint.init_from)")


def finished(state: dict[str, Any], cfg: Config) -> bool:
    status = state.get("status")
    if status == "completed":
        return int(state.get("epoch", 0)) >= cfg.train.num_epochs
    if status == "early_stopped":
        return not cfg.checkpoint.reset_early_stop_on_resume
    return False


def read_run_json(path: Path) -> dict[str, Any] | None:
    try:
        return rundir.read_run(path)
    except ValueError as exc:
        raise StartError(f"{path} is not valid JSON ({exc}); it is not overwritten -- fix or move it") from None


def write_run_start_files(plan: Plan, job_id: str | None, **extra: Any) -> dict[str, Any]:
    """Step 7: config.yaml and run.json, atomically; called only after every check passed."""
    cfg, splits = plan.cfg, plan.splits
    plan.paths.root.mkdir(parents=True, exist_ok=True)
    init_from = plan.init_from or (plan.previous_run or {}).get("init_from")
    if init_from:  # kept across requeues, which resume their own checkpoint instead
        extra.setdefault("init_from", init_from)
    rundir.atomic_write_text(plan.paths.config, config_mod.dump(cfg))
    # The sample set this start trains on: a later resume compares with it (step 5).
    ids = sampleset.split_ids(splits)
    sampleset.write_ids(plan.paths.samples, ids)
    extra.setdefault("data", sampleset.record(ids))
    extra.setdefault("data_source", data_source_record(cfg))
    extra.setdefault("eval_splits", eval_splits_record(splits))
    if splits.exclusion is not None:
        extra.setdefault("excluded_on_purpose", splits.exclusion)
    if plan.resume is not None:
        sampleset.reconcile_state(plan.paths.state, plan.resume.state)
    return rundir.write_run_start(
        plan.paths.run, plan.previous_run, experiment=cfg.runtime.experiment_name, job_id=job_id,
        image=jobenv.image(), code_version=code_version(),
        train_samples=len(splits.train), val_samples=len(splits.val), val_source=splits.val_source,
        holdout_seed=splits.holdout_seed, signature=signature(cfg), **extra)
