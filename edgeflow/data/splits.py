"""From a config to the samples a run trains and evaluates on: the one place that picks the sources.

Light module. `origin_sources(cfg)` decides where each split's samples are (a FlyingChairs2 folder,
FlyingThings3D or MPI-Sintel under their top folder: the only place that branches on `data.dataset`
and on an evaluation split's data set); `sources_for(cfg)` reads each from its pack instead when
`data.format` is `packed` (the only place that branches on that); `select_splits` turns the scans into
the training sample list and the evaluation splits, or refuses with the reason; `resolve_splits` does
both for the trainer and the commands after training, and the preflight (the launcher's gate) reports
the same steps split by split, so the two can never disagree about what a run would train on.

The splits of a run: "train" (data.dataset's training samples); "val", the run's own evaluation split
(FC2: data.val_dir, or a holdout of the training samples; FT3D and Sintel: a holdout); and one per
name of eval.splits. Early stopping and the best checkpoint follow eval.select_on; its samples are
`Splits.val`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from edgeflow import config as config_mod
from edgeflow.config import BUILTIN_SPLIT, Config, SplitConfig, split_root, split_size, split_subset
from edgeflow.data import exclude
from edgeflow.data.fc2 import FolderSource
from edgeflow.data.ft3d import Ft3dSelection, Ft3dSource
from edgeflow.data.pack import PackSource
from edgeflow.data.samples import DataError, DataSource, EvalSplit, Sample, ScanOptions, Source, Splits, SplitScan
from edgeflow.data.sintel import SintelSource
from edgeflow.data.stage import stage_pack


def train_source(cfg: Config) -> DataSource:
    """Where the training samples are: data.dataset's training part."""
    d = cfg.data
    if d.dataset == "ft3d":
        return Ft3dSource("train", d.root, ft3d_selection(cfg, "TRAIN", tuple(d.ft3d_passes)))
    if d.dataset == "sintel":
        return SintelSource("train", d.root, d.sintel_pass)
    return FolderSource("train", d.train_dir, "data.train_dir")


def ft3d_selection(cfg: Config, part: str, passes: tuple[str, ...]) -> Ft3dSelection:
    d = cfg.data
    return Ft3dSelection(part=part, passes=passes, directions=tuple(d.ft3d_directions),
                         cameras=tuple(d.ft3d_cameras), flow_divisor=d.ft3d_flow_divisor)


def eval_source(cfg: Config, name: str, spec: SplitConfig) -> DataSource:
    """Where the samples of the evaluation split `name` of eval.splits are."""
    root, subset = split_root(cfg, spec), split_subset(spec)
    key = f"eval.splits.{name}.root" if spec.root else ("data.val_dir" if spec.dataset == "fc2" else "data.root")
    if spec.dataset == "ft3d":
        return Ft3dSource(name, root, ft3d_selection(cfg, "TEST", (subset,)), key)
    if spec.dataset == "sintel":
        return SintelSource(name, root, subset, key)
    return FolderSource(name, root, key)


def origin_sources(cfg: Config) -> list[DataSource]:
    """The sources of every split of `cfg`, as the data set keeps them: train; val unless the run's own
    evaluation split is a holdout (or there is none); each evaluation split of eval.splits."""
    out: list[DataSource] = [train_source(cfg)]
    if cfg.data.dataset == "fc2" and cfg.data.val_dir:
        out.append(FolderSource(BUILTIN_SPLIT, cfg.data.val_dir, "data.val_dir"))
    out += [eval_source(cfg, name, spec) for name, spec in cfg.eval.splits.items()]
    return out


# The name the pack command and older callers know these by.
folder_sources = origin_sources


def split_sizes(cfg: Config) -> dict[str, tuple[int, int]]:
    """The crop each split's samples must hold: the input size, or an evaluation split's own size."""
    size = (cfg.data.input_height, cfg.data.input_width)
    out = {"train": size, BUILTIN_SPLIT: size}
    out.update({name: split_size(cfg, spec) for name, spec in cfg.eval.splits.items()})
    return out


def sources_for(cfg: Config, *, stage: bool = False) -> list[Source]:
    """Where each split of `cfg` is read from; with `stage`, a pack is first copied to node-local disk
    when data.stage_to_local asks for it (the trainer does; checks read the pack where it is)."""
    origins = origin_sources(cfg)
    if cfg.data.format != "packed":
        return list(origins)
    root = cfg.data.packed_dir
    if stage and cfg.data.stage_to_local:
        root = str(stage_pack(cfg.data.packed_dir, [o.split for o in origins]))
    sizes = split_sizes(cfg)
    digest = exclusion_digest(cfg)
    return [PackSource(o.split, root, o, sizes[o.split], exclusion=digest) for o in origins]


def data_source_record(cfg: Config) -> dict[str, Any]:
    """What the training samples are (data set, which of its samples, the flow divisor): run.json keeps it."""
    source = train_source(cfg)
    record = dict(source.record())
    record["location"] = os.path.abspath(source.location)
    return record


