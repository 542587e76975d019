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


def test_kept_epoch_checkpoints_outlive_the_rotation(tmp_path: Path) -> None:
    from edgeflow.train.checkpoint import is_kind, kept_kind

    store = CheckpointStore(tmp_path)
    for epoch in range(1, 6):  # checkpoint.keep_every 2: epochs 2 and 4 kept
        also = (kept_kind(epoch),) if epoch % 2 == 0 else ()
        store.save("latest", fake_write(f"e{epoch}"), {"epoch": epoch}, also=also)
    assert store.kept() == ["epoch-2", "epoch-4"]
    for epoch in (2, 4):
        pointer = store.pointer(f"epoch-{epoch}")
        assert pointer.state == {"epoch": epoch} and Path(f"{pointer.prefix}.index").read_text() == f"e{epoch}"
    assert store.pointer("latest").state == {"epoch": 5}
    # the kept files and latest's, nothing else
    assert len(list(tmp_path.glob("latest-*.index"))) == 3
    assert [is_kind(k) for k in ("epoch-10", "epoch-0", "epoch-", "epoch-1x", "best", "final")] == \
        [True, False, False, False, True, False]


def test_a_crash_between_the_kept_and_the_latest_pointer_loses_nothing(tmp_path: Path, monkeypatch) -> None:
    from edgeflow.train import checkpoint as checkpoint_mod

    store = CheckpointStore(tmp_path)
    store.save("latest", fake_write("e1"), {"epoch": 1})
    real = checkpoint_mod.atomic_write_json

    def dies_at_latest(path, data):  # the kept pointer is written, then the process dies
        if Path(path).name == "latest.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(checkpoint_mod, "atomic_write_json", dies_at_latest)
    with pytest.raises(KeyboardInterrupt):
        store.save("latest", fake_write("e2"), {"epoch": 2}, also=("epoch-2",))
    monkeypatch.setattr(checkpoint_mod, "atomic_write_json", real)
    # latest is still epoch 1 (the resume retrains epoch 2); epoch-2 names complete files
    assert store.pointer("latest").state == {"epoch": 1}
    assert Path(f"{store.pointer('epoch-2').prefix}.index").read_text() == "e2"
    # the retrained epoch 2 writes both again; the first epoch-2 files go, unreferenced
    store.save("latest", fake_write("e2b"), {"epoch": 2}, also=("epoch-2",))
    assert Path(f"{store.pointer('epoch-2').prefix}.index").read_text() == "e2b"
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["latest-000003.index"]
