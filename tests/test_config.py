"""Config loading: every bad key, type or value is rejected at load time with its dotted path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from edgeflow import config
from edgeflow.config import ConfigError
from tests.helpers import REPO


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_configs_load_and_production_matches_spec() -> None:
    cfg = config.load(REPO / "configs/supernet_fc2_180x240.yaml")
    assert (cfg.data.input_height, cfg.data.input_width) == (180, 240)
    assert cfg.train.batch_size == 32 and cfg.train.lr == 1e-4
    assert (cfg.train.adam_beta1, cfg.train.adam_beta2, cfg.train.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert cfg.train.grad_clip_global_norm == 200.0 and cfg.train.weight_decay == 4e-5
    assert cfg.data.flow_clip == 50.0 and cfg.train.lr_schedule == "cosine"
    assert cfg.eval.pool == list(config.DEFAULT_EVAL_POOL) and len(cfg.eval.pool) == 12
    demo = config.load(REPO / "configs/demo.yaml")
    assert demo.runtime.experiment_name == "demo"


def test_eval_pool_covers_every_option_of_every_block() -> None:
    for block in range(9):
        assert {code[block] for code in config.DEFAULT_EVAL_POOL} == {"0", "1", "2"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"bach_size": 8}}, "train.bach_size: unknown key (did you mean train.batch_size?)"),
        ({"trian": {}}, "trian: unknown key (did you mean train?)"),
        ({"train": {"batch_size": "8"}}, "train.batch_size: expected an integer"),
        ({"train": {"batch_size": True}}, "train.batch_size: expected an integer"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
        ({"train": {"mixed_precision": "yes"}}, "train.mixed_precision: must be false, float16 (or true) or bfloat16"),
        ({"train": {"mixed_precision": 16}}, "train.mixed_precision: expected a string"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1"),
        ({"train": {"batch_size": 32, "micro_batch_size": 5}}, "train.micro_batch_size: 5 does not divide"),
        ({"eval": {"bn_recal_batches": 0}}, "eval.bn_recal_batches: must be >= 1"),
        ({"eval": {"pool": ["00000000x"]}}, "eval.pool[0]: arch code must be 9 digits"),
        ({"eval": {"pool": "000000000"}}, "eval.pool: expected a list"),
        ({"data": {"val_dir": "data/FlyingChairs2/test"}},
         "data.val_dir: 'data/FlyingChairs2/test' is named like a test split"),
        ({"data": {"val_dir": ""}}, "data.val_dir: is empty and data.holdout_samples is 0"),
        ({"train": 5}, "train: expected a mapping"),
    ],
)
def test_bad_values_name_the_dotted_key(tmp_path: Path, raw: dict, message: str) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_latest_is_not_a_test_split(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, {"data": {"val_dir": "runs/latest/val"}}))
    assert cfg.data.val_dir == "runs/latest/val"
    # Only the split folder's own name counts; a parent folder named test_* is someone's project.
    cfg = config.load(write(tmp_path, {"data": {"val_dir": "/scratch/test_project/FC2/val"}}))
    assert cfg.data.val_dir.endswith("FC2/val")


def test_overrides_are_parsed_and_validated(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    cfg = config.load(path, ["train.batch_size=4", "eval.pool=['000000000', '111111111']", "data.val_dir=v"])
    assert cfg.train.batch_size == 4
    assert cfg.eval.pool == ["000000000", "111111111"]
    with pytest.raises(ConfigError, match="train.batchsize: unknown key"):
        config.load(path, ["train.batchsize=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        config.load(path, ["train.batch_size"])
    with pytest.raises(ConfigError, match=r"eval.pool\[0\]: expected a string, got 0 \(quote it"):
        config.load(path, ["eval.pool=[000000000]"])
    with pytest.raises(ConfigError, match="train.num_epochs: must be >= 1"):
        config.load(path, ["train.num_epochs=0"])


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.load(top)


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = config.load(REPO / "configs/supernet_fc2_180x240.yaml")
    again = config.load(write(tmp_path, yaml.safe_load(config.dump(cfg))))
    assert again == cfg


def test_cli_reports_config_error_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"bach_size": 8}})
    proc = subprocess.run(
        [str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else "python3",
         "-m", "edgeflow", "preflight", "--config", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "train.bach_size: unknown key" in proc.stderr + proc.stdout
