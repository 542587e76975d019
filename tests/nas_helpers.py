"""A tiny run directory for the rank/search tests: the demo data, a 32x48 config, one checkpoint.

The checkpoint is a freshly initialised supernet saved through CheckpointStore the way the trainer
saves one (weights and BN statistics under `model`), with run.json's signature: training it first
would cost a minute and change nothing the tests check (they compare numbers between two ways of
computing them, never against a trained level).
"""

from __future__ import annotations

from pathlib import Path

from edgeflow import config as config_mod
from edgeflow.rundir import RunPaths, atomic_write_json
from tests.helpers import tiny_config

ARCHS = ["000000000", "222222222", "012012012", "000021222"]


def make_run(tmp: Path, data: Path, name: str = "tiny") -> Path:
    import tensorflow as tf

    from edgeflow.train.checkpoint import CheckpointStore
    from edgeflow.train.restore import build_supernet
    from edgeflow.train.signature import signature

    cfg_path = tiny_config(tmp, data, name=name, eval={"bn_recal_batches": 2, "eval_batches_per_arch": 2})
    cfg = config_mod.load(cfg_path)
    paths = RunPaths(cfg.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(config_mod.dump(cfg))
    atomic_write_json(paths.run, {"experiment": name, "status": "completed", "signature": signature(cfg)})
    model = build_supernet(cfg)
    CheckpointStore(paths.checkpoints).save("best", tf.train.Checkpoint(model=model).write, {"epoch": 1})
    return paths.root