def eval_splits_record(splits: Splits) -> dict[str, Any]:
    """Every evaluation split as run.json keeps it: samples, crop, batches, what it is; which is selected on."""
    return {"select_on": splits.select_on,
            "splits": {name: {"samples": len(s.samples), "size": list(s.size), "batches": s.batches, "where": s.where,
                              **s.record} for name, s in splits.evals.items()}}


def exclude_listing(cfg: Config) -> exclude.ExcludeList | None:
    return exclude.read_exclude_list(cfg.data.exclude_list) if cfg.data.exclude_list else None


def exclusion_digest(cfg: Config) -> str:
    """The sha256 of data.exclude_list ("" without one): a pack is made for one list."""
    listing = exclude_listing(cfg)
    return listing.sha256 if listing is not None else ""


def scan_options(cfg: Config, deep: bool | str = False, progress: Callable[[int, int], None] | None = None, *,
                 split: str = "train") -> ScanOptions:
    """The ScanOptions of a config for one split: `deep` False (headers only), True (decode everything)
    or a data.preflight_deep mode; the crop its samples must hold; data.exclude_list's entries."""
    mode = "full" if deep is True else "headers" if deep is False else deep
    listing = exclude_listing(cfg)
    return ScanOptions(min_size=split_sizes(cfg).get(split, (cfg.data.input_height, cfg.data.input_width)),
                       deep=mode, sample_size=cfg.data.preflight_sample, progress=progress,
                       exclude=listing.patterns if listing is not None else frozenset())


def holdout_ids(samples: Iterable[Sample], count: int, seed: int) -> set[str]:
    """The ids of a fixed holdout: the `count` samples whose sha256(seed:id) sorts first.

    Hashing (not an RNG stream) keeps the choice identical across Python/NumPy versions and machines,
    and a sample's membership does not depend on which other samples happen to be valid.
    """
    ranked = sorted(samples, key=lambda s: hashlib.sha256(f"{seed}:{s.sample_id}".encode()).digest())
    return {s.sample_id for s in ranked[:count]}


def describe(scan: SplitScan) -> str:
    if not scan.problems:
        return f"found {scan.found} samples"
    kinds = ", ".join(f"{len(paths)} {kind}" for kind, paths in scan.problems.items())
    return f"found {scan.found} samples, {scan.invalid} invalid: {kinds}"


def _builtin(cfg: Config, train_scan: SplitScan,
             val_scan: SplitScan | None) -> tuple[list[Sample], list[Sample], str, int | None, str] | None:
    """(train, val, val_source, holdout_seed, where) of the run's own evaluation split, or None."""
    d = cfg.data
    if d.dataset == "fc2" and d.val_dir:
        if val_scan is None:
            raise DataError("data.val_dir is set but no scan of it was given")
        if config_mod.is_test_split_name(d.val_dir):
            raise DataError(f"evaluation folder {d.val_dir} is named like a test split; "
                            f"a test set is never used for selection")
        return list(train_scan.valid), list(val_scan.valid), "val_dir", None, val_scan.directory
    if d.holdout_samples <= 0:
        return None
    if d.dataset == "fc2" and config_mod.is_test_split_name(d.train_dir):
        raise DataError(f"the holdout would be carved from {d.train_dir}, which is named like a test split; "
                        f"a test set is never used for selection")
    if d.holdout_samples >= len(train_scan.valid):
        raise DataError(f"data.holdout_samples={d.holdout_samples} leaves no training samples: "
                        f"{train_scan.directory} has {len(train_scan.valid)} valid ({describe(train_scan)})")
    chosen = holdout_ids(train_scan.valid, d.holdout_samples, d.holdout_seed)
    train = [s for s in train_scan.valid if s.sample_id not in chosen]
    val = [s for s in train_scan.valid if s.sample_id in chosen]
    return train, val, "holdout", d.holdout_seed, f"holdout of {train_scan.directory}"


def _split_record(cfg: Config, name: str, spec: SplitConfig | None, source: str = "") -> dict[str, Any]:
    if spec is None:
        d = cfg.data
        rec: dict[str, Any] = {"dataset": d.dataset, "source": source}
        if d.dataset == "ft3d":
            rec.update(ft3d_selection(cfg, "TRAIN", tuple(d.ft3d_passes)).record(), holdout=True)
        elif d.dataset == "sintel":
            rec.update({"part": "training", "pass": d.sintel_pass, "holdout": True})
        return rec
    rec = {"dataset": spec.dataset, "subset": split_subset(spec)}
    if spec.dataset == "ft3d":
        rec.update(ft3d_selection(cfg, "TEST", (split_subset(spec),)).record())
    return rec


