"""Searching for a device: device files, Vela figures in the loop, limits as constraints, the device
cache, deployed (int8) EPE at the device's input size.

Real Vela (the `deploy` extra), real TensorFlow converters, at a tiny deployment size (33x45: odd
sides, as the established target's 157x203) on a 32x48 run of the demo data. The search's device and
deployment results are shared by the tests of this file through module fixtures.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import require_service

from edgeflow.commands import export as export_cmd
from edgeflow.commands import rank as rank_cmd
from edgeflow.commands import search as search_cmd
from edgeflow.export import device as device_mod
from edgeflow.export import vela as vela_mod
from edgeflow.nas import device as dev
from tests.helpers import REPO
from tests.nas_helpers import make_run

HAVE_VELA = vela_mod.available()
INI = REPO / "configs/devices/himax-wiseeye2.ini"
SIZE = (33, 45)
FLASH_LIMIT = 3400.0  # KiB: the space's weights need about 2,600 to 6,400 KiB, so some archs break it
SEARCH = ["--objectives", "epe,vela_latency", "--evaluations", "8", "--population", "4", "--seed", "3"]


def device_file(folder: Path, name: str, **limits: float | int | None) -> Path:
    lines = ["accelerator: ethos-u55-64", f"vela_config: {INI}", "system_config: WiseEye2_HX6538",
             "memory_mode: WiseEye2_Shared_Sram", "arena_cache_kib: 1432", f"input_size: [{SIZE[0]}, {SIZE[1]}]",
             "limits:"]
    lines += [f"  {k}: {'null' if v is None else v}" for k, v in limits.items()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def figure_lines(run: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((run / "device").glob("*/figures.jsonl"))
            for line in p.read_text().splitlines()]


# ---- device files: what users write, checked at once --------------------------------------------------

def test_the_shipped_devices_load() -> None:
    himax = device_mod.load("himax-wiseeye2")
    assert (himax.accelerator, himax.input_size) == ("ethos-u55-64", (157, 203))
    assert himax.limits.max_sram_kib == 1432 and himax.limits.cpu_ops == 0
    assert himax.arena_cache_bytes == 1432 * 1024
    assert himax.vela_config == (REPO / "configs/devices/himax-wiseeye2.ini").resolve()
    stock = device_mod.load(REPO / "configs/devices/ethos-u55-128.yaml")
    assert stock.accelerator == "ethos-u55-128" and stock.limits.cpu_ops == 0
    if HAVE_VELA:
        assert stock.vela_config.name == "vela.ini"  # Vela's own configuration file
    assert himax.target_digest != stock.target_digest


def test_limits_are_pymoo_constraints() -> None:
    limits = device_mod.Limits(max_sram_kib=100.0, min_fps=10.0, cpu_ops=0)
    fig = {"vela_sram_kib": 150.0, "vela_flash_kib": 1.0, "vela_fps": 20.0, "vela_cpu_ops": 2}
    assert limits.constraints(fig) == [0.5, -1.0, 2.0]
    assert [v.limit for v in limits.violations(fig)] == ["max_sram_kib", "cpu_ops"]
    assert "needs 150.0 KiB SRAM" in limits.violations(fig)[0].text()


@pytest.mark.parametrize("edit, message", [
    ({"ini": "no section header\nx = 1\n"}, "not a valid .ini file"),
    ({"ini": "[System_Config.WiseEye2_HX6538]\ncore_clock=400e6\n[System_Config.WiseEye2_HX6538]\n"},
     "not a valid .ini file"),
    ({"memory_mode": "Missing_Mode"}, "no section [Memory_Mode.Missing_Mode]"),
    ({"system_config": "Nope"}, "its System_Config sections: WiseEye2_HX6538"),
    ({"ini": INI.read_text().replace("axi0_port=Sram", "axi0_port=Spam")}, "Vela cannot use"),
    ({"input_size": "[15, 45]"}, "at least 16x16"),
    ({"input_size": "[33]"}, "expected [height, width]"),
    ({"accelerator": "ethos-u99"}, "accelerator: must be one of"),
    ({"extra": "limits:\n  max_sram_kb: 10"}, "did you mean limits.max_sram_kib"),
    ({"extra": "limits:\n  min_fps: -1"}, "limits.min_fps: must be > 0"),
    ({"vela_config": "absent.ini"}, "absent.ini: no such file"),
])
def test_a_bad_device_is_one_line_and_writes_nothing(tmp_path: Path, capsys, edit: dict, message: str) -> None:
    if "Vela cannot use" in message:
        require_service(HAVE_VELA, "Arm's Vela is not installed (pip install 'edgeflow[deploy]')")
    ini = tmp_path / "board.ini"
    ini.write_text(edit.get("ini", INI.read_text()))
    fields = {"accelerator": "ethos-u55-64", "vela_config": "board.ini", "system_config": "WiseEye2_HX6538",
              "memory_mode": "WiseEye2_Shared_Sram", "input_size": "[33, 45]"}
    fields.update({k: v for k, v in edit.items() if k in fields})
    text = "".join(f"{k}: {v}\n" for k, v in fields.items()) + edit.get("extra", "")
    (tmp_path / "board.yaml").write_text(text)
    run = tmp_path / "run"
    run.mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = search_cmd.main(["--run", str(run), "--objectives", "epe,vela_latency", "--device",
                            str(tmp_path / "board.yaml")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before


def test_device_objectives_need_a_device_and_rank_deploy_needs_one_too(tmp_path: Path, capsys) -> None:
    assert search_cmd.main(["--run", str(tmp_path), "--objectives", "epe,vela_latency"]) == 2
    assert "need --device" in capsys.readouterr().err
    assert search_cmd.main(["--run", str(tmp_path), "--objectives", "epe,vela_sram", "--device", "no-such"]) == 2
    assert "known devices: ethos-u55-128, himax-wiseeye2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        rank_cmd.main(["--run", str(tmp_path), "--archs", "000000000", "--deploy"])
    assert exit_.value.code == 2 and "--deploy needs --device" in capsys.readouterr().err


def test_a_front_csv_selects_archs_for_rank(tmp_path: Path) -> None:
    from edgeflow.nas.rank import read_archs_file

    (tmp_path / "front.csv").write_text("code,epe_mean,vela_inference_ms\n000021222,5.1,6.7\n200022102,5.3,3.1\n")
    assert read_archs_file(tmp_path / "front.csv") == ["000021222", "200022102"]


# ---- a device search --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict:
    """One search of 2 generations against a flash limit, with 2 worker processes compiling."""
    require_service(HAVE_VELA, "Arm's Vela is not installed (pip install 'edgeflow[deploy]')")
    tmp = tmp_path_factory.mktemp("device")
    run = make_run(tmp, demo_data)
    board = device_file(tmp, "board", max_flash_kib=FLASH_LIMIT, cpu_ops=0)
    code = search_cmd.main(["--run", str(run), *SEARCH, "--device", str(board), "--name", "s", "--workers", "2"])
    assert code == 0
    return {"run": run, "board": board, "tmp": tmp, "folder": run / "search/s"}


def _dominates(a: dict, b: dict) -> bool:
    x = (float(a["epe_mean"]), float(a["vela_inference_ms"]))
    y = (float(b["epe_mean"]), float(b["vela_inference_ms"]))
    return x[0] <= y[0] and x[1] <= y[1] and x != y


@pytest.mark.slow
def test_the_front_meets_the_limits_and_infeasible_archs_say_why(searched: dict) -> None:
    folder = searched["folder"]
    front = read_csv(folder / "front.csv")
    archs = read_csv(folder / "archs.csv")
    feasible = [a for a in archs if a["feasible"] == "1"]
    infeasible = [a for a in archs if a["feasible"] == "0"]
    assert front and infeasible, "the limit should split the visited archs"
    for f in front:  # every member fits the device
        assert float(f["vela_flash_kib"]) <= FLASH_LIMIT and int(f["vela_cpu_ops"]) == 0
        assert not any(_dominates(a, f) for a in feasible), f"{f['code']} is dominated"
    codes = {f["code"] for f in front}
    for a in feasible:  # every other feasible arch is dominated by a member
        assert a["code"] in codes or any(_dominates(f, a) for f in front)
    for a in infeasible:  # listed with the limit it broke, its figure, and never evaluated
        assert a["violated"].startswith(f"max_flash_kib {FLASH_LIMIT:g}: needs")
        assert float(a["vela_flash_kib"]) > FLASH_LIMIT and a["epe_mean"] == ""
    state = json.loads((folder / "search_state.json").read_text())
    assert state["complete"] and state["device"]["limits"]["max_flash_kib"] == FLASH_LIMIT
    # every figure says what it was computed on
    (cache,) = (searched["run"] / "device").iterdir()
    key = json.loads((cache / "key.json").read_text())
    assert key["vela_version"] == vela_mod.require() and key["input_size"] == list(SIZE)
    assert key["device"]["target_digest"] == device_mod.load(searched["board"]).target_digest
    assert key["checkpoint"]["digest"] == state["checkpoint"]["digest"]


@pytest.mark.slow
def test_the_report_puts_the_front_and_the_baseline_side_by_side(searched: dict) -> None:
    rows = read_csv(searched["folder"] / "deploy_report.csv")
    front = [f["code"] for f in read_csv(searched["folder"] / "front.csv")]
    assert [r["code"] for r in rows if r["role"] != "baseline"] == front
    assert rows[-1]["code"] == dev.BASELINE and "baseline" in rows[-1]["role"]
    for r in rows:
        for column in ("epe_train_f32", "epe_deploy_f32", "epe_deploy_int8", "vela_inference_ms", "vela_sram_kib"):
            assert math.isfinite(float(r[column])), column
    train = {r["code"]: r for r in read_csv(searched["folder"] / "archs.csv")}
    for r in rows:
        if r["code"] in train:  # float32 at the training size is the search's own EPE
            assert float(r["epe_train_f32"]) == float(train[r["code"]]["epe_mean"])
    deploy_folder = searched["run"] / f"rank/best-000001_{SIZE[0]}x{SIZE[1]}"
    key = json.loads((deploy_folder / "key.json").read_text())
    assert key["protocol"]["input_size"] == list(SIZE)


@pytest.mark.slow
def test_a_rerun_reuses_the_device_cache_without_compiling(searched: dict, monkeypatch, capsys) -> None:
    before = figure_lines(searched["run"])
    calls = []

    def no_compile(*args, **kwargs):
        calls.append(args)
        raise AssertionError("Vela ran again")

    monkeypatch.setattr(vela_mod, "compile_int8", no_compile)
    capsys.readouterr()
    assert search_cmd.main(["--run", str(searched["run"]), *SEARCH, "--device", str(searched["board"]),
                            "--name", "again", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "device figures: 0 compiled" in out
    assert read_csv(searched["folder"].parent / "again/front.csv") == read_csv(searched["folder"] / "front.csv")
    # `rank --device` finds the same figures
    front = [f["code"] for f in read_csv(searched["folder"] / "front.csv")]
    assert rank_cmd.main(["--run", str(searched["run"]), "--archs", *front, "--device", str(searched["board"]),
                          "--workers", "1"]) == 0
    assert "device figures: 0 compiled" in capsys.readouterr().out
    assert calls == [] and figure_lines(searched["run"]) == before


@pytest.mark.slow
def test_no_arch_meets_the_device_after_the_first_generation(searched: dict, capsys) -> None:
    # Same target as the search (so its first generation's figures are cached), a limit nothing meets.
    tight = device_file(searched["tmp"], "tight", max_flash_kib=100)
    before = figure_lines(searched["run"])
    capsys.readouterr()
    code = search_cmd.main(["--run", str(searched["run"]), *SEARCH, "--device", str(tight), "--name", "tight",
                            "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no arch of the first generation (4) meets the limits of device tight" in err
    assert "the closest" in err and "max_flash_kib 100: needs" in err and len(err.strip().splitlines()) == 1
    assert not (searched["run"] / "search/tight").exists()
    assert figure_lines(searched["run"]) == before


@pytest.mark.slow
def test_rank_computes_the_device_figures_of_its_shard(searched: dict, monkeypatch, capsys) -> None:
    compiled: list[str] = []
    real = vela_mod.compile_int8

    def counting(model: Path, *args, **kwargs):
        compiled.append(model.stem)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(vela_mod, "compile_int8", counting)
    fresh = ["111111111", "101010101"]
    assert not {line["code"] for line in figure_lines(searched["run"])} & set(fresh)
    for k, only in ((0, ["--figures-only"]), (1, [])):
        assert rank_cmd.main(["--run", str(searched["run"]), "--archs", *fresh, "--device", str(searched["board"]),
                              "--shard", f"{k}/2", "--workers", "1", "--name", "shards", *only]) == 0
        assert compiled == fresh[:k + 1]  # each element compiles its own shard only
    assert {line["code"] for line in figure_lines(searched["run"])} >= set(fresh)
    # --figures-only evaluated nothing: only the second element's arch has an EPE in the ranking
    ranked = read_csv(searched["run"] / "rank/shards/results.csv")
    assert [r["code"] for r in ranked] == fresh[1:]
    capsys.readouterr()


# ---- deployed EPE -------------------------------------------------------------------------------------------

def _interpreter_epe(model_path: Path, run_dir: Path) -> float:
    """EPE of a TFLite model on the run's eval batches at the model's input size, computed here."""
    import tensorflow as tf

    from edgeflow.data.pipeline import eval_dataset
    from edgeflow.export.deploy import at_size
    from edgeflow.train.loss import resize_label
    from edgeflow.train.restore import open_run

    with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to another package
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(model_path))
    runner = interpreter.get_signature_runner()
    (inp,) = runner.get_input_details().values()
    flow_out = runner.get_output_details()["flow"]
    h, w = inp["shape"][1:3]
    run = at_size(open_run(run_dir), int(h), int(w))
    cfg = run.cfg
    epes = []
    for x, label in eval_dataset(run.splits.val, cfg, batch_size=cfg.eval.batch_size,
                                 num_batches=cfg.eval.eval_batches_per_arch):
        scale, zero = inp["quantization"]
        o_scale, o_zero = flow_out["quantization"]
        flows = []
        for sample in x.numpy():
            q = np.clip(np.rint(sample / scale + zero), -128, 127).astype(np.int8)
            flows.append((runner(x=q[None])["flow"].astype(np.float32) - o_zero) * o_scale)
        flow = np.concatenate(flows)
        target = resize_label(label, tf.constant(flow)).numpy()
        epes.append(float(np.mean(np.sqrt(np.sum((flow - target) ** 2, axis=-1)))))
    return float(np.mean(epes))


@pytest.mark.slow
def test_deployed_epe_is_the_int8_models_epe_in_the_interpreter(searched: dict, tmp_path: Path) -> None:
    rows = {r["code"]: r for r in read_csv(searched["folder"] / "deploy_report.csv")}
    deploy_folder = searched["run"] / f"rank/best-000001_{SIZE[0]}x{SIZE[1]}"
    for code, r in rows.items():
        epe = _interpreter_epe(deploy_folder / "int8" / f"{code}.tflite", searched["run"])
        assert float(r["epe_deploy_int8"]) == pytest.approx(epe, rel=1e-5, abs=1e-6), code
    # `export --device` makes the same int8 model and reports the same deployed EPE
    out = tmp_path / "exported"
    assert export_cmd.main(["--run", str(searched["run"]), "--arch", dev.BASELINE, "--device",
                            str(searched["board"]), "--out", str(out)]) == 0
    record = json.loads((out / "export.json").read_text())
    assert record["input_size"] == list(SIZE) and record["device"]["name"] == "board"
    assert (out / "model_int8.tflite").read_bytes() == (deploy_folder / "int8" / f"{dev.BASELINE}.tflite").read_bytes()
    assert record["agreement"]["tflite_int8"]["epe"] == pytest.approx(float(rows[dev.BASELINE]["epe_deploy_int8"]),
                                                                      rel=1e-9)
    assert record["agreement"]["tflite_int8"]["supernet_epe"] == pytest.approx(
        float(rows[dev.BASELINE]["epe_deploy_f32"]), rel=1e-6)
    assert record["vela"]["accelerator"] == "Ethos_U55_64" and record["vela"]["system_config"] == "WiseEye2_HX6538"


@pytest.mark.slow
def test_deployed_epe_as_the_objective(searched: dict) -> None:
    # One generation, the device figures cached: every feasible arch is converted and run in int8.
    assert search_cmd.main(["--run", str(searched["run"]), "--objectives", "deployed_epe,vela_latency",
                            "--evaluations", "4", "--population", "4", "--seed", "3", "--device",
                            str(searched["board"]), "--name", "deployed", "--workers", "1"]) == 0
    folder = searched["run"] / "search/deployed"
    archs = [a for a in read_csv(folder / "archs.csv") if a["feasible"] == "1"]
    int8 = {r["code"]: r for r in map(json.loads, (searched["run"] / f"rank/best-000001_{SIZE[0]}x{SIZE[1]}"
                                                   / "int8.jsonl").read_text().splitlines())}
    assert archs and all(float(a["epe_int8"]) == int8[a["code"]]["epe_int8"] for a in archs)
    front = read_csv(folder / "front.csv")
    for f in front:
        assert not any(float(a["epe_int8"]) <= float(f["epe_int8"])
                       and float(a["vela_inference_ms"]) <= float(f["vela_inference_ms"])
                       and (a["epe_int8"], a["vela_inference_ms"]) != (f["epe_int8"], f["vela_inference_ms"])
                       for a in archs), f"{f['code']} is dominated in (int8 EPE, Vela latency)"
