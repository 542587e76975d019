"""Hostile and mistaken configs: bounded time and memory, short messages, every mistake at once, each
blamed on where it came from (the file or the --set)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml

from edgeflow import config
from edgeflow.commands import train as train_cmd

BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
eval:
  pool: *h
"""


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 600
    tracemalloc.start()
    with pytest.raises(config.ConfigError, match="alias bomb") as info:
        config.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20 and len(str(info.value)) < 400
    assert train_cmd.main(["--config", str(path)]) == 2
    assert len(capsys.readouterr().err) < 400


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("eval:\n  pool: &p [*p]\n")
    with pytest.raises(config.ConfigError):
        config.load(path)


def test_huge_values_are_cut_in_messages(tmp_path: Path) -> None:
    name = "x/" * 5_000_000  # 10 MB, and not a valid name
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"runtime": {"experiment_name": name}}))
    with pytest.raises(config.ConfigError, match="larger than 1024 KiB"):
        config.load(path)
    with pytest.raises(config.ConfigError) as info:
        config.from_dict({"runtime": {"experiment_name": "y" * 10**7}})
    assert "runtime.experiment_name" in str(info.value) and len(str(info.value)) < 400
    assert "(10000002 characters)" in str(info.value)
    with pytest.raises(config.ConfigError) as info:
        config.from_dict({"train": {"z" * 10**6: 1}})
    assert len(str(info.value)) < 1000


def test_a_name_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="runtime.experiment_name: must be a non-empty name"):
        config.from_dict({"runtime": {"experiment_name": "run\n"}})
    with pytest.raises(config.ConfigError, match="checkpoint.resume_experiment_name"):
        config.from_dict({"checkpoint": {"resume_experiment_name": "base\n"}})


def test_every_mistake_is_reported_at_once_and_blamed_on_its_source(tmp_path: Path) -> None:
    path = tmp_path / "typos.yaml"
    path.write_text("train:\n  bach_size: 4\n  lr: fast\neval:\n  every_epoch: 2\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(path, ["data.inputheight=3", "runtime.seed=1"])
    text = str(info.value)
    assert text.startswith("4 problems:")
    assert f"config {path}: train.bach_size: unknown key (did you mean train.batch_size?)" in text
    assert f"config {path}: train.lr: expected a number, got 'fast'" in text
    assert f"config {path}: eval.every_epoch: unknown key (did you mean eval.every_epochs?)" in text
    assert "--set data.inputheight=3: data.inputheight: unknown key" in text
    assert "runtime.seed" not in text
    # Impossible values are all reported too, blamed the same way.
    good = tmp_path / "values.yaml"
    good.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(config.ConfigError) as info:
        config.load(good, ["train.lr=-1"])
    text = str(info.value)
    assert text.startswith("2 problems:")
    assert f"config {good}: train.batch_size: must be >= 1, got 0" in text
    assert "--set train.lr=-1: train.lr: must be a positive number" in text
