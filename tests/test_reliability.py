"""Defects found by fault, bad-input and load probes: each test reproduces one and pins its fix.

Light tests (no TensorFlow): config names and values, checkpoint durability, the monitor's handling of
hostile event lines, the sidecar's lock, container binds, FIFOs in place of samples.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml

from edgeflow import config, rundir
from edgeflow.config import ConfigError
from edgeflow.train import checkpoint as checkpoint_mod
from edgeflow.train.checkpoint import CheckpointStore


def write(tmp_path: Path, raw: object, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ names that become paths or labels

@pytest.mark.parametrize("name", ["..", ".", "a\nb", "a/b", "has space", ".hidden", "", "a:b", "x" * 200])
def test_unsafe_experiment_names_are_refused_with_the_dotted_key(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"runtime\.experiment_name"):
        config.load(write(tmp_path, {"runtime": {"experiment_name": name}}))


@pytest.mark.parametrize("name", ["..", "a b", "x\ny"])
def test_unsafe_resume_experiment_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"checkpoint\.resume_experiment_name"):
        config.load(write(tmp_path, {"checkpoint": {"resume_experiment_name": name}}))


def test_safe_names_still_load(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, {"runtime": {"experiment_name": "fc2_180x240-v1.2"}}))
    assert cfg.runtime.experiment_name == "fc2_180x240-v1.2"


@pytest.mark.parametrize("name", ["..", ".", "a b", "x\ny"])
def test_unsafe_profile_names_are_refused(name: str) -> None:
    from jobs import profile

    with pytest.raises(ConfigError, match=r"^name"):
        profile.from_dict({"name": name, "executor": "local"})


# ------------------------------------------------------------------ numbers, duplicates, nesting, symlinks

@pytest.mark.parametrize("key", ["train.weight_decay", "train.grad_clip_global_norm", "eval.min_delta",
                                 "data.flow_clip", "train.adam_epsilon", "runtime.heartbeat_seconds"])
@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_every_float_must_be_finite(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')}: .*finite"):
        config.load(write(tmp_path, {}), [f"{key}={value}"])


def test_duplicate_yaml_keys_are_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 0.1\n  batch_size: 4\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'lr'.*line 4"):
        config.load(path)
    top = tmp_path / "dup_top.yaml"
    top.write_text("train: {}\ntrain: {}\n")
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        config.load(top)


def test_duplicate_keys_in_a_profile_are_refused(tmp_path: Path) -> None:
    from jobs import profile

    path = tmp_path / "p.yaml"
    path.write_text("name: p\nexecutor: local\nexecutor: slurm\n")
    with pytest.raises(profile.ProfileError, match="duplicate key 'executor'"):
        profile.load(path)


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 700 + "]" * 700 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(path)


def test_symlinked_val_folder_pointing_at_a_test_split_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "val").symlink_to(tmp_path / "test")
    with pytest.raises(ConfigError, match="data.val_dir: .*test split"):
        config.load(write(tmp_path, {"data": {"val_dir": str(tmp_path / "val")}}))
    # A plain folder named val is still fine.
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "val").mkdir()
    config.load(write(tmp_path, {"data": {"val_dir": str(tmp_path / "real" / "val")}}))


# ------------------------------------------------------------------ checkpoint durability

def test_checkpoint_files_and_folder_are_fsynced_before_the_pointer_and_old_deleted_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(checkpoint_mod, "fsync_file", lambda p: order.append(f"fsync {Path(p).name}"))
    monkeypatch.setattr(checkpoint_mod, "fsync_dir", lambda p: order.append(f"fsync_dir {Path(p).name}"))
    real_pointer_write = checkpoint_mod.atomic_write_json
    monkeypatch.setattr(checkpoint_mod, "atomic_write_json",
                        lambda p, obj: (order.append(f"pointer {obj['prefix']}"), real_pointer_write(p, obj)))
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        order.append(f"delete {self.name}")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)

    def write(prefix: str) -> None:
        Path(f"{prefix}.index").write_text("i")
        Path(f"{prefix}.data-00000-of-00001").write_text("d")

    store = CheckpointStore(tmp_path / "ckpt")
    store.save("latest", write, {"epoch": 1})
    order.clear()
    store.save("latest", write, {"epoch": 2})
    pointer = order.index("pointer latest-000002")
    synced = {line for line in order[:pointer] if line.startswith("fsync")}
    assert synced == {"fsync latest-000002.index", "fsync latest-000002.data-00000-of-00001", "fsync_dir ckpt"}
    deletes = [i for i, line in enumerate(order) if line.startswith("delete latest-000001")]
    assert len(deletes) == 2 and min(deletes) > pointer


# ------------------------------------------------------------------ monitor: hostile lines and labels

def _run_with(tmp_path: Path, experiment: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    log = rundir.EventLog(run / rundir.EVENTS_FILE, experiment, "7")
    fields = {name: None for name in rundir.EVENT_FIELDS["run_start"]}
    log.emit("run_start", **dict(fields, train_samples=24, val_samples=8, start_epoch=1, num_epochs=2))
    return run


def test_a_lone_surrogate_in_experiment_does_not_break_the_scrape(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from monitor.metrics import SidecarCollector, registry_for
    from monitor.sidecar import Sidecar

    run = tmp_path / "run"
    run.mkdir()
    # Written as a hostile writer would: the JSON escape of a lone surrogate, not valid UTF-8 text.
    (run / rundir.EVENTS_FILE).write_text(
        '{"event": "run_start", "experiment": "bad\\ud800name", "job_id": "1\\udfff", "time": 1.0, '
        '"train_samples": 24}\n')
    sidecar = Sidecar(runs=[run])
    sidecar.scan()
    text = generate_latest(registry_for(SidecarCollector(sidecar))).decode()
    assert 'edgeflow_train_samples{experiment="bad\ufffdname",job_id="1\ufffd"} 24.0' in text


def test_metrics_csv_rebuild_survives_hostile_lines(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"event": "epoch", "epoch": ' + b"[" * 100000 + b"\n"
                       + b'\xff\xfe\r\x00binary\r\n'
                       + b'{"event": "epoch", "epoch": 1, "step": 6, "experiment": "e\\ud800", "time": 1}\n')
    text = rundir.metrics_csv(rundir.read_events(events))
    assert text.splitlines()[1].startswith("1,") and len(text.splitlines()) == 2


# ------------------------------------------------------------------ monitor: re-run epochs, the lock

def _emit_epochs(log: rundir.EventLog, epochs: range) -> None:
    epoch_fields = {name: None for name in rundir.EVENT_FIELDS["epoch"]}
    eval_fields = {name: None for name in rundir.EVENT_FIELDS["eval"]}
    for epoch in epochs:
        log.emit("epoch", **dict(epoch_fields, epoch=epoch, step=epoch * 6))
        log.emit("eval", **dict(eval_fields, epoch=epoch, mean_epe=1.0 / epoch))


def test_epochs_rerun_after_a_crash_are_counted_once(tmp_path: Path) -> None:
    from monitor.runstate import RunState

    log = rundir.EventLog(tmp_path / "events.jsonl", "exp", "1")
    _emit_epochs(log, range(1, 4))
    # Killed after epoch 3's events but before its checkpoint: the resume trains epoch 3 again.
    _emit_epochs(log, range(3, 5))
    state = RunState()
    for event in rundir.read_events(tmp_path / "events.jsonl"):
        state.apply(event)
    assert state.epochs_completed == 4 and state.evaluations == 4


def test_a_scrape_is_served_while_the_first_scan_is_still_reading(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor import sidecar as sidecar_mod

    runs = []
    for i in range(3):
        run = tmp_path / f"run{i}"
        run.mkdir()
        _emit_epochs(rundir.EventLog(run / rundir.EVENTS_FILE, f"exp{i}", str(i)), range(1, 2))
        runs.append(run)
    reading, release = threading.Event(), threading.Event()
    real_refresh = sidecar_mod.RunFollower.refresh

    def slow_refresh(self: sidecar_mod.RunFollower) -> tuple[bool, int, int]:
        if self.dir.name == "run2":
            reading.set()
            release.wait(30)
        return real_refresh(self)

    monkeypatch.setattr(sidecar_mod.RunFollower, "refresh", slow_refresh)
    sidecar = sidecar_mod.Sidecar(roots=[tmp_path])
    scanner = threading.Thread(target=sidecar.scan)
    scanner.start()
    try:
        assert reading.wait(30)
        got: list = []
        scrape = threading.Thread(target=lambda: got.append(sidecar.snapshot()))
        scrape.start()
        scrape.join(20)
        # The scrape returned while run2 was still being read, with the runs read so far.
        assert got, "snapshot blocked behind the first scan"
        assert sorted(state.experiment for _, state in got[0][0]) == ["exp0", "exp1"]
    finally:
        release.set()
        scanner.join(30)
    assert len(sidecar.snapshot()[0]) == 3


# ------------------------------------------------------------------ container binds, FIFOs

@pytest.mark.parametrize("bad", ["data,x", "da:ta"])
def test_bind_paths_with_comma_or_colon_are_refused(tmp_path: Path, bad: str) -> None:
    from jobs.launch import BindError, NodeSpec, container_binds
    from jobs.profile import ClusterProfile

    data = tmp_path / bad
    data.mkdir()
    cfg = config.from_dict({"runtime": {"output_root": str(tmp_path / "out")},
                            "data": {"train_dir": str(data), "val_dir": str(tmp_path / "val")}})
    spec = NodeSpec(config_path="c.yaml", run_dir=str(tmp_path / "out" / "x"), experiment="x",
                    profile=ClusterProfile(name="p"), workdir=str(tmp_path))
    with pytest.raises(BindError, match=r"data\.train_dir.*(','|':')"):
        container_binds(spec, cfg)


def test_a_fifo_in_place_of_a_sample_is_reported_not_opened(tmp_path: Path, demo_data: Path) -> None:
    import shutil

    from edgeflow.data.fc2 import scan_split
    from edgeflow.data.samples import ScanOptions

    folder = tmp_path / "train"
    shutil.copytree(demo_data / "train", folder)
    victim = sorted(folder.glob("*-flow_01.flo"))[0]
    victim.unlink()
    os.mkfifo(victim)
    image = sorted(folder.glob("*-img_1.png"))[1]
    image.unlink()
    os.mkfifo(image)
    result: list = []
    options = ScanOptions(min_size=(32, 48))
    worker = threading.Thread(target=lambda: result.append(scan_split(folder, options)), daemon=True)
    worker.start()
    worker.join(60)
    assert result, "the scan hung on a FIFO"
    scan = result[0]
    assert sorted(scan.problems["not_a_file"]) == sorted([str(victim), str(image)])
    assert len(scan.valid) == 22
