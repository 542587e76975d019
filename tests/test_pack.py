"""The decode-once pack on real demo samples: bit-identical batches to the PNG path, the manifest, the
command, and every refusal (stale, other source, other input size, truncated, corrupted, extra file,
empty val pack).

Packs made from the session's demo data are never modified; tests that break a pack or its source
work on their own small copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from edgeflow import config
from edgeflow.commands import pack as pack_cmd
from edgeflow.data import pack, packing, pipeline, stage
from edgeflow.data.preflight import run_preflight
from edgeflow.data.samples import DataError
from edgeflow.data.splits import resolve_splits

CROP = (48, 64)


def raw_cfg(data_dir: Path, packed_dir: Path | None = None, **data: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"train_dir": str(data_dir / "train"), "val_dir": str(data_dir / "val"),
                         "input_height": CROP[0], "input_width": CROP[1], **data}
    if packed_dir is not None:
        d.update(format="packed", packed_dir=str(packed_dir))
    return {"runtime": {"seed": 11}, "data": d, "train": {"batch_size": 5}, "eval": {"batch_size": 3}}


def make_cfg(data_dir: Path, packed_dir: Path | None = None, **data: Any) -> config.Config:
    return config.from_dict(raw_cfg(data_dir, packed_dir, **data))


def arrays(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), f.numpy()) for x, f in ds]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1])
                                    for p, q in zip(a, b, strict=True))


def copy_samples(src: Path, dst: Path, ids: range) -> None:
    dst.mkdir(parents=True)
    for i in ids:
        for part in ("img_0.png", "img_1.png", "flow_01.flo"):
            shutil.copy2(src / f"{i:07d}-{part}", dst / f"{i:07d}-{part}")


@pytest.fixture(scope="module")
def demo_pack(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_pack") / "pack"
    packing.pack_config(make_cfg(demo_data), out, show_progress=False, log=lambda _: None)
    return out


@pytest.fixture
def small(demo_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of 6 train + 4 val demo samples and its pack (free to break)."""
    data = tmp_path / "data"
    copy_samples(demo_data / "train", data / "train", range(6))
    copy_samples(demo_data / "val", data / "val", range(4))
    out = tmp_path / "pack"
    packing.pack_config(make_cfg(data), out, show_progress=False, log=lambda _: None)
    return data, out


def test_packed_batches_are_bit_identical_to_png(demo_data: Path, demo_pack: Path) -> None:
    png_cfg, packed_cfg = make_cfg(demo_data), make_cfg(demo_data, demo_pack)
    png, packed = resolve_splits(png_cfg), resolve_splits(packed_cfg)
    assert all(isinstance(s, pack.PackedSample) for s in packed.train + packed.val)
    assert [s.sample_id for s in packed.train] == [s.sample_id for s in png.train]
    for epoch in range(3):
        a = arrays(pipeline.train_dataset(png.train, png_cfg, epoch))
        b = arrays(pipeline.train_dataset(packed.train, packed_cfg, epoch))
        assert len(a) == 5 and same(a, b), f"epoch {epoch}"
        assert np.abs(b[0][1]).max() > 0 and not np.array_equal(b[0][0][0], b[0][0][1])
    # Mid-epoch resume: batches 2.. of epoch 1, read from the pack, are those of the PNG path.
    full = arrays(pipeline.train_dataset(png.train, png_cfg, 1))
    assert same(arrays(pipeline.train_dataset(packed.train, packed_cfg, 1, skip_batches=2)), full[2:])
    for samples_png, samples_packed in ((png.val, packed.val), (png.train, packed.train)):
        a = arrays(pipeline.eval_dataset(samples_png, png_cfg, batch_size=3, num_batches=2))
        b = arrays(pipeline.eval_dataset(samples_packed, packed_cfg, batch_size=3, num_batches=2, cache=True))
        assert len(a) == 2 and same(a, b)


def test_holdout_from_a_pack_is_the_holdout_of_the_folder(demo_data: Path, demo_pack: Path) -> None:
    png_cfg = make_cfg(demo_data, val_dir="", holdout_samples=4)
    packed_cfg = make_cfg(demo_data, demo_pack, val_dir="", holdout_samples=4)
    png, packed = resolve_splits(png_cfg), resolve_splits(packed_cfg)
    assert [s.sample_id for s in packed.val] == [s.sample_id for s in png.val] and len(packed.val) == 4
    assert same(arrays(pipeline.train_dataset(png.train, png_cfg, 0)),
                arrays(pipeline.train_dataset(packed.train, packed_cfg, 0)))


