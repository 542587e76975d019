"""FlyingThings3D and MPI-Sintel layouts (rendered by demo-data, tiny frames): scans, planted defects found
by name, data.exclude_list, the pipeline's values, packs of nested layouts and their staleness."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeflow import config as config_mod
from edgeflow.data import ft3d, pfm, sintel
from edgeflow.data.samples import DataError, ScanOptions
from edgeflow.data.splits import resolve_splits
from tests.helpers import run_cli

H, W = 48, 64  # rendered frames
CROP = (32, 48)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("layouts")
    for args in (["--layout", "ft3d", "--out", str(out / "ft3d"), "--scenes", "2", "--test-scenes", "1",
                  "--frames", "4", "--cameras", "left", "right"],
                 ["--layout", "sintel", "--out", str(out / "sintel"), "--scenes", "2", "--frames", "4"]):
        proc = run_cli("edgeflow", "demo-data", *args, "--height", str(H), "--width", str(W))
        assert proc.returncode == 0, proc.stderr
    return {"ft3d": out / "ft3d", "sintel": out / "sintel"}


def copy(rendered: dict[str, Path], name: str, tmp_path: Path) -> Path:
    shutil.copytree(rendered[name], tmp_path / name)
    return tmp_path / name


def write_config(tmp_path: Path, data: dict, evals: dict | None = None, name: str = "cfg") -> Path:
    raw = {"runtime": {"experiment_name": name, "output_root": str(tmp_path / "out")},
           "data": {"input_height": CROP[0], "input_width": CROP[1], **data},
           "train": {"batch_size": 2}, "eval": {"batch_size": 2, **(evals or {})}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def ft3d_data(root: Path, **more: object) -> dict:
    return {"dataset": "ft3d", "root": str(root), "ft3d_cameras": ["left", "right"], "holdout_samples": 4,
            "input_height": CROP[0], "input_width": CROP[1], **more}


def preflight(cfg: Path, *args: str) -> tuple[int, dict]:
    proc = run_cli("edgeflow", "preflight", "--config", str(cfg), "--json", *args)
    return proc.returncode, json.loads(proc.stdout)


def problems(report: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for split in report["splits"]:
        for kind, entry in split["problems"].items():
            out.setdefault(kind, []).extend(entry["paths"])
    return out


# ------------------------------------------------------------------------------------------ the layouts

def test_rendered_layouts_scan_clean_with_every_sample(rendered: dict[str, Path]) -> None:
    assert (rendered["ft3d"] / "frames_cleanpass/TRAIN/A/0000/left/0006.png").is_file()
    assert (rendered["ft3d"] / "optical_flow/TEST/A/0000/into_past/right/OpticalFlowIntoPast_0009_R.pfm").is_file()
    assert (rendered["sintel"] / "training/final/scene_2/frame_0004.png").is_file()
    assert not (rendered["sintel"] / "training/flow/scene_2/frame_0004.flo").exists()  # no flow of a last frame
    cfg = config_mod.from_dict({"data": ft3d_data(rendered["ft3d"]), "train": {"batch_size": 2},
                                "eval": {"batch_size": 2}})
    splits = resolve_splits(cfg, deep=True)
    # 2 scenes x 2 cameras x 2 passes x 2 directions x 3 frames with a partner
    assert splits.train_scan.found == 48 and not splits.train_scan.problems
    assert len(splits.train) == 44 and len(splits.val) == 4
    s = splits.train[0]
    assert isinstance(s, ft3d.Ft3dSample) and s.flow_divisor == 12.5 and s.little_endian
    assert s.flow_header == f"PF\n{W} {H}\n-1.0\n" and (s.flow_height, s.flow_width) == (H, W)
    one_way = config_mod.from_dict({"data": ft3d_data(rendered["ft3d"], ft3d_passes=["final"], ft3d_cameras=["left"],
                                                      ft3d_directions=["into_past"]),
                                    "train": {"batch_size": 2}, "eval": {"batch_size": 2}})
    ids = [x.sample_id for x in resolve_splits(one_way).train_scan.valid]
    assert len(ids) == 6 and all(i.startswith("final-") and "-left-past-" in i for i in ids)
    assert not any(i.endswith("-0006") for i in ids)  # a scene's first frame has no into_past partner
    scan = sintel.SintelSource("train", str(rendered["sintel"]), "clean").scan(ScanOptions(deep="full"))
    assert scan.found == 6 and len(scan.valid) == 6 and scan.valid[0].sample_id == "scene_1-0001"


def test_ft3d_flow_is_read_divided_then_clipped(rendered: dict[str, Path]) -> None:
    from edgeflow.data import pipeline

    cfg = config_mod.from_dict({"data": ft3d_data(rendered["ft3d"], ft3d_flow_divisor=0.01),
                                "train": {"batch_size": 2}, "eval": {"batch_size": 2}})
    splits = resolve_splits(cfg)
    batch = next(iter(pipeline.eval_dataset(splits.train, cfg, batch_size=2, num_batches=1)))
    first = sorted(splits.train, key=lambda s: s.sample_id)[0]
    top, left = (H - CROP[0]) // 2, (W - CROP[1]) // 2
    raw = pfm.read_pfm(first.flow)[top:top + CROP[0], left:left + CROP[1], :2]
    np.testing.assert_array_equal(batch[1][0].numpy(), np.clip(raw / np.float32(0.01), -50, 50))
    assert np.abs(batch[1][0].numpy()).max() == 50.0  # divided by 0.01, the flow reaches the clip


# ------------------------------------------------------------------------------------------ planted defects

def plant_ft3d_defects(root: Path) -> dict[str, str]:
    """The five defects of issue 23, each in its own file; returns kind -> path."""
    def flow(direction: str, camera: str, t: int) -> Path:
        return Path(ft3d.flow_path(str(root), "TRAIN", "A", "0000", direction, camera, t))

    planted = {}
    for value, direction, t in ((np.nan, "into_future", 7), (np.inf, "into_past", 8)):
        path = flow(direction, "left", t)
        values = pfm.read_pfm(path)
        values[5, 6, 0] = value
        pfm.write_pfm(path, values)
        planted["nan" if np.isnan(value) else "inf"] = str(path)
    truncated = flow("into_future", "right", 6)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    planted["truncated"] = str(truncated)
    flipped = flow("into_past", "right", 7)
    flipped.write_bytes(flipped.read_bytes().replace(b"\n-1.0\n", b"\n1.00\n", 1))
    planted["byte_order"] = str(flipped)
    missing = Path(ft3d.frame_path(str(root), "clean", "TRAIN", "B", "0000", "right", 8))
    missing.unlink()
    planted["missing_right"] = str(missing)
    return planted


def test_deep_preflight_names_every_planted_ft3d_defect(rendered: dict[str, Path], tmp_path: Path) -> None:
    root = copy(rendered, "ft3d", tmp_path)
    planted = plant_ft3d_defects(root)
    cfg = write_config(tmp_path, ft3d_data(root))

    code, shallow = preflight(cfg)
    assert code == 4 and not shallow["ok"]
    found = problems(shallow)
    assert found["pfm_file_size"] == [planted["truncated"]]
    assert set(found["missing_img0"]) | set(found["missing_img1"]) == {planted["missing_right"]}
    assert "nonfinite_flow" not in found and "pfm_byte_order" not in found  # headers only: values not read

    code, deep = preflight(cfg, "--deep")
    assert code == 4
    found = problems(deep)
    assert sorted(found["nonfinite_flow"]) == sorted([planted["nan"], planted["inf"]])
    assert found["pfm_byte_order"] == [planted["byte_order"]]
    assert found["pfm_file_size"] == [planted["truncated"]]
    details = {p: d for split in deep["splits"] for entry in split["problems"].values()
               for p, d in zip(entry["paths"], entry["details"], strict=True)}
    assert details[planted["nan"]] == "1 non-finite flow values"
    assert "truncated PFM" in details[planted["truncated"]]
    assert "the scale's sign is wrong" in details[planted["byte_order"]]
    assert "missing" in details[planted["missing_right"]]
    train = deep["splits"][0]
    # a flow file serves both passes: 4 bad flows -> 8 samples; the missing frame: 2 as img_0 (future, past)
    # and 2 as img_1 (frames 7 and 9) of the clean pass
    assert train["invalid"] == 12 and train["found"] == 48
    proc = run_cli("edgeflow", "preflight", "--config", str(cfg), "--deep")
    assert "preflight: FAILED: 12 invalid samples would be excluded" in proc.stdout
    assert planted["nan"] in proc.stdout or planted["inf"] in proc.stdout

    code, allowed = preflight(cfg, "--deep", "--set", "data.allow_excluded_samples=12")
    assert code == 0 and allowed["train_samples"] + allowed["val_samples"] == 36


def test_sintel_defects_are_named(rendered: dict[str, Path], tmp_path: Path) -> None:
    root = copy(rendered, "sintel", tmp_path)
    (root / "training/flow/scene_1/frame_0002.flo").unlink()
    truncated = root / "training/flow/scene_2/frame_0001.flo"
    truncated.write_bytes(truncated.read_bytes()[:-8])
    nan = root / "training/flow/scene_2/frame_0003.flo"
    values = np.fromfile(nan, "<f4")
    values[100] = np.nan
    values.tofile(nan)
    cfg = write_config(tmp_path, {"dataset": "sintel", "root": str(root), "sintel_pass": "clean",
                                  "holdout_samples": 2})
    code, report = preflight(cfg, "--deep")
    assert code == 4
    found = problems(report)
    assert found == {"missing_flow": [str(root / "training/flow/scene_1/frame_0002.flo")],
                     "flo_file_size": [str(truncated)], "nonfinite_flow": [str(nan)]}


def test_exclude_list_leaves_samples_out_on_purpose_counts_and_records_them(rendered: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    root = copy(rendered, "ft3d", tmp_path)
    planted = plant_ft3d_defects(root)
    listing = tmp_path / "known_bad.txt"
    listing.write_text("# the original project's list of non-finite flow files\n"
                       f"{os.path.relpath(planted['nan'], root)}\n"
                       f"{planted['inf']}   # absolute works too\n"
                       "optical_flow/TRAIN/C/0999/into_future/left/OpticalFlowIntoFuture_0006_L.pfm\n")
    cfg = write_config(tmp_path, ft3d_data(root, exclude_list=str(listing)))
    code, report = preflight(cfg, "--deep")
    found = problems(report)
    assert sorted(found["excluded_by_list"]) == sorted([planted["nan"], planted["inf"]])
    assert "nonfinite_flow" not in found  # never checked: excluded first
    assert report["reason"].startswith("8 invalid samples")  # the 4 listed samples are not held against it
    note = [n for n in report["notes"] if "OpticalFlowIntoFuture_0006_L.pfm" in n]
    assert len(note) == 1 and "matches no sample file (not found)" in note[0]
    record = report["settings"]["exclusion"]
    assert record["samples"] == {"train": 4} and record["entries"] == 3 and len(record["not_found"]) == 1

    code, ok = preflight(cfg, "--deep", "--set", "data.allow_excluded_samples=8")
    assert code == 0
    text = run_cli("edgeflow", "preflight", "--config", str(cfg), "--deep", "--set",
                   "data.allow_excluded_samples=8").stdout
    assert "4 samples left out on purpose (data.exclude_list)" in text

    cfg_obj = config_mod.load(cfg, ["data.allow_excluded_samples=8"])
    splits = resolve_splits(cfg_obj)
    assert splits.exclusion is not None and splits.exclusion["samples"]["train"] == 4
    assert not {s.flow for s in splits.train} & {planted["nan"], planted["inf"]}

    listing.write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="data.exclude_list .*not UTF-8"):
        resolve_splits(cfg_obj)


def test_shipped_ft3d_stage_config_loads() -> None:
    from tests.helpers import REPO

    cfg = config_mod.load(REPO / "configs/supernet_ft3d_180x240.yaml")
    assert (cfg.data.dataset, cfg.data.ft3d_flow_divisor, cfg.eval.select_on) == ("ft3d", 12.5, "sintel-final")
    assert config_mod.split_size(cfg, cfg.eval.splits["sintel-final"]) == (416, 1024)
    assert cfg.checkpoint.init_from and cfg.checkpoint.resume_checkpoint == "best" and cfg.data.augment.enabled


def test_config_keys_of_the_data_sets_are_checked(tmp_path: Path) -> None:
    with pytest.raises(config_mod.ConfigError) as bad:
        config_mod.from_dict({"data": {"dataset": "ft3d", "ft3d_passes": ["clean", "dirty"], "ft3d_flow_divisor": 0,
                                       "sintel_pass": "albedo"},
                              "eval": {"splits": {"s": {"dataset": "sintel", "subset": "test"}}}})
    text = str(bad.value)
    for key in ("data.root", "data.ft3d_passes", "data.ft3d_flow_divisor", "data.sintel_pass",
                "eval.splits.s.subset", "eval.splits.s.root", "eval.select_on"):
        assert key in text, key
    with pytest.raises(config_mod.ConfigError, match="a test set is never used for selection"):
        config_mod.from_dict({"eval": {"splits": {"t": {"dataset": "ft3d", "root": "/x"}}, "select_on": "t"}})


# ------------------------------------------------------------------------------------------ packs

def arrays(ds) -> list[np.ndarray]:
    return [a.numpy() for batch in ds for a in batch]


def test_packs_of_ft3d_and_sintel_give_the_same_batches_and_go_stale(rendered: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    from edgeflow.data import pipeline

    root = copy(rendered, "ft3d", tmp_path)
    evals = {"splits": {"sintel-clean": {"dataset": "sintel", "subset": "clean", "root": str(rendered["sintel"]),
                                         "height": CROP[0], "width": CROP[1]}}}
    data = ft3d_data(root, packed_dir=str(tmp_path / "pack"))
    cfg_path = write_config(tmp_path, data, evals)
    proc = run_cli("edgeflow", "pack", "--config", str(cfg_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "pack train: 48 of 48 samples" in proc.stdout and "pack sintel-clean: 6 of 6" in proc.stdout
    png = config_mod.load(cfg_path)
    packed = config_mod.load(cfg_path, ["data.format=packed"])
    a, b = resolve_splits(png), resolve_splits(packed)
    for epoch in (0, 1):
        assert all(np.array_equal(x, y) for x, y in zip(
            arrays(pipeline.train_dataset(a.train, png, epoch)), arrays(pipeline.train_dataset(b.train, packed, epoch)),
            strict=True))
    for name in ("val", "sintel-clean"):
        sa, sb = a.eval_split(name), b.eval_split(name)
        assert [s.sample_id for s in sa.samples] == [s.sample_id for s in sb.samples]
        assert all(np.array_equal(x, y) for x, y in zip(
            arrays(pipeline.eval_dataset(sa.samples, png, batch_size=2, num_batches=2, size=sa.size)),
            arrays(pipeline.eval_dataset(sb.samples, packed, batch_size=2, num_batches=2, size=sb.size)),
            strict=True))

    # another selection of samples than the pack holds
    with pytest.raises(DataError, match="a pack of other samples"):
        resolve_splits(config_mod.load(cfg_path, ["data.format=packed", "data.ft3d_passes=[clean]"]))
    # a file deep in the layout changed since packing
    changed = Path(ft3d.flow_path(str(root), "TRAIN", "B", "0000", "into_past", "left", 8))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="stale.*optical_flow/TRAIN/B/0000/into_past/left/OpticalFlowIntoPast_0008"):
        resolve_splits(packed)


def test_deep_preflight_of_ft3d_and_sintel_imports_no_tensorflow(rendered: dict[str, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    evals = {"splits": {"sintel-final": {"dataset": "sintel", "root": str(rendered["sintel"]), "height": CROP[0],
                                         "width": CROP[1]}}}
    cfg = write_config(tmp_path, ft3d_data(rendered["ft3d"]), evals)
    code = ("import sys; from edgeflow.commands import preflight; "
            f"rc = preflight.main(['--config', {str(cfg)!r}, '--deep']); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'cv2')); "
            "print('imported:', bad); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "imported: []" in proc.stdout
    assert ("preflight: OK: 44 training and 4 validation samples (holdout of the training samples, seed 2024); "
            "evaluation splits: 6 in sintel-final") in proc.stdout


def test_a_resume_with_another_flow_divisor_is_refused(tmp_path: Path) -> None:
    from edgeflow.train.start import StartError, check_flow_meaning

    cfg = config_mod.from_dict({"data": {"dataset": "ft3d", "root": str(tmp_path), "holdout_samples": 1}})
    check_flow_meaning({"data_source": {"dataset": "ft3d", "flow_divisor": 12.5}}, cfg, tmp_path)
    check_flow_meaning({"signature": {}}, cfg, tmp_path)  # a run from before data sources were recorded
    with pytest.raises(StartError, match="trained on flow divided by 1.0 .* the config gives 12.5"):
        check_flow_meaning({"data_source": {"dataset": "ft3d", "flow_divisor": 1.0}}, cfg, tmp_path)
