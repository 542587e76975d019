"""Stage a pack to node-local storage before training (data.stage_to_local). Light: no TensorFlow.

On a shared file system (Lustre, GPFS, NFS) every epoch reading tens of GB from it loads the storage
every user shares; a copy on the node's own disk ($SLURM_TMPDIR, else $TMPDIR) is read at local speed
and from the page cache. The copy is checked against the pack's manifest, made in a temporary folder
and renamed, and reused when a requeued job lands on the same node again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgeflow import jobenv
from edgeflow.data.pack import MANIFEST, RECORDS, Pack, open_pack, split_dir
from edgeflow.data.samples import DataError

# Room left free beside the copy: a full node-local disk breaks other jobs and the trainer's own temp files.
RESERVE_FRACTION = 0.02
_COPY_WORKERS = 8


def local_root() -> tuple[Path, str]:
    """The node-local folder and the variable that named it."""
    found = jobenv.node_local_dir()
    if found is not None:
        return found
    raise DataError("data.stage_to_local is true but neither SLURM_TMPDIR nor TMPDIR is set: "
                    "no node-local storage to stage the pack to")


def check_fits(need: int, free: int, total: int, where: Path, variable: str) -> None:
    """Raise DataError when `need` bytes do not fit in `free` with the reserve kept."""
    reserve = int(total * RESERVE_FRACTION)
    if need + reserve > free:
        raise DataError(f"data.stage_to_local: the pack needs {need / 1e9:.2f} GB but {where} (${variable}) has "
                        f"{free / 1e9:.2f} GB free (keeping {reserve / 1e9:.2f} GB in reserve): it does not fit; "
                        f"ask for more node-local disk or set data.stage_to_local: false")


def _same_copy(pack: Pack, target: Path) -> bool:
    """A previous staging of this very pack (same manifest bytes), complete."""
    try:
        if (target / MANIFEST).read_bytes() != (pack.directory / MANIFEST).read_bytes():
            return False
        open_pack(target)
    except (OSError, DataError):
        return False
    return True


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # e.g. a file system without hard links: copy instead
    shutil.copyfile(src, dst)


def _stage_split(pack: Pack, target: Path, variable: str) -> str:
    if _same_copy(pack, target):
        return "reused"
    target.parent.mkdir(parents=True, exist_ok=True)
    link = os.stat(pack.directory).st_dev == os.stat(target.parent).st_dev
    if not link:
        usage = shutil.disk_usage(target.parent)
        check_fits(pack.bytes, usage.free, usage.total, target.parent, variable)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / RECORDS).mkdir(parents=True)
    try:
        with ThreadPoolExecutor(max_workers=_COPY_WORKERS) as pool:
            list(pool.map(lambda s: _link_or_copy(Path(s.record), tmp / RECORDS / Path(s.record).name, link),
                          pack.samples))
        shutil.copyfile(pack.directory / MANIFEST, tmp / MANIFEST)
        open_pack(tmp)  # sizes and the file list; the records were read from a checked pack
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "hard-linked" if link else "copied"


def stage_pack(packed_dir: str, splits: list[str]) -> Path:
    """Copy (or hard-link, on the same file system) the splits of the pack at `packed_dir` to
    node-local storage and return the local root to read them from. DataError when there is no
    node-local folder, the pack is broken, or it does not fit."""
    root, variable = local_root()
    source = Path(packed_dir).resolve()
    key = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    local = root / "edgeflow-packs" / f"{source.name}-{key}"
    packs = [open_pack(split_dir(source, split), split=split) for split in splits]  # all before any copy
    for pack in packs:
        split = pack.manifest["split"]
        how = _stage_split(pack, split_dir(local, split), variable)
        print(f"data: pack {pack.directory} {how} to {split_dir(local, split)} "
              f"({len(pack.samples)} samples, {pack.bytes / 1e9:.2f} GB)", flush=True)
    return local
