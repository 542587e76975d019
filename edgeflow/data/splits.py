"""From a config to the samples a run trains and evaluates on: the one place that picks the sources.

Light module. `sources_for(cfg)` decides where each split comes from (a FlyingChairs2 folder, or the
pack made from it: the only place that branches on `data.format`); `select_splits` turns the scans
into the training and evaluation sample lists, or refuses with the reason; `resolve_splits` does both
for the trainer and the commands after training, and the preflight (the launcher's gate) reports the
same steps split by split, so the two can never disagree about what a run would train on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from edgeflow import config as config_mod
from edgeflow.data.fc2 import FolderSource
from edgeflow.data.pack import PackSource
from edgeflow.data.samples import DataError, Sample, ScanOptions, Source, Splits, SplitScan
from edgeflow.data.stage import stage_pack


def folder_sources(cfg: config_mod.Config) -> list[FolderSource]:
    """The folders of a config's splits: train, and val unless the evaluation split is a holdout."""
    out = [FolderSource("train", cfg.data.train_dir, "data.train_dir")]
    if cfg.data.val_dir:
        out.append(FolderSource("val", cfg.data.val_dir, "data.val_dir"))
    return out


def sources_for(cfg: config_mod.Config, *, stage: bool = False) -> list[Source]:
    """Where each split of `cfg` is read from; with `stage`, a pack is first copied to node-local disk
    when data.stage_to_local asks for it (the trainer does; checks read the pack where it is)."""
    folders = folder_sources(cfg)
    if cfg.data.format != "packed":
        return list(folders)
    root = cfg.data.packed_dir
    if stage and cfg.data.stage_to_local:
        root = str(stage_pack(cfg.data.packed_dir, [f.split for f in folders]))
    size = (cfg.data.input_height, cfg.data.input_width)
    return [PackSource(f.split, root, f, size) for f in folders]


def scan_options(cfg: config_mod.Config, deep: bool | str = False,
                 progress: Callable[[int, int], None] | None = None) -> ScanOptions:
    """The ScanOptions of a config: `deep` False (headers only), True (decode everything) or a
    data.preflight_deep mode."""
    mode = "full" if deep is True else "headers" if deep is False else deep
    return ScanOptions(min_size=(cfg.data.input_height, cfg.data.input_width), deep=mode,
                       sample_size=cfg.data.preflight_sample, progress=progress)


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


def select_splits(cfg: config_mod.Config, train_scan: SplitScan, val_scan: SplitScan | None) -> Splits:
    """Turn scans into the train/eval sample lists, or raise DataError saying why training cannot start."""
    d = cfg.data
    if d.val_dir:
        if val_scan is None:
            raise DataError("data.val_dir is set but no scan of it was given")
        if config_mod.is_test_split_name(d.val_dir):
            raise DataError(f"evaluation folder {d.val_dir} is named like a test split; "
                            f"a test set is never used for selection")
        train, val, source, seed = list(train_scan.valid), list(val_scan.valid), "val_dir", None
        val_dir = val_scan.directory
    else:
        if config_mod.is_test_split_name(d.train_dir):
            raise DataError(f"the holdout would be carved from {d.train_dir}, which is named like a test split; "
                            f"a test set is never used for selection")
        if d.holdout_samples >= len(train_scan.valid):
            raise DataError(f"data.holdout_samples={d.holdout_samples} leaves no training samples: "
                            f"{train_scan.directory} has {len(train_scan.valid)} valid ({describe(train_scan)})")
        chosen = holdout_ids(train_scan.valid, d.holdout_samples, d.holdout_seed)
        train = [s for s in train_scan.valid if s.sample_id not in chosen]
        val = [s for s in train_scan.valid if s.sample_id in chosen]
        source, seed, val_dir = "holdout", d.holdout_seed, f"holdout of {train_scan.directory}"
    if not val:
        where = val_scan.directory if val_scan is not None else train_scan.directory
        described = describe(val_scan) if val_scan is not None else describe(train_scan)
        raise DataError(f"no valid validation samples in {where} ({described})")
    if len(train) < cfg.train.batch_size:
        raise DataError(f"only {len(train)} valid training samples in {train_scan.directory}, fewer than one batch "
                        f"(train.batch_size={cfg.train.batch_size}; {describe(train_scan)})")
    if len(val) < cfg.eval.batch_size:
        raise DataError(f"only {len(val)} valid validation samples in {val_dir}, fewer than one batch "
                        f"(eval.batch_size={cfg.eval.batch_size})")
    return Splits(train=train, val=val, val_source=source, holdout_seed=seed, train_scan=train_scan,
                  val_scan=val_scan if d.val_dir else None)


def excluded_files(*scans: SplitScan | None) -> list[tuple[str, str, str]]:
    """(path, kind, detail) of every file that made a sample invalid, in report order."""
    out = []
    for scan in scans:
        if scan is None:
            continue
        for kind, paths in scan.problems.items():
            out += [(path, kind, scan.details.get(path, "")) for path in paths]
    return out


def check_excluded(cfg: config_mod.Config, *scans: SplitScan | None) -> None:
    """Refuse more invalid samples than data.allow_excluded_samples lets go (DataError naming them).

    A pack's scans carry the problems of the folder it was made from, so a pack is held to the same
    limit as the folder."""
    invalid = sum(scan.invalid for scan in scans if scan is not None)
    allowed = cfg.data.allow_excluded_samples
    if invalid <= allowed:
        return
    files = excluded_files(*scans)
    shown = "; ".join(f"{path} ({kind})" for path, kind, _ in files[:3])
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    raise DataError(f"{invalid} invalid samples would be excluded, more than data.allow_excluded_samples="
                    f"{allowed}: {shown}{more}; fix or remove them, or set data.allow_excluded_samples={invalid} "
                    f"to train without them")


def resolve_splits(cfg: config_mod.Config, *, deep: bool | str = False, stage: bool = False) -> Splits:
    """Scan the config's splits and return them; DataError naming the folder (or pack) and the counts.

    Invalid samples are excluded and named in the scans; more of them than data.allow_excluded_samples
    is refused here, as the preflight refuses them."""
    scans: dict[str, SplitScan] = {}
    for source in sources_for(cfg, stage=stage):
        scans[source.split] = source.scan(scan_options(cfg, deep))
    splits = select_splits(cfg, scans["train"], scans.get("val"))
    check_excluded(cfg, splits.train_scan, splits.val_scan)
    return splits
