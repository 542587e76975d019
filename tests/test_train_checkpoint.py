"""Crash-safe checkpoints: fresh prefix, atomic pointer, then cleanup (design §2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeflow.train.checkpoint import CheckpointError, CheckpointStore


def fake_write(value: str):
    def write(prefix: str) -> None:
        Path(f"{prefix}.index").write_text(value)
        Path(f"{prefix}.data-00000-of-00001").write_text(value)
    return write


def test_pointer_names_latest_save_and_superseded_files_are_deleted(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    assert store.pointer("latest") is None
    store.save("latest", fake_write("a"), {"epoch": 1})
    store.save("best", fake_write("b"), {"epoch": 1})
    p = store.save("latest", fake_write("c"), {"epoch": 2})
    assert store.pointer("latest").state == {"epoch": 2}
    assert Path(f"{p.prefix}.index").read_text() == "c"
    assert store.pointer("best").prefix.name == "best-000002"
    names = sorted(e.name for e in tmp_path.iterdir())
    assert names == ["best-000002.data-00000-of-00001", "best-000002.index", "best.json",
                     "latest-000003.data-00000-of-00001", "latest-000003.index", "latest.json"]


def test_crash_before_pointer_update_keeps_previous_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save("latest", fake_write("good"), {"epoch": 1})

    def crashing_write(prefix: str) -> None:
        Path(f"{prefix}.data-00000-of-00001").write_text("half")  # killed before the index was written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save("latest", crashing_write, {"epoch": 2})
    pointer = store.pointer("latest")
    assert pointer.state == {"epoch": 1} and Path(f"{pointer.prefix}.index").read_text() == "good"
    # The next save never reuses the half-written prefix and removes it.
    store.save("latest", fake_write("next"), {"epoch": 2})
    assert not (tmp_path / "latest-000002.data-00000-of-00001").exists()
    assert store.pointer("latest").prefix.name == "latest-000003"


def test_pointer_to_missing_files_or_bad_json_is_an_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"prefix": "latest-000007", "state": {}}))
    with pytest.raises(CheckpointError, match="latest-000007.index"):
        store.pointer("latest")
    (tmp_path / "best.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        store.pointer("best")
    with pytest.raises(ValueError, match="kind"):
        store.pointer("final")


def test_real_tensorflow_checkpoint_survives_a_half_written_successor(tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable([1.0, 2.0])
    ckpt = tf.train.Checkpoint(model=module)
    store = CheckpointStore(tmp_path)
    store.save("latest", ckpt.write, {"epoch": 1})
    # A second save killed mid-write: a fresh prefix exists with truncated files, no pointer change.
    module.w.assign([9.0, 9.0])
    ckpt.write(str(tmp_path / "latest-000002"))
    for f in tmp_path.glob("latest-000002*"):
        f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
    restored = tf.Module()
    restored.w = tf.Variable([0.0, 0.0])
    pointer = store.pointer("latest")
    tf.train.Checkpoint(model=restored).read(str(pointer.prefix)).assert_consumed()
    assert restored.w.numpy().tolist() == [1.0, 2.0] and pointer.state == {"epoch": 1}
    store.save("latest", ckpt.write, {"epoch": 2})
    assert not list(tmp_path.glob("latest-000002*"))
    tf.train.Checkpoint(model=restored).read(str(store.pointer("latest").prefix)).assert_consumed()
    assert restored.w.numpy().tolist() == [9.0, 9.0]
