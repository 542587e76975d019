"""Numbers YAML 1.1 leaves as strings (`1e-4`) load as the numbers they are; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow import config


def _write(tmp_path: Path, lr_text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(f"train:\n  lr: {lr_text}\n")
    return path


def test_exponent_without_dot_loads_as_float(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, "1e-4"))
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(0.0001)
    cfg = config.load(_write(tmp_path, "1e-3"), ["train.weight_decay=5E-5", "train.lr=2e-4"])
    assert cfg.train.lr == pytest.approx(0.0002) and cfg.train.weight_decay == pytest.approx(0.00005)


@pytest.mark.parametrize("text", ["'1e-4x'", "'nan'", "'inf'", "'1_0'", "'0x10'", "fast"])
def test_other_strings_are_still_rejected_naming_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(config.ConfigError, match=r"train\.lr"):
        config.load(_write(tmp_path, text))


def test_progress_seconds_is_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, "1e-4")
    assert config.load(path, ["runtime.progress_seconds=1e1"]).runtime.progress_seconds == 10.0
    with pytest.raises(config.ConfigError, match=r"runtime\.progress_seconds"):
        config.load(path, ["runtime.progress_seconds=0"])