def select_splits(cfg: Config, train_scan: SplitScan, val_scan: SplitScan | None,
                  eval_scans: dict[str, SplitScan] | None = None) -> Splits:
    """Turn scans into the training samples and the evaluation splits, or raise DataError saying why
    training cannot start."""
    eval_scans = dict(eval_scans or {})
    e = cfg.eval
    builtin = _builtin(cfg, train_scan, val_scan)
    train = builtin[0] if builtin is not None else list(train_scan.valid)
    evals: dict[str, EvalSplit] = {}
    wheres: dict[str, tuple[str, str]] = {}  # name -> (folder, described scan) for messages
    if builtin is not None:
        _, val, source, seed, where = builtin
        evals[BUILTIN_SPLIT] = EvalSplit(BUILTIN_SPLIT, val, (cfg.data.input_height, cfg.data.input_width),
                                         e.eval_batches_per_arch, where,
                                         _split_record(cfg, BUILTIN_SPLIT, None, source))
        scan = val_scan if val_scan is not None else train_scan
        wheres[BUILTIN_SPLIT] = (scan.directory, describe(scan))
    for name, spec in e.splits.items():
        if name not in eval_scans:
            raise DataError(f"eval.splits.{name} is set but no scan of it was given")
        scan = eval_scans[name]
        evals[name] = EvalSplit(name, list(scan.valid), split_size(cfg, spec), spec.batches, scan.directory,
                                _split_record(cfg, name, spec))
        wheres[name] = (scan.directory, describe(scan))
    for name, split in evals.items():
        if not split.samples:
            what = "validation" if name == BUILTIN_SPLIT else f"evaluation split {name}:"
            raise DataError(f"no valid {what} samples in {wheres[name][0]} ({wheres[name][1]})")
    if len(train) < cfg.train.batch_size:
        raise DataError(f"only {len(train)} valid training samples in {train_scan.directory}, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size}; {describe(train_scan)})")
    for name, split in evals.items():
        if len(split.samples) < e.batch_size:
            what = "validation" if name == BUILTIN_SPLIT else f"evaluation split {name}:"
            raise DataError(f"only {len(split.samples)} valid {what} samples in {split.where}, fewer than one batch "
                            f"(eval.batch_size={e.batch_size})")
    selected = evals[e.select_on]
    if builtin is not None and e.select_on == BUILTIN_SPLIT:
        val_source, seed = builtin[2], builtin[3]
    else:
        val_source, seed = e.select_on, (builtin[3] if builtin is not None else None)
    own_folder = builtin is not None and builtin[2] == "val_dir"
    return Splits(train=train, val=selected.samples, val_source=val_source, holdout_seed=seed, train_scan=train_scan,
                  val_scan=val_scan if own_folder else None, evals=evals, select_on=e.select_on,
                  eval_scans=eval_scans)


def excluded_files(*scans: SplitScan | None) -> list[tuple[str, str, str]]:
    """(path, kind, detail) of every file that made a sample invalid (or left it out on purpose)."""
    out = []
    for scan in scans:
        if scan is None:
            continue
        for kind, paths in scan.problems.items():
            out += [(path, kind, scan.details.get(path, "")) for path in paths]
    return out


def check_excluded(cfg: Config, *scans: SplitScan | None) -> None:
    """Refuse more invalid samples than data.allow_excluded_samples lets go (DataError naming them);
    samples left out on purpose (data.exclude_list) do not count.

    A pack's scans carry the problems of the folder it was made from, so a pack is held to the same
    limit as the folder."""
    invalid = sum(scan.broken for scan in scans if scan is not None)
    allowed = cfg.data.allow_excluded_samples
    if invalid <= allowed:
        return
    files = [f for f in excluded_files(*scans) if f[1] != "excluded_by_list"]
    shown = "; ".join(f"{path} ({kind})" for path, kind, _ in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    raise DataError(f"{invalid} invalid samples would be excluded, more than data.allow_excluded_samples="
                    f"{allowed}: {shown}{more}; fix or remove them, list them in data.exclude_list, or set "
                    f"data.allow_excluded_samples={invalid} to train without them")


def exclusion_record(cfg: Config, scans: dict[str, SplitScan]) -> dict[str, Any] | None:
    """What the run records about data.exclude_list (None without one)."""
    listing = exclude_listing(cfg)
    if listing is None:
        return None
    roots = [cfg.data.root, cfg.data.train_dir, cfg.data.val_dir,
             *(split_root(cfg, spec) for spec in cfg.eval.splits.values())]
    return exclude.record(listing, scans, [r for r in roots if r and os.path.isdir(r)])


def scan_all(cfg: Config, *, deep: bool | str = False, stage: bool = False) -> dict[str, SplitScan]:
    """Every split's scan, by name."""
    return {source.split: source.scan(scan_options(cfg, deep, split=source.split))
            for source in sources_for(cfg, stage=stage)}


def splits_of(cfg: Config, scans: dict[str, SplitScan]) -> Splits:
    """The Splits of a config from its scans (select_splits), held to data.allow_excluded_samples."""
    named = {name: scans[name] for name in cfg.eval.splits if name in scans}
    splits = select_splits(cfg, scans["train"], scans.get(BUILTIN_SPLIT), named)
    check_excluded(cfg, *scans.values())
    splits.exclusion = exclusion_record(cfg, scans)
    return splits


def resolve_splits(cfg: Config, *, deep: bool | str = False, stage: bool = False) -> Splits:
    """Scan the config's splits and return them; DataError naming the folder (or pack) and the counts.

    Invalid samples are excluded and named in the scans; more of them than data.allow_excluded_samples
    is refused here, as the preflight refuses them."""
    return splits_of(cfg, scan_all(cfg, deep=deep, stage=stage))
