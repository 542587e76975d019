"""`python -m edgeflow preflight` and `run_preflight`: real files, the CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeflow import config
from edgeflow.data.demo import write_sample
from edgeflow.data.preflight import run_preflight
from tests.helpers import REPO

H, W = 24, 32


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not tmp_path: its name contains "test_...", which reads as a test split.
    return tmp_path_factory.mktemp("data")


def make_samples(directory: Path, ids) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in ids:
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        write_sample(directory, i, img, img, np.zeros((H, W, 2), np.float32))


def file_of(directory: Path, i: int, part: str) -> Path:
    return directory / f"{i:07d}-{part}"


def preflight(*args: str, train: Path, val: Path | str, batch: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "edgeflow", "preflight", "--config", str(REPO / "configs/demo.yaml"),
           "--set", f"data.train_dir={train}", "--set", f"data.val_dir={val}",
           "--set", "data.input_height=16", "--set", "data.input_width=16",
           "--set", f"train.batch_size={batch}", "--set", f"eval.batch_size={batch}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)


def test_good_rendered_data_passes(demo_data: Path) -> None:
    cmd = [sys.executable, "-m", "edgeflow", "preflight", "--config", str(REPO / "configs/demo.yaml"),
           "--set", f"data.train_dir={demo_data / 'train'}", "--set", f"data.val_dir={demo_data / 'val'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["split", "found", "valid", "invalid", "used", "folder"]
    assert lines[2].split() == ["train", "24", "24", "0", "24", str(demo_data / "train")]
    assert lines[3].split() == ["val", "8", "8", "0", "8", str(demo_data / "val")]
    assert lines[-1] == "preflight: OK: 24 training and 8 validation samples (val_dir)"


def test_empty_val_folder_exits_4_naming_it(root: Path) -> None:
    make_samples(root / "train", range(4))
    (root / "val").mkdir()
    result = preflight(train=root / "train", val=root / "val")
    assert result.returncode == 4
    assert result.stdout.splitlines()[-1] == \
        f"preflight: FAILED: no valid validation samples in {root / 'val'} (found 0 samples)"


def test_missing_folder_exits_4(root: Path) -> None:
    make_samples(root / "train", range(4))
    result = preflight(train=root / "train", val=root / "nope")
    assert result.returncode == 4
    assert result.stdout.splitlines()[-1] == f"preflight: FAILED: validation data folder {root / 'nope'} does not exist"


def test_bad_samples_are_listed_and_excluded(root: Path) -> None:
    make_samples(root / "train", range(6))
    make_samples(root / "val", range(3))
    os.remove(file_of(root / "train", 1, "img_1.png"))
    flow = file_of(root / "train", 4, "flow_01.flo")
    flow.write_bytes(flow.read_bytes()[:-10])
    refused = preflight(train=root / "train", val=root / "val")
    assert refused.returncode == 4, refused.stdout
    assert refused.stdout.splitlines()[-1].startswith(
        "preflight: FAILED: 2 invalid samples would be excluded, more than data.allow_excluded_samples=0")
    result = preflight("--set", "data.allow_excluded_samples=2", train=root / "train", val=root / "val")
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "  train  6      4      2        4     " in out
    assert f"train: 1 x missing_img1 (img_1 missing), e.g.\n      {file_of(root / 'train', 1, 'img_1.png')}: " in out
    assert f"train: 1 x flo_file_size (.flo file size != 12 + 8*w*h), e.g.\n      {flow}: truncated .flo" in out
    assert out.splitlines()[-1] == \
        "preflight: OK: 4 training and 3 validation samples (val_dir); 2 invalid samples excluded"


def test_corrupt_png_is_caught_by_deep_only(root: Path) -> None:
    make_samples(root / "train", range(3))
    make_samples(root / "val", range(3))
    png = file_of(root / "val", 2, "img_0.png")
    data = png.read_bytes()
    # Garbage pixel data between an intact header and an intact end: only decoding finds it.
    png.write_bytes(data[:40] + b"\xde\xad" * ((len(data) - 52) // 2) + data[-12:])
    shallow = preflight(train=root / "train", val=root / "val", batch=3)
    assert shallow.returncode == 0 and "undecodable_png" not in shallow.stdout
    deep = preflight("--deep", train=root / "train", val=root / "val", batch=3)
    assert deep.returncode == 4
    assert f"val: 1 x undecodable_png (PNG cannot be decoded (--deep)), e.g.\n      {png}: " in deep.stdout
    assert deep.stdout.splitlines()[-1].startswith(
        f"preflight: FAILED: only 2 valid validation samples in {root / 'val'}, fewer than one batch")


def test_fewer_samples_than_a_batch_exits_4(root: Path) -> None:
    make_samples(root / "train", range(3))
    make_samples(root / "val", range(8))
    result = preflight(train=root / "train", val=root / "val", batch=4)
    assert result.returncode == 4
    assert result.stdout.splitlines()[-1].startswith(
        f"preflight: FAILED: only 3 valid training samples in {root / 'train'}, fewer than one batch "
        "(train.batch_size=4")


def test_json_report(root: Path) -> None:
    make_samples(root / "train", range(5))
    make_samples(root / "val", range(2))
    os.remove(file_of(root / "val", 0, "flow_01.flo"))
    result = preflight("--json", train=root / "train", val=root / "val")
    assert result.returncode == 4
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["reason"].startswith(f"only 1 valid validation samples in {root / 'val'}")
    val = report["splits"][1]
    assert (val["split"], val["found"], val["valid"], val["invalid"]) == ("val", 2, 1, 1)
    assert val["problems"]["missing_flow"]["paths"] == [str(file_of(root / "val", 0, "flow_01.flo"))]
    assert "preflight: FAILED: only 1 valid" in result.stderr


def test_test_split_name_is_refused(root: Path) -> None:
    make_samples(root / "train", range(3))
    make_samples(root / "test", range(3))
    result = preflight(train=root / "train", val=root / "test")
    assert result.returncode == 2
    assert "data.val_dir" in result.stderr and "named like a test split" in result.stderr


def test_run_preflight_api_with_holdout(root: Path) -> None:
    make_samples(root / "train", range(10))
    cfg = config.from_dict({"data": {"train_dir": str(root / "train"), "val_dir": "", "holdout_samples": 3,
                                     "input_height": 16, "input_width": 16},
                            "train": {"batch_size": 2}, "eval": {"batch_size": 2}})
    report = run_preflight(cfg, deep=True)
    assert report.ok and report.splits is not None
    assert (len(report.splits.train), len(report.splits.val), report.splits.val_source) == (7, 3, "holdout")
    d = json.loads(json.dumps(report.to_dict()))
    assert (d["train_samples"], d["val_samples"], d["holdout_seed"], d["deep"]) == (7, 3, 2024, True)
    assert f"holdout of {root / 'train'} (seed 2024)" in report.to_text()
    cfg.data.holdout_samples = 10
    bad = run_preflight(cfg)
    assert not bad.ok and bad.splits is None and "leaves no training samples" in bad.reason


def test_preflight_imports_no_tensorflow(root: Path) -> None:
    make_samples(root / "train", range(2))
    code = ("import sys\nfrom edgeflow.commands import preflight\n"
            f"rc = preflight.main(['--config', 'configs/demo.yaml', '--set', 'data.train_dir={root / 'train'}',"
            f" '--set', 'data.val_dir={root / 'train'}', '--set', 'train.batch_size=1', '--set', 'eval.batch_size=1',"
            " '--set', 'data.input_height=16', '--set', 'data.input_width=16'])\n"
            "print(rc, 'tensorflow' in sys.modules, 'cv2' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.splitlines()[-1] == "0 False False"
