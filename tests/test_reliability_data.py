"""Data the probes got past the checks: a changed sample set on resume, a corrupt body behind a good
header, excluded samples nobody was told about. Light (no TensorFlow): the start decision and the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeflow import config, rundir
from edgeflow.data.preflight import run_preflight
from edgeflow.data.samples import DataError
from edgeflow.train.checkpoint import CheckpointStore
from edgeflow.train.start import prepare, write_run_start_files
from tests.helpers import tiny_config


@pytest.fixture
def data(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    # Not tmp_path: its name contains "test_...", which reads as a test split.
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(demo_data, root, dirs_exist_ok=True)
    return root


def load(tmp_path: Path, data: Path, **data_keys: object) -> config.Config:
    path = tiny_config(tmp_path, data, "reliab", train={"num_epochs": 3})
    return config.load(path, [f"data.{k}={v}" for k, v in data_keys.items()])


def fake_checkpoint(cfg: config.Config, epoch: int, batch_in_epoch: int = 0) -> None:
    def write(prefix: str) -> None:
        Path(f"{prefix}.index").write_text("i")

    state = {"epoch": epoch, "step": epoch * 6 + batch_in_epoch, "batch_in_epoch": batch_in_epoch,
             "status": "running", "num_epochs": cfg.train.num_epochs}
    CheckpointStore(cfg.run_dir / "checkpoints").save("latest", write, state)


def first_start(cfg: config.Config) -> None:
    plan = prepare(cfg)
    assert plan is not None
    write_run_start_files(plan, None)
    fake_checkpoint(cfg, epoch=1, batch_in_epoch=2)


def remove_sample(folder: Path, sample_id: str) -> None:
    for path in folder.glob(f"{sample_id}-*"):
        path.unlink()


def test_first_start_records_the_sample_set(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data)
    first_start(cfg)
    run = json.loads((cfg.run_dir / "run.json").read_text())
    record = run["data"]
    assert record["train"]["count"] == 24 and record["val"]["count"] == 8
    assert len(record["train"]["digest"]) == 64


def test_resume_on_a_changed_sample_set_is_refused_naming_the_difference(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data)
    first_start(cfg)
    ids = sorted(p.name.split("-")[0] for p in (data / "train").glob("*-flow_01.flo"))
    remove_sample(data / "train", ids[3])
    remove_sample(data / "train", ids[7])
    shutil.copy(data / "train" / f"{ids[0]}-img_0.png", data / "train" / "0000999-img_0.png")
    shutil.copy(data / "train" / f"{ids[0]}-img_1.png", data / "train" / "0000999-img_1.png")
    shutil.copy(data / "train" / f"{ids[0]}-flow_01.flo", data / "train" / "0000999-flow_01.flo")
    with pytest.raises(DataError) as err:
        prepare(cfg)
    message = str(err.value)
    assert "data.allow_changed_samples" in message
    assert "2 removed" in message and "1 added" in message
    assert ids[3] in message and ids[7] in message and "0000999" in message
    assert "24 -> 23" in message


def test_an_allowed_change_is_recorded_and_cuts_the_epoch(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data)
    first_start(cfg)
    ids = sorted(p.name.split("-")[0] for p in (data / "train").glob("*-flow_01.flo"))
    remove_sample(data / "train", ids[5])
    cfg = load(tmp_path, data, allow_changed_samples=True)
    plan = prepare(cfg)
    assert plan is not None and plan.data_change is not None
    change = plan.data_change
    assert change["split"] == {"train": {"before": 24, "after": 23, "added": [], "removed": [ids[5]]}}
    # Resumed mid-epoch 2 (batch 2): the rest of epoch 2 belonged to the old order; epoch 3 is new.
    assert change["from_epoch"] == 3
    write_run_start_files(plan, None)
    run = json.loads((cfg.run_dir / "run.json").read_text())
    assert run["data"]["train"]["count"] == 23
    # The next resume compares with the set now in use: no refusal without the flag.
    fake_checkpoint(cfg, epoch=2)
    cfg = load(tmp_path, data)
    plan = prepare(cfg)
    assert plan is not None and plan.data_change is None


def test_an_unchanged_sample_set_resumes(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data)
    first_start(cfg)
    plan = prepare(cfg)
    assert plan is not None and plan.resume is not None and plan.data_change is None


def test_kill_after_the_pointer_swap_start_reconciles_state_json(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data)
    first_start(cfg)
    paths = rundir.RunPaths(cfg.run_dir)
    # state.json as the trainer wrote it after epoch 1; then killed right after the epoch-2 pointer swap.
    stale = {k: None for k in rundir.STATE_FIELDS}
    stale.update(experiment="reliab", status="running", epoch=1, step=6, batch_in_epoch=0)
    rundir.write_state(paths.state, stale)
    fake_checkpoint(cfg, epoch=2)
    plan = prepare(cfg)
    assert plan is not None
    write_run_start_files(plan, None)
    state = rundir.read_state(paths.state)
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (2, 12, 0)


# ------------------------------------------------------------------ the deep gate

def corrupt_png_body(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    # Keep the signature and IHDR (33 bytes): the header check still passes.
    for i in range(60, len(raw) - 20, 7):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def nan_flow(path: Path) -> None:
    raw = path.read_bytes()
    values = np.full((len(raw) - 12) // 4, np.nan, np.float32)
    path.write_bytes(raw[:12] + values.tobytes())


def test_gate_decodes_small_data_sets_in_full_and_refuses_excluded_samples(tmp_path: Path, data: Path) -> None:
    from jobs.gate import run_gate

    png = sorted((data / "train").glob("*-img_1.png"))[4]
    flow = sorted((data / "val").glob("*-flow_01.flo"))[1]
    corrupt_png_body(png)
    nan_flow(flow)
    cfg = load(tmp_path, data)
    assert run_preflight(cfg).ok, "the header check alone cannot see a corrupt body"
    gate = run_gate(cfg)
    assert not gate.ok
    assert "2 invalid samples" in gate.reason and "data.allow_excluded_samples" in gate.reason
    assert f"{png}: " in gate.report and f"{flow}: " in gate.report
    assert "undecodable_png" in gate.report and "nonfinite_flow" in gate.report
    allowed = run_gate(load(tmp_path, data, allow_excluded_samples=2))
    assert allowed.ok and "2 invalid samples excluded" in allowed.report
    assert not run_gate(load(tmp_path, data, allow_excluded_samples=1)).ok
    assert run_gate(load(tmp_path, data, preflight_deep="headers", allow_excluded_samples=0)).ok


def test_gate_samples_a_large_data_set(tmp_path: Path, data: Path) -> None:
    cfg = load(tmp_path, data, preflight_deep="sample", preflight_sample=5)
    report = run_preflight(cfg, deep=cfg.data.preflight_deep)
    assert report.ok
    assert [s.deep_checked for s in (report.train_scan, report.val_scan)] == [5, 5]
    assert "decoded 5 of 24" in report.to_text()
    full = run_preflight(cfg, deep="full")
    assert [s.deep_checked for s in (full.train_scan, full.val_scan)] == [24, 8]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("preflight_deep", "sometimes", "data.preflight_deep: must be one of"),
    ("preflight_sample", 0, "data.preflight_sample: must be >= 1"),
    ("allow_excluded_samples", -1, "data.allow_excluded_samples: must be >= 0"),
])
def test_gate_keys_are_validated(tmp_path: Path, data: Path, key: str, value: object, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        load(tmp_path, data, **{key: value})


def test_trainer_start_names_every_excluded_file(tmp_path: Path, data: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    victims = sorted((data / "train").glob("*-flow_01.flo"))[:5]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:-8])
    with pytest.raises(DataError, match="5 invalid samples"):
        prepare(load(tmp_path, data))
    prepare(load(tmp_path, data, allow_excluded_samples=5))
    out = capsys.readouterr().out
    for victim in victims:
        assert f"excluded {victim}: " in out
