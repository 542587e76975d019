"""Folder scan and split resolution on real files: every kind of bad sample is built on disk."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeflow import config
from edgeflow.data.demo import write_sample
from edgeflow.data.fc2 import scan_split
from edgeflow.data.flo import write_flo
from edgeflow.data.samples import DataError, Sample, ScanOptions
from edgeflow.data.splits import holdout_ids, resolve_splits, select_splits

H, W = 24, 32


@pytest.fixture
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pytest's own tmp_path contains the test's name ("test_..."), which reads as a test split.
    return tmp_path_factory.mktemp("data")


def make_samples(directory: Path, ids, h: int = H, w: int = W) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        write_sample(directory, i, img, img[::-1].copy(), np.full((h, w, 2), float(i), np.float32))


def path(directory: Path, i: int, part: str) -> Path:
    return directory / f"{i:07d}-{part}"


def cfg_for(train: Path, val: Path | None, **data) -> config.Config:
    raw = {"data": {"train_dir": str(train), "val_dir": str(val) if val else "", "input_height": 16,
                    "input_width": 16, **data}, "train": {"batch_size": 2}, "eval": {"batch_size": 2}}
    return config.from_dict(raw)


def test_finds_valid_samples_sorted_and_ignores_other_files(tmp_path) -> None:
    make_samples(tmp_path, [10, 2, 1, 100])
    for name in ("0000001-flow_10.flo", "0000001-occ_0.png", "README.txt", "0000003-mb_0.png"):
        (tmp_path / name).write_bytes(b"x")
    scan = scan_split(tmp_path, ScanOptions(min_size=(H, W)))
    assert scan.found == 4
    assert [s.sample_id for s in scan.valid] == ["0000001", "0000002", "0000010", "0000100"]
    assert scan.valid[0] == Sample("0000001", str(path(tmp_path, 1, "img_0.png")), str(path(tmp_path, 1, "img_1.png")),
                                   str(path(tmp_path, 1, "flow_01.flo")))
    assert scan.problems == {} and scan.invalid == 0


def test_missing_folder_is_a_data_error_naming_it(tmp_path) -> None:
    with pytest.raises(DataError, match=f"data folder {tmp_path / 'nope'} does not exist"):
        scan_split(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        scan_split(tmp_path / "file")


def test_missing_files(tmp_path) -> None:
    make_samples(tmp_path, [0, 1, 2, 3])
    os.remove(path(tmp_path, 1, "img_1.png"))
    os.remove(path(tmp_path, 2, "flow_01.flo"))
    os.remove(path(tmp_path, 3, "img_0.png"))
    scan = scan_split(tmp_path)
    assert scan.found == 4 and [s.sample_id for s in scan.valid] == ["0000000"]
    assert scan.problems == {"missing_img0": [str(path(tmp_path, 3, "img_0.png"))],
                             "missing_img1": [str(path(tmp_path, 1, "img_1.png"))],
                             "missing_flow": [str(path(tmp_path, 2, "flow_01.flo"))]}


def test_bad_png_signature_and_truncated_header(tmp_path) -> None:
    make_samples(tmp_path, [0, 1, 2])
    path(tmp_path, 0, "img_0.png").write_bytes(b"GIF89a" + b"\x00" * 100)
    path(tmp_path, 1, "img_1.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    scan = scan_split(tmp_path)
    assert [s.sample_id for s in scan.valid] == ["0000002"]
    bad = [str(path(tmp_path, 0, "img_0.png")), str(path(tmp_path, 1, "img_1.png"))]
    assert scan.problems["bad_png_signature"] == bad
    assert "not a PNG file" in scan.details[str(path(tmp_path, 0, "img_0.png"))]
    assert "truncated PNG header" in scan.details[str(path(tmp_path, 1, "img_1.png"))]


def test_png_size_mismatch_and_smaller_than_the_crop(tmp_path) -> None:
    make_samples(tmp_path, [0, 1])
    make_samples(tmp_path / "other", [0], h=H + 2, w=W)
    os.replace(path(tmp_path / "other", 0, "img_1.png"), path(tmp_path, 0, "img_1.png"))
    scan = scan_split(tmp_path, ScanOptions(min_size=(H, W)))
    assert scan.problems == {"png_size_mismatch": [str(path(tmp_path, 0, "img_1.png"))]}
    assert "img_1 is 26x32 but img_0 is 24x32" in scan.details[str(path(tmp_path, 0, "img_1.png"))]
    small = scan_split(tmp_path, ScanOptions(min_size=(H, W + 1)))
    assert small.problems["png_too_small"] == [str(path(tmp_path, i, "img_0.png")) for i in (0, 1)]
    assert small.valid == []


def test_flo_magic_header_dims_and_size(tmp_path) -> None:
    make_samples(tmp_path, [0, 1, 2, 3, 4, 5])
    f0 = path(tmp_path, 0, "flow_01.flo")
    f0.write_bytes(b"XXXX" + f0.read_bytes()[4:])
    f1 = path(tmp_path, 1, "flow_01.flo")
    f1.write_bytes(f1.read_bytes()[:-100])  # truncated
    f2 = path(tmp_path, 2, "flow_01.flo")
    f2.write_bytes(f2.read_bytes() + b"\x00" * 8)  # trailing bytes
    write_flo(path(tmp_path, 3, "flow_01.flo"), np.zeros((W, H, 2), np.float32))  # transposed: same byte size
    f4 = path(tmp_path, 4, "flow_01.flo")
    f4.write_bytes(struct.pack("<4sii", b"PIEH", -1, 5))
    scan = scan_split(tmp_path)
    assert [s.sample_id for s in scan.valid] == ["0000005"]
    assert scan.problems == {"bad_flo_magic": [str(f0)], "bad_flo_header": [str(f4)],
                             "flo_dims_mismatch": [str(path(tmp_path, 3, "flow_01.flo"))],
                             "flo_file_size": [str(f1), str(f2)]}
    assert "truncated .flo" in scan.details[str(f1)]
    assert "trailing bytes" in scan.details[str(f2)]
    assert "flow is 32x24 but img_0 is 24x32" in scan.details[str(path(tmp_path, 3, "flow_01.flo"))]


def test_truncated_png_is_found_by_the_header_check(tmp_path) -> None:
    # A PNG cut short (an interrupted copy, a full disk) has no IEND chunk: found without decoding it.
    make_samples(tmp_path, [0, 1])
    cut = path(tmp_path, 1, "img_0.png")
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    scan = scan_split(tmp_path)
    assert [s.sample_id for s in scan.valid] == ["0000000"]
    assert scan.problems == {"truncated_png": [str(cut)]}
    assert "does not end with its IEND chunk" in scan.details[str(cut)]


def test_corrupt_png_body_and_nonfinite_flow_need_deep(tmp_path) -> None:
    make_samples(tmp_path, [0, 1, 2, 3])
    png = path(tmp_path, 0, "img_1.png")
    data = png.read_bytes()
    end = data[-12:]  # the IEND chunk stays: only the pixel data is garbage
    png.write_bytes(data[:33] + bytes(range(256)) * ((len(data) - 45) // 256 + 1) + end)
    cut = path(tmp_path, 3, "img_0.png")
    raw = cut.read_bytes()
    cut.write_bytes(raw[:-212] + raw[-12:])  # data cut out of the middle: header and end intact
    flow_path = path(tmp_path, 1, "flow_01.flo")
    flow = np.zeros((H, W, 2), np.float32)
    flow[3, 4, 1] = np.nan
    flow[0, 0, 0] = np.inf
    write_flo(flow_path, flow)
    shallow = scan_split(tmp_path)
    assert len(shallow.valid) == 4 and shallow.problems == {}
    deep = scan_split(tmp_path, ScanOptions(deep="full"))
    assert [s.sample_id for s in deep.valid] == ["0000002"]
    assert deep.problems == {"undecodable_png": [str(png), str(cut)], "nonfinite_flow": [str(flow_path)]}
    assert deep.details[str(flow_path)] == "2 non-finite flow values"


def test_threaded_scan_equals_serial_scan(tmp_path) -> None:
    make_samples(tmp_path, range(40))
    os.remove(path(tmp_path, 7, "img_1.png"))
    path(tmp_path, 33, "flow_01.flo").write_bytes(b"PIEH")
    from edgeflow.data import fc2 as scan_mod

    old = scan_mod._CHUNK
    scan_mod._CHUNK = 3  # many chunks over several threads
    try:
        threaded = scan_split(tmp_path, workers=4)
    finally:
        scan_mod._CHUNK = old
    serial = scan_split(tmp_path, workers=1)
    assert threaded == serial and len(serial.valid) == 38


def test_deep_without_opencv_fails_clearly(tmp_path) -> None:
    make_samples(tmp_path, [0])
    code = ("import sys; sys.modules['cv2'] = None; sys.modules['PIL'] = None\n"
            "from edgeflow.data.fc2 import scan_split\nfrom edgeflow.data.samples import DataError, ScanOptions\n"
            f"print(scan_split({str(tmp_path)!r}).found)\n"
            f"try:\n    scan_split({str(tmp_path)!r}, ScanOptions(deep='full'))\n"
            "except DataError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout
    assert out.startswith("1\nERR the deep check decodes images and needs OpenCV (cv2) or Pillow")


def test_resolve_splits_with_val_dir(tmp_path) -> None:
    make_samples(tmp_path / "train", range(5))
    make_samples(tmp_path / "val", range(100, 103))
    splits = resolve_splits(cfg_for(tmp_path / "train", tmp_path / "val"))
    assert [s.sample_id for s in splits.val] == ["0000100", "0000101", "0000102"]
    assert len(splits.train) == 5 and splits.val_source == "val_dir" and splits.holdout_seed is None
    assert splits.val_scan is not None and splits.val_scan.found == 3


def test_holdout_is_fixed_by_seed_and_disjoint(tmp_path) -> None:
    make_samples(tmp_path / "train", range(20))
    cfg = cfg_for(tmp_path / "train", None, holdout_samples=4, holdout_seed=7)
    a, b = resolve_splits(cfg), resolve_splits(cfg)
    val_ids = [s.sample_id for s in a.val]
    assert val_ids == [s.sample_id for s in b.val] and len(val_ids) == 4 and val_ids == sorted(val_ids)
    assert not set(val_ids) & {s.sample_id for s in a.train} and len(a.train) == 16
    assert a.val_source == "holdout" and a.holdout_seed == 7 and a.val_scan is None
    other = resolve_splits(cfg_for(tmp_path / "train", None, holdout_samples=4, holdout_seed=8))
    assert [s.sample_id for s in other.val] != val_ids
    # Membership depends on the sample's id only, not on which other samples are valid.
    some = [s for s in a.train_scan.valid if s.sample_id not in {"0000003", "0000011"}]
    assert holdout_ids(a.train_scan.valid, 4, 7) <= holdout_ids(some, 4, 7) | {"0000003", "0000011"}


def test_empty_val_folder_names_the_folder(tmp_path) -> None:
    make_samples(tmp_path / "train", range(5))
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match=f"no valid validation samples in {tmp_path / 'val'} \\(found 0 samples\\)"):
        resolve_splits(cfg_for(tmp_path / "train", tmp_path / "val"))


def test_val_with_only_invalid_samples_lists_the_problems(tmp_path) -> None:
    make_samples(tmp_path / "train", range(5))
    make_samples(tmp_path / "val", [0, 1])
    os.remove(path(tmp_path / "val", 0, "img_1.png"))
    os.remove(path(tmp_path / "val", 1, "img_1.png"))
    with pytest.raises(DataError, match="found 2 samples, 2 invalid: 2 missing_img1"):
        resolve_splits(cfg_for(tmp_path / "train", tmp_path / "val"))


def test_fewer_valid_samples_than_one_batch(tmp_path) -> None:
    make_samples(tmp_path / "train", range(3))
    make_samples(tmp_path / "val", range(3))
    cfg = cfg_for(tmp_path / "train", tmp_path / "val")
    cfg.train.batch_size = 4
    with pytest.raises(DataError, match=f"only 3 valid training samples in {tmp_path / 'train'}, fewer than one "
                                        "batch \\(train.batch_size=4"):
        resolve_splits(cfg)
    cfg.train.batch_size = 2
    cfg.eval.batch_size = 5
    with pytest.raises(DataError, match=f"only 3 valid validation samples in {tmp_path / 'val'}.*eval.batch_size=5"):
        resolve_splits(cfg)


def test_missing_train_folder(tmp_path) -> None:
    make_samples(tmp_path / "val", range(3))
    with pytest.raises(DataError, match=f"data folder {tmp_path / 'train'} does not exist"):
        resolve_splits(cfg_for(tmp_path / "train", tmp_path / "val"))


def test_eval_split_named_like_a_test_set_is_refused(tmp_path) -> None:
    make_samples(tmp_path / "train", range(3))
    make_samples(tmp_path / "test", range(3))
    with pytest.raises(config.ConfigError, match="data.val_dir: .* named like a test split"):
        cfg_for(tmp_path / "train", tmp_path / "test")
    # A config built without validation still cannot select on a test set.
    cfg = config.Config()
    cfg.data.train_dir, cfg.data.val_dir = str(tmp_path / "train"), str(tmp_path / "test")
    cfg.train.batch_size = cfg.eval.batch_size = 1
    train_scan, val_scan = scan_split(cfg.data.train_dir), scan_split(cfg.data.val_dir)
    with pytest.raises(DataError, match="named like a test split"):
        select_splits(cfg, train_scan, val_scan)
    # Nor carve the holdout out of one.
    cfg.data.train_dir, cfg.data.val_dir, cfg.data.holdout_samples = str(tmp_path / "test"), "", 1
    with pytest.raises(DataError, match="named like a test split"):
        select_splits(cfg, val_scan, None)


def test_unreadable_files(tmp_path) -> None:
    make_samples(tmp_path, [0, 1, 2])
    for i, part in ((0, "img_1.png"), (1, "flow_01.flo")):
        os.remove(path(tmp_path, i, part))
        path(tmp_path, i, part).mkdir()  # exists, opens, but cannot be read (EISDIR)
    scan = scan_split(tmp_path)
    assert scan.problems == {"unreadable": [str(path(tmp_path, 0, "img_1.png")), str(path(tmp_path, 1, "flow_01.flo"))]}
    assert scan.details[str(path(tmp_path, 0, "img_1.png"))] == "cannot read: Is a directory"
    assert [s.sample_id for s in scan.valid] == ["0000002"]