def test_manifest_records_source_ids_sizes_checksums_and_the_scan(demo_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    copy_samples(demo_data / "train", data / "train", range(5))
    copy_samples(demo_data / "val", data / "val", range(2))
    os.remove(data / "train/0000001-flow_01.flo")  # invalid by the scan: not packed
    broken = data / "train/0000003-img_1.png"  # a valid header but undecodable: found while packing
    raw = broken.read_bytes()
    broken.write_bytes(raw[:33] + b"\x00\xff" * ((len(raw) - 45) // 2) + raw[-12:])
    results = packing.pack_config(make_cfg(data), tmp_path / "pack", show_progress=False, log=lambda _: None)
    assert [(r.split, r.found, r.packed, r.excluded) for r in results] == [("train", 5, 3, 2), ("val", 2, 2, 0)]
    manifest = json.loads((tmp_path / "pack/train/manifest.json").read_text())
    assert manifest["source"] == str(data / "train") and manifest["input_size"] == list(CROP)
    assert [e["id"] for e in manifest["samples"]] == ["0000000", "0000002", "0000004"]
    scan = manifest["scan"]
    assert scan["found"] == 5 and scan["valid"] == 3
    assert scan["problems"]["missing_flow"] == [str(data / "train/0000001-flow_01.flo")]
    assert scan["problems"]["undecodable_png"] == [str(broken)]
    assert "0000000-img_0.png" in scan["files"] and "0000001-flow_01.flo" not in scan["files"]
    for entry in manifest["samples"]:
        record = tmp_path / "pack/train/records" / f"{entry['id']}.rec"
        assert (entry["height"], entry["width"]) == (384, 512)
        assert entry["bytes"] == record.stat().st_size == 384 * 512 * 14 + pack.HEADER_BYTES
        assert entry["sha256"] == hashlib.sha256(record.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "pack/train/records").iterdir()) == [
        "0000000.rec", "0000002.rec", "0000004.rec"]
    assert [p.name for p in tmp_path.glob("pack/.*")] == [os.readlink(tmp_path / "pack/train")] or \
        sorted(p.name for p in tmp_path.glob("pack/.*")) == sorted(os.readlink(tmp_path / f"pack/{s}")
                                                                  for s in ("train", "val"))  # versions only


def test_pack_command(demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    copy_samples(demo_data / "train", data / "train", range(3))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps(raw_cfg(data, val_dir="", holdout_samples=1)))
    assert pack_cmd.main(["--config", str(cfg_path), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    assert "pack train: 3 of 3 samples" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "p").iterdir() if not p.name.startswith(".")) == ["train"]
    assert pack_cmd.main(["--config", str(cfg_path), "--no-progress"]) == 2  # no --out, no data.packed_dir
    assert "pass --out DIR or set data.packed_dir" in capsys.readouterr().err
    assert pack_cmd.main(["--config", str(cfg_path), "--out", str(tmp_path / "p"), "--split", "val"]) == 4
    assert "no val split to pack" in capsys.readouterr().err
    missing = ["--config", str(cfg_path), "--set", f"data.train_dir={tmp_path / 'nope'}", "--out", str(tmp_path / "q")]
    assert pack_cmd.main(missing) == 4
    assert f"data folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_packing_again_replaces_the_pack_whole(small: tuple[Path, Path]) -> None:
    data, out = small
    os.remove(data / "train/0000005-img_0.png")
    before = (out / "val/manifest.json").read_bytes()
    with pytest.raises(DataError, match="is stale"):
        resolve_splits(make_cfg(data, out))
    packing.pack_config(make_cfg(data), out, split="train", show_progress=False, log=lambda _: None)
    # The pack carries the folder's problems: held to data.allow_excluded_samples like the folder.
    with pytest.raises(DataError, match="1 invalid samples would be excluded, more than data.allow_excluded"):
        resolve_splits(make_cfg(data, out))
    splits = resolve_splits(make_cfg(data, out, allow_excluded_samples=1))
    assert len(splits.train) == 5 and not (out / "train/records/0000005.rec").exists()
    assert (out / "val/manifest.json").read_bytes() == before  # --split train leaves val alone
    # No temporary or old folder left: the two links and the two versions they point to.
    assert sorted(p.name for p in out.iterdir()) == sorted(["train", "val", os.readlink(out / "train"),
                                                            os.readlink(out / "val")])


def test_preflight_reports_a_good_pack(small: tuple[Path, Path]) -> None:
    data, out = small
    report = run_preflight(make_cfg(data, out), deep=True)
    assert report.ok, report.reason
    assert report.reason.startswith("6 training and 4 validation samples")
    text = report.to_text()
    assert "deep: every record checksummed" in text and f"{out / 'train'} (pack of {data / 'train'})" in text


def test_stale_pack_is_refused_with_the_reason(small: tuple[Path, Path]) -> None:
    data, out = small
    flow = data / "train/0000002-flow_01.flo"
    os.utime(flow, ns=(flow.stat().st_atime_ns, flow.stat().st_mtime_ns + 10**9))
    shutil.copy2(data / "train/0000000-img_0.png", data / "train/0000009-img_0.png")
    report = run_preflight(make_cfg(data, out))
    assert not report.ok
    assert f"pack {out / 'train'} is stale: its source {data / 'train'} changed since packing" in report.reason
    assert "1 new, e.g. 0000009-img_0.png" in report.reason
    assert "1 changed (size or time), e.g. 0000002-flow_01.flo" in report.reason
    with pytest.raises(DataError, match="is stale"):
        resolve_splits(make_cfg(data, out))


def test_pack_of_another_source_or_input_size_is_refused(small: tuple[Path, Path], demo_data: Path) -> None:
    data, out = small
    other = make_cfg(data, out)
    other.data.train_dir = str(demo_data / "train")
    with pytest.raises(DataError, match=f"was made from {data / 'train'}, but data.train_dir is {demo_data / 'train'}"):
        resolve_splits(other)
    bigger = make_cfg(data, out, input_height=96, input_width=128)
    report = run_preflight(bigger)
    assert not report.ok and "made for a 48x64 input, the config asks 96x128" in report.reason
    # A smaller crop selects the same samples (none was too small): allowed, and reads the same crops.
    smaller_png, smaller = make_cfg(data, input_height=32, input_width=48), make_cfg(data, out, input_height=32,
                                                                                    input_width=48)
    a = arrays(pipeline.train_dataset(resolve_splits(smaller_png).train, smaller_png, 0))
    b = arrays(pipeline.train_dataset(resolve_splits(smaller).train, smaller, 0))
    assert a[0][0].shape == (5, 32, 48, 6) and same(a, b)


def test_truncated_missing_or_extra_record_is_an_error_naming_the_file(small: tuple[Path, Path]) -> None:
    data, out = small
    record = out / "train/records/0000004.rec"
    good = record.read_bytes()
    record.write_bytes(good[:-100])
    with pytest.raises(DataError, match=f"{record}: {len(good) - 100} bytes, the manifest says {len(good)}"):
        resolve_splits(make_cfg(data, out))
    record.unlink()
    with pytest.raises(DataError, match=f"{record}: cannot read"):
        resolve_splits(make_cfg(data, out))
    record.write_bytes(good)
    extra = out / "val/records/0000077.rec"
    extra.write_bytes(b"x")
    report = run_preflight(make_cfg(data, out))
    assert not report.ok and f"{extra}: not in the manifest" in report.reason
    extra.unlink()
    manifest = out / "val/manifest.json"
    manifest.write_text(manifest.read_text()[:-20])
    with pytest.raises(DataError, match=f"pack {manifest}: cannot be read as JSON"):
        resolve_splits(make_cfg(data, out))


def test_corrupted_record_is_refused_by_deep_preflight_and_stops_training(small: tuple[Path, Path]) -> None:
    data, out = small
    cfg = make_cfg(data, out)
    splits = resolve_splits(cfg)
    victim = next(s for s in splits.train if s.sample_id == "0000003")
    assert isinstance(victim, pack.PackedSample)
    raw = bytearray(Path(victim.record).read_bytes())
    raw[1000] ^= 0xFF  # one pixel byte: same size, would train on a wrong pixel silently
    Path(victim.record).write_bytes(bytes(raw))
    assert run_preflight(cfg).ok  # sizes alone cannot see it
    report = run_preflight(cfg, deep=True)
    assert not report.ok and f"{victim.record}: sha256" in report.reason and "corrupted" in report.reason
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in pipeline.train_dataset(splits.train, cfg, 0):
            pass
    assert pipeline.is_data_error(info.value)
    assert "training sample 0000003 (position" in str(info.value)
    assert f"{victim.record}: contents differ from its manifest entry" in str(info.value)


def test_empty_val_pack_is_refused_like_an_empty_val_folder(demo_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    copy_samples(demo_data / "train", data / "train", range(4))
    copy_samples(demo_data / "val", data / "val", range(2))
    for i in range(2):
        os.remove(data / f"val/{i:07d}-img_1.png")
    cfg = make_cfg(data)
    cfg.train.batch_size = 2
    packing.pack_config(cfg, tmp_path / "pack", show_progress=False, log=lambda _: None)
    packed = copy.deepcopy(cfg)
    packed.data.format, packed.data.packed_dir = "packed", str(tmp_path / "pack")
    png_report, packed_report = run_preflight(cfg), run_preflight(packed)
    assert not png_report.ok and not packed_report.ok
    assert packed_report.reason == png_report.reason
    assert packed_report.reason.startswith(f"no valid validation samples in {data / 'val'} (found 2 samples, 2 invalid")


def test_data_format_keys_are_checked() -> None:
    with pytest.raises(config.ConfigError, match="data.format: must be 'png' or 'packed'"):
        config.from_dict({"data": {"format": "tfrecord"}})
    with pytest.raises(config.ConfigError, match="data.packed_dir: must name the pack's folder"):
        config.from_dict({"data": {"format": "packed"}})
    with pytest.raises(config.ConfigError, match="data.stage_to_local: stages a pack"):
        config.from_dict({"data": {"stage_to_local": True}})


def test_stage_to_local_copies_across_file_systems_and_reuses_the_copy(
        small: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = small
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == out.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to stage to")
    node = shm / f"edgeflow-test-{os.getpid()}"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir()
    try:
        monkeypatch.delenv("SLURM_TMPDIR", raising=False)
        monkeypatch.setenv("TMPDIR", str(node))
        cfg = make_cfg(data, out, stage_to_local=True)
        splits = resolve_splits(cfg, stage=True)
        assert "copied to" in capsys.readouterr().out
        record = Path(splits.train[0].record)
        assert node in record.parents and record.stat().st_nlink == 1
        for split in ("train", "val"):
            local = pack.open_pack(record.parents[2] / split, deep=True)  # every checksum of the copy
            assert len(local.samples) == (6 if split == "train" else 4)
        direct = make_cfg(data, out)
        assert same(arrays(pipeline.train_dataset(splits.train, cfg, 0)),
                    arrays(pipeline.train_dataset(resolve_splits(direct).train, direct, 0)))
        resolve_splits(cfg, stage=True)  # a requeued job on the same node
        assert capsys.readouterr().out.count("reused") == 2
    finally:
        shutil.rmtree(node, ignore_errors=True)


def test_stage_to_local_hard_links_on_the_same_file_system(small: tuple[Path, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = small
    monkeypatch.setenv("SLURM_TMPDIR", str(tmp_path / "node"))
    (tmp_path / "node").mkdir()
    root = stage.stage_pack(str(out), ["train", "val"])
    staged = root / "train/records/0000000.rec"
    assert staged.stat().st_ino == (out / "train/records/0000000.rec").stat().st_ino
    assert tmp_path / "node" in staged.parents


def test_stage_to_local_refusals(small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = small
    cfg = make_cfg(data, out, stage_to_local=True)
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    with pytest.raises(DataError, match="neither SLURM_TMPDIR nor TMPDIR is set"):
        resolve_splits(cfg, stage=True)
    with pytest.raises(DataError, match=r"the pack needs 5.00 GB but /scratch/x \(\$TMPDIR\) has 4.00 GB free"):
        stage.check_fits(5 * 10**9, 4 * 10**9, 100 * 10**9, Path("/scratch/x"), "TMPDIR")
    with pytest.raises(DataError, match="keeping 2.00 GB in reserve"):  # fits, but not with the reserve
        stage.check_fits(5 * 10**9, 6 * 10**9, 100 * 10**9, Path("/scratch/x"), "TMPDIR")
    stage.check_fits(5 * 10**9, 8 * 10**9, 100 * 10**9, Path("/scratch/x"), "TMPDIR")
    record = out / "val/records/0000001.rec"
    record.write_bytes(record.read_bytes()[:10])
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node"))
    (tmp_path / "node").mkdir()
    with pytest.raises(DataError, match=f"{record}: 10 bytes"):
        resolve_splits(cfg, stage=True)
    assert not list((tmp_path / "node").rglob("*.rec"))  # nothing staged from a broken pack


def test_preflight_of_a_pack_imports_no_tensorflow(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = small
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps(raw_cfg(data, out)))
    code = ("import sys; from edgeflow.commands import preflight; "
            f"rc = preflight.main(['--config', {str(cfg_path)!r}, '--deep']); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'cv2')); "
            "print('imported:', bad); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported: []" in proc.stdout and "preflight: OK: 6 training and 4 validation samples" in proc.stdout


def test_pack_never_replaces_a_folder_it_did_not_make(demo_data: Path, tmp_path: Path) -> None:
    # FlyingChairs2's own layout: --out at the folder that holds train/ and val/ must not touch them.
    data = tmp_path / "FlyingChairs2"
    copy_samples(demo_data / "train", data / "train", range(3))
    copy_samples(demo_data / "val", data / "val", range(2))
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(json.dumps(raw_cfg(data)))
    for out in (data, data / "train", data / "train" / "packs"):
        assert pack_cmd.main(["--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 4
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before
    # Any folder that is not a pack edgeflow made is refused too, and kept as it was.
    someone = tmp_path / "elsewhere"
    (someone / "val").mkdir(parents=True)
    (someone / "val" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a pack made by edgeflow"):
        packing.pack_config(make_cfg(data), someone, show_progress=False, log=lambda _: None)
    assert (someone / "val" / "notes.txt").read_text() == "mine" and not (someone / "train").exists()


def test_manifest_size_of_the_same_product_is_refused(small: tuple[Path, Path]) -> None:
    # Height and width swapped for (h', w') with the same product: same length and fingerprint, so only
    # the size in the record's header can tell; it must, or training runs on scrambled pixels.
    data, out = small
    manifest_path = out / "train/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["samples"][2]
    entry["height"], entry["width"] = entry["height"] * 2, entry["width"] // 2
    manifest_path.write_text(json.dumps(manifest))
    cfg = make_cfg(data, out)
    with pytest.raises(DataError, match="its header does not match the manifest entry"):
        resolve_splits(cfg)
    report = run_preflight(cfg, deep=True)
    assert not report.ok and "its header does not match the manifest entry" in report.reason
    # The per-read check catches it too (a manifest changed after the start's checks).
    samples = [pack.PackedSample(**{**s.__dict__}) for s in pack.open_pack(out / "val").samples]
    victim = pack._samples_of(out / "train", manifest)[2]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        for _ in pipeline.eval_dataset([victim, *samples[1:]], cfg, batch_size=2, num_batches=2):
            pass
    assert pipeline.is_data_error(info.value) and "its header does not match" in str(info.value)


def test_a_killed_pack_leaves_a_whole_pack_and_the_next_pack_cleans_up(small: tuple[Path, Path]) -> None:
    data, out = small
    cfg = make_cfg(data, out)
    before = resolve_splits(cfg)
    # A packer killed while writing: its temporary folder (dead pid) stays until the next pack.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    from edgeflow.rundir import writers

    leftover = out / f".train.pack-{writers.host()}-{dead}-0123456789ab"
    (leftover / "records").mkdir(parents=True)
    (leftover / "records/0000000.rec").write_bytes(b"x" * 1000)
    # Killed after the new version was renamed into place but before the link moved: the old one is visible.
    orphan = out / f".train.pack-{writers.host()}-{dead}-killedswap00"
    shutil.copytree(out / "train", orphan, symlinks=True)
    assert [s.sample_id for s in resolve_splits(cfg).train] == [s.sample_id for s in before.train]
    # Killed between the two renames of an older (unlinked) pack: preflight says what happened.
    link_target = os.readlink(out / "val")
    (out / "val").unlink()
    report = run_preflight(cfg)
    assert not report.ok and "a replacement was interrupted" in report.reason and link_target in report.reason
    os.symlink(link_target, out / "val")
    packing.pack_config(cfg, out, show_progress=False, log=lambda _: None)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["train", "val", os.readlink(out / "train"), os.readlink(out / "val")])
    assert resolve_splits(cfg).train[0].sample_id == before.train[0].sample_id
