"""train.arch (a stand-alone subnet), checkpoint.keep_every, train.lr_min and clipping off: their checks
at load time, each a line naming the dotted key, before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeflow import config
from edgeflow.config import ConfigError
from edgeflow.space.arch import BASELINE_ARCH
from tests.helpers import REPO


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_arch_defaults_to_the_supernet_and_takes_a_code(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    assert config.load(path).train.arch == ""
    assert config.load(write(tmp_path, {"train": {"arch": "000021222"}})).train.arch == "000021222"


def test_set_train_arch_keeps_the_digits_as_typed(tmp_path: Path) -> None:
    # YAML reads 000021222 as 21222 and 012012012 as an octal number: a code from --set is text.
    path = write(tmp_path, {})
    assert config.load(path, ["train.arch=000021222"]).train.arch == "000021222"
    assert config.load(path, ["train.arch=012012012"]).train.arch == "012012012"
    assert config.load(path, ["train.arch=222222222"]).train.arch == "222222222"
    # numbers stay numbers where the key is a number
    assert config.load(path, ["runtime.seed=012"]).runtime.seed == 10


@pytest.mark.parametrize("code", ["00002122", "0000212220", "000021223", "00002122x", "0 0 0 0 2 1 2 2 2"])
def test_a_bad_arch_code_is_one_line_naming_train_arch(tmp_path: Path, code: str) -> None:
    path = write(tmp_path, {"train": {"arch": code}})
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value).count("\n") == 0
    assert "train.arch: arch code must be 9 digits in 0-2" in str(err.value)


def test_an_unquoted_arch_in_yaml_says_to_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  arch: 000021222\n")
    with pytest.raises(ConfigError, match=r"train.arch: expected a string, got \d+ \(quote it"):
        config.load(path)


@pytest.mark.parametrize(("key", "value"), [("eval.pool", ["000000000", "111111111"]),
                                            ("eval.bn_mode", "batch_stats"),
                                            ("train.distribute", "mirrored")])
def test_supernet_only_options_are_refused_beside_train_arch(tmp_path: Path, key: str, value: object) -> None:
    section, name = key.split(".")
    raw = {"train": {"arch": BASELINE_ARCH}}
    raw.setdefault(section, {})[name] = value
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, raw))
    assert str(err.value).splitlines()[0].split(": ", 1)[1].startswith(f"{key}: ")
    assert "stand-alone" in str(err.value)
    # the same option without train.arch is a supernet's, and fine
    del raw["train"]["arch"]
    config.load(write(tmp_path, raw))
    assert set(config.SUPERNET_ONLY) >= {key}


def test_every_supernet_only_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    with pytest.raises(ConfigError) as err:
        config.load(path, ["train.arch=000021222", "eval.pool=['000000000']", "eval.bn_mode=batch_stats"])
    text = str(err.value)
    assert text.startswith("2 problems:") and "eval.pool" in text and "eval.bn_mode" in text


def test_keep_every_lr_min_and_clipping_off(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    cfg = config.load(path, ["checkpoint.keep_every=10", "train.lr_min=1e-6", "train.grad_clip_global_norm=0"])
    assert (cfg.checkpoint.keep_every, cfg.train.lr_min, cfg.train.grad_clip_global_norm) == (10, 1e-6, 0.0)
    assert config.load(path).checkpoint.keep_every == 0
    with pytest.raises(ConfigError, match="checkpoint.keep_every: must be >= 0"):
        config.load(path, ["checkpoint.keep_every=-1"])
    with pytest.raises(ConfigError, match=r"train.lr_min: must be in \[0, train.lr"):
        config.load(path, ["train.lr_min=1e-3"])
    with pytest.raises(ConfigError, match="train.grad_clip_global_norm: must be >= 0"):
        config.load(path, ["train.grad_clip_global_norm=-1"])


def test_the_standalone_preset_is_the_original_recipe() -> None:
    cfg = config.load(REPO / "configs/standalone_fc2_180x240.yaml")
    t = cfg.train
    assert t.arch == BASELINE_ARCH and t.num_epochs == 400 and t.batch_size == 32
    assert (t.lr, t.lr_schedule, t.lr_min) == (1e-4, "cosine", 1e-6)
    assert t.weight_decay == 0.0 and t.grad_clip_global_norm == 0.0
    assert (cfg.data.input_height, cfg.data.input_width) == (180, 240)
    assert cfg.data.train_dir == config.load(REPO / "configs/supernet_fc2_180x240.yaml").data.train_dir
