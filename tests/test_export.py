"""`edgeflow export`: a fixed-arch subnet written as SavedModel / TFLite, checked against the supernet.

The source run is made as the trainer leaves one (config.yaml, run.json with its signature, a 'best'
checkpoint through CheckpointStore) from a freshly initialised supernet whose BN statistics are
scrambled, so recalibration visibly matters. Exports are real (TensorFlow's converters, Vela when
installed) at 32x48 and shared across assertions by module fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_service

from edgeflow import config as config_mod
from edgeflow.rundir import EXIT_BAD_INPUT, EXIT_OK, RunPaths, atomic_write_json, atomic_write_text
from edgeflow.space.cost import arch_info
from tests.helpers import run_cli, tiny_config

H, W = 32, 48
ARCH_CLI = "000000000"   # exported through the command line (with --vela when installed)
ARCH_API = "100001000"   # exported through the Python API: two blocks in EB0, a 5x5 H1
CAL_SAMPLES = 6
HAVE_VELA = __import__("importlib").util.find_spec("ethosu") is not None


def _make_run(tmp: Path, data: Path, *, checkpoint: bool = True) -> Path:
    import tensorflow as tf

    from edgeflow.model.supernet import Supernet
    from edgeflow.train.checkpoint import CheckpointStore
    from edgeflow.train.signature import signature

    cfg_path = tiny_config(tmp, data, name="src", eval={"batch_size": 4, "bn_recal_batches": 2,
                                                         "eval_batches_per_arch": 2})
    cfg = config_mod.load(cfg_path)
    paths = RunPaths(Path(cfg.runtime.output_root) / cfg.runtime.experiment_name)
    paths.root.mkdir(parents=True)
    atomic_write_text(paths.config, config_mod.dump(cfg))
    atomic_write_json(paths.run, {"experiment": "src", "status": "completed", "signature": signature(cfg),
                                  "code_version": "test"})
    if checkpoint:
        model = Supernet(seed=3)
        rng = np.random.default_rng(0)
        for v in model.bn_moving_variables:  # stale statistics that recalibration must replace
            v.assign(rng.uniform(0.5, 3.0, v.shape).astype(np.float32))
        CheckpointStore(paths.checkpoints).save("best", tf.train.Checkpoint(model=model).write, {"epoch": 4})
    return paths.root


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    return _make_run(tmp_path_factory.mktemp("export_src"), demo_data)


@pytest.fixture(scope="module")
def cli_export(source_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli_export") / "exported"
    args = ["edgeflow", "export", "--run", str(source_run), "--arch", ARCH_CLI, "--height", str(H),
            "--width", str(W), "--out", str(out), "--calibration-samples", str(CAL_SAMPLES)]
    if HAVE_VELA:
        args += ["--vela", "--vela-config", "ethos-u55-128"]
    proc = run_cli(*args)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    return out, json.loads((out / "export.json").read_text())


@pytest.fixture(scope="module")
def supernet_for(source_run: Path):
    """The eval protocol's view of an arch: the supernet recalibrated as evaluation does, its outputs."""
    import tensorflow as tf

    from edgeflow.train.evaluate import Evaluator, datasets
    from edgeflow.train.loss import accumulate
    from edgeflow.train.restore import open_run

    run = open_run(source_run, "best")
    model = run.build_model()
    recal, evals = datasets(run.cfg, run.splits.train, run.splits.val)
    evaluator = Evaluator(model, run.cfg)
    seen: dict[str, dict] = {}

    def view(code: str) -> dict:
        if code in seen:
            return seen[code]
        arch = [int(c) for c in code]
        # The evaluator's code run eagerly: tracing every branch of the supernet would dominate the test.
        tf.config.run_functions_eagerly(True)
        try:
            epe = evaluator.arch_epe(arch, recal, evals)  # leaves the statistics as found
            evaluator.recalibrate(arch, recal)
        finally:
            tf.config.run_functions_eagerly(False)
        xs, flows, uncs = [], [], []
        for x, _ in evals:
            flow, unc = accumulate(model(x, tf.constant(arch), training=False))[-1]
            xs.append(x.numpy())
            flows.append(flow.numpy())
            uncs.append(unc.numpy())
        seen[code] = {"epe": epe, "x": np.concatenate(xs), "flow": np.concatenate(flows),
                      "uncertainty": np.concatenate(uncs), "run": run}
        return seen[code]

    return view


def _interpreter(path: Path):
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run_float_tflite(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    runner = _interpreter(path).get_signature_runner()
    outs = [runner(x=sample[None].astype(np.float32)) for sample in x]
    return np.concatenate([o["flow"] for o in outs]), np.concatenate([o["uncertainty"] for o in outs])


# ---- the command-line export ------------------------------------------------------------------------

@pytest.mark.slow
def test_export_json_records_the_arch_its_source_and_calibration(cli_export, source_run: Path) -> None:
    out, record = cli_export
    info = arch_info(ARCH_CLI, H, W)
    assert record["arch"] == ARCH_CLI and record["input_size"] == [H, W] and record["output_size"] == [H, W]
    assert record["params"] == info["params_active"] and record["flops"] == info["flops"]
    run_json = json.loads((source_run / "run.json").read_text())
    src = record["source"]
    assert src["checkpoint"] == "best" and src["epoch"] == 4 and src["run_signature"] == run_json["signature"]
    assert Path(src["checkpoint_prefix"]).name.startswith("best-")
    from edgeflow.data.samples import sort_key
    from edgeflow.train.restore import open_run

    train_ids = sorted((s.sample_id for s in open_run(source_run).splits.train), key=sort_key)
    recal = record["bn_recalibration"]
    assert recal["batches"] == 2 and recal["samples"] == train_ids[:8]
    assert len(record["int8_calibration"]["samples"]) == CAL_SAMPLES
    assert record["int8_calibration"]["samples"] == record["bn_recalibration"]["samples"][:CAL_SAMPLES]
    assert record["eval_set"]["batches"] == 2 and len(record["eval_set"]["samples"]) == 8
    assert {p.name for p in out.iterdir()} >= {"saved_model", "model_float32.tflite", "model_int8.tflite",
                                               "export.json"}
    # --out is a link to the hidden folder beside it that holds the files; nothing else is left there
    assert out.is_symlink() and os.readlink(out).startswith(".exported.export-")
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, os.readlink(out)])


@pytest.mark.slow
def test_supernet_epe_is_the_evaluation_protocols(cli_export, supernet_for) -> None:
    _, record = cli_export
    ref = supernet_for(ARCH_CLI)
    assert record["supernet_epe"] == pytest.approx(ref["epe"], rel=1e-6)
    int8 = record["agreement"]["tflite_int8"]
    assert int8["supernet_epe"] == record["supernet_epe"] and np.isfinite(int8["epe"])
    assert int8["epe_increase"] == pytest.approx(int8["epe"] - record["supernet_epe"])
    for name in ("saved_model", "saved_model_frames", "tflite_float32"):
        assert record["agreement"][name]["within_tolerance"], (name, record["agreement"][name])


@pytest.mark.slow
def test_float_tflite_equals_the_supernet_and_int8_is_integer(cli_export, supernet_for) -> None:
    out, _ = cli_export
    ref = supernet_for(ARCH_CLI)
    flow, unc = _run_float_tflite(out / "model_float32.tflite", ref["x"])
    scale = np.abs(ref["flow"]).max()
    np.testing.assert_allclose(flow, ref["flow"], atol=1e-4 * (1 + scale))
    np.testing.assert_allclose(unc, ref["uncertainty"], atol=1e-4 * (1 + np.abs(ref["uncertainty"]).max()))
    interpreter = _interpreter(out / "model_int8.tflite")
    assert [d["dtype"] for d in interpreter.get_input_details()] == [np.int8]
    assert [d["dtype"] for d in interpreter.get_output_details()] == [np.int8, np.int8]
    # full integer: no float tensor anywhere (int32 only for biases and shapes)
    assert {d["dtype"] for d in interpreter.get_tensor_details()} <= {np.int8, np.int32}


_LOAD_WITHOUT_EDGEFLOW = r"""
import json, sys
sys.modules["edgeflow"] = None  # any import of edgeflow fails: the SavedModel must not need it
import numpy as np, tensorflow as tf
args = json.loads(sys.argv[1])
data = np.load(args["frames"])
m = tf.saved_model.load(args["model"])
out = m.signatures["serving_default"](frame0=tf.constant(data["f0"]), frame1=tf.constant(data["f1"]))
np.savez(args["result"], flow=out["flow"].numpy(), uncertainty=out["uncertainty"].numpy())
print(sorted(m.signatures.keys()))
"""


@pytest.mark.slow
def test_saved_model_serves_full_frames_in_plain_tensorflow(cli_export, supernet_for, tmp_path: Path) -> None:
    import cv2

    from edgeflow.data.samples import sort_key

    out, _ = cli_export
    ref = supernet_for(ARCH_CLI)
    run = ref["run"]
    first = sorted(run.splits.val, key=lambda s: sort_key(s.sample_id))[:2]  # the eval set's first two
    # Full-size frames as OpenCV reads them (BGR): the signature does the crop and the normalisation.
    f0 = np.stack([cv2.imread(s.img0, cv2.IMREAD_COLOR) for s in first])
    f1 = np.stack([cv2.imread(s.img1, cv2.IMREAD_COLOR) for s in first])
    assert f0.shape[1:3] != (H, W)
    np.savez(tmp_path / "frames.npz", f0=f0, f1=f1)
    args = json.dumps({"frames": str(tmp_path / "frames.npz"), "model": str(out / "saved_model"),
                       "result": str(tmp_path / "result.npz")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-I", "-c", _LOAD_WITHOUT_EDGEFLOW, args], cwd="/tmp", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "normalized" in proc.stdout and "serving_default" in proc.stdout
    result = np.load(tmp_path / "result.npz")
    assert result["flow"].shape == (2, H, W, 2)
    np.testing.assert_allclose(result["flow"], ref["flow"][:2], atol=1e-4 * (1 + np.abs(ref["flow"]).max()))
    np.testing.assert_allclose(result["uncertainty"], ref["uncertainty"][:2],
                               atol=1e-4 * (1 + np.abs(ref["uncertainty"]).max()))


@pytest.mark.slow
def test_vela_report(cli_export) -> None:
    # make setup installs the deploy extra, so CI (EDGEFLOW_REQUIRE_SERVICES=1) fails rather than skips
    require_service(HAVE_VELA, "Arm's Vela is not installed (pip install 'edgeflow[deploy]')")
    out, record = cli_export
    vela = record["vela"]
    assert vela["accelerator"] == "Ethos_U55_128"
    for key in ("sram_used_kib", "flash_used_kib", "cycles_total", "cycles_npu", "inferences_per_second"):
        assert vela[key] > 0, key
    # inferences per second is the clock over the cycles of one inference
    per_second = vela["core_clock_hz"] / vela["cycles_total"]
    assert vela["inferences_per_second"] == pytest.approx(per_second, rel=1e-3)
    assert vela["cpu_operators"] == len(vela["cpu_fallback"]) and vela["npu_operators"] > 0
    assert (out / vela["compiled_model"]).is_file() and (out / vela["summary_csv"]).is_file()


# ---- the Python API, a second arch -----------------------------------------------------------------

def _old_export(out: Path) -> Path:
    """An export made before (by this process: its hidden folder and the link to it), to be replaced."""
    from edgeflow.rundir.staging import hidden_name

    version = out.parent / hidden_name(out, "export")
    (version / "saved_model").mkdir(parents=True)
    (version / "export.json").write_text('{"arch": "old"}')
    out.symlink_to(version.name)
    return version


def _dead_writer_name(out: Path, kind: str) -> str:
    """The hidden folder name a writer process used, after that process ended (as after a SIGKILL)."""
    code = (f"from pathlib import Path; from edgeflow.rundir.staging import hidden_name; "
            f"print(hidden_name(Path({str(out)!r}), {kind!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_a_second_arch_through_the_api(source_run: Path, tmp_path: Path, supernet_for) -> None:
    from edgeflow.export.export import ExportRequest, export

    out = tmp_path / "api"
    old = _old_export(out)
    # What killed exports left: a half-written hidden folder (and one of an older edgeflow), and a link.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = [tmp_path / _dead_writer_name(out, "export"), tmp_path / f".api.partial-{dead.pid}"]
    for folder in killed:
        (folder / "saved_model").mkdir(parents=True)
        (folder / "model_float32.tflite").write_bytes(b"half")
    (tmp_path / _dead_writer_name(out, "export")).symlink_to(killed[0].name)
    record = export(ExportRequest(run=source_run, arch=ARCH_API, out=out, height=H, width=W,
                                  calibration_samples=CAL_SAMPLES), log=lambda _: None)
    # The old export is replaced whole; every leftover is gone.
    assert json.loads((out / "export.json").read_text())["arch"] == ARCH_API
    assert not old.exists() and not any(p.exists() or p.is_symlink() for p in killed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, os.readlink(out)])
    assert record["arch"] == ARCH_API and record["vela"] is None
    assert record["params"] == arch_info(ARCH_API, H, W)["params_active"]
    assert record["supernet_epe"] == pytest.approx(supernet_for(ARCH_API)["epe"], rel=1e-6)
    assert all(record["agreement"][n]["within_tolerance"] for n in ("saved_model", "tflite_float32"))
    ref = supernet_for(ARCH_API)
    flow, _ = _run_float_tflite(tmp_path / "api" / "model_float32.tflite", ref["x"])
    np.testing.assert_allclose(flow, ref["flow"], atol=1e-4 * (1 + np.abs(ref["flow"]).max()))


def test_a_failure_midway_leaves_nothing(source_run: Path, tmp_path: Path, monkeypatch) -> None:
    from edgeflow.export import formats
    from edgeflow.export.export import ExportRequest, export

    def broken(module, path: Path) -> None:
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"half")  # something half-written in the temporary folder
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(formats, "write_saved_model", broken)
    with pytest.raises(RuntimeError, match="converter exploded"):
        export(ExportRequest(run=source_run, arch=ARCH_CLI, out=tmp_path / "x", height=H, width=W),
               log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


# ---- bad input: one line, exit 2, nothing written -----------------------------------------------------

def _main(capsys, *args: str) -> tuple[int, str]:
    from edgeflow.commands.export import main

    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--arch", "00000000x"], "--arch"),
    (["--arch", "000000003"], "options outside"),
    (["--arch", ARCH_CLI, "--height", "33", "--width", "15"], "at least 16x16"),
    (["--arch", ARCH_CLI, "--device", "no-such-board"], "known devices"),
    (["--arch", ARCH_CLI, "--height", "8", "--width", str(W)], "at least 16x16"),
])
def test_bad_input_is_one_line_and_writes_nothing(source_run: Path, tmp_path: Path, capsys, extra,
                                                  message) -> None:
    code, err = _main(capsys, "--run", str(source_run), "--out", str(tmp_path / "o"), *extra)
    assert code == EXIT_BAD_INPUT, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_the_checkpoint(tmp_path: Path, demo_data: Path, capsys) -> None:
    (tmp_path / "src").mkdir()
    run = _make_run(tmp_path / "src", demo_data, checkpoint=False)
    code, err = _main(capsys, "--run", str(run), "--arch", ARCH_CLI, "--out", str(tmp_path / "o"))
    assert code == EXIT_BAD_INPUT and "no 'best' checkpoint" in err, err
    assert not (tmp_path / "o").exists()


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("mine")


@pytest.mark.parametrize("what, make", [
    ("a folder with files", _folder),
    ("an empty folder", Path.mkdir),
    ("a file", lambda p: p.write_text("mine")),
    ("someone's link to their folder", lambda p: (_folder(p.with_name("theirs")), p.symlink_to("theirs"))),
    ("a link to a hidden folder not named for it", lambda p: (_folder(p.with_name(".x.export-h-1-a")),
                                                               p.symlink_to(".x.export-h-1-a"))),
])
def test_an_existing_out_that_is_not_an_export_is_left_alone(source_run: Path, tmp_path: Path, capsys, what,
                                                             make) -> None:
    out = tmp_path / "o"
    make(out)
    before = {str(p.relative_to(tmp_path)): (p.is_symlink(), p.is_file() and p.read_text())
              for p in tmp_path.rglob("*")}
    code, err = _main(capsys, "--run", str(source_run), "--arch", ARCH_CLI, "--out", str(out))
    assert code == EXIT_BAD_INPUT and "is not an export made by edgeflow" in err and str(out) in err, (what, err)
    assert len(err.strip().splitlines()) == 1
    assert {str(p.relative_to(tmp_path)): (p.is_symlink(), p.is_file() and p.read_text())
            for p in tmp_path.rglob("*")} == before, what


_STOP_EXPORT = r"""
import os, signal, sys
from edgeflow.cli import main
from edgeflow.export import formats
real = formats.write_saved_model
def write_then_sigterm(*args, **kwargs):  # the moment the export is half written
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
formats.write_saved_model = write_then_sigterm
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_mid_export_leaves_the_old_export_and_nothing_else(source_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    old = _old_export(out)
    proc = subprocess.run([sys.executable, "-c", _STOP_EXPORT, "export", "--run", str(source_run), "--arch",
                           ARCH_CLI, "--height", str(H), "--width", str(W), "--calibration-samples", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "stopped by SIGTERM" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert os.readlink(out) == old.name and (out / "export.json").read_text() == '{"arch": "old"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, old.name])


def test_missing_vela_names_the_extra(source_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    # As if the deploy extra were not installed (both names: an earlier test in this process may have
    # imported Vela, and a module already imported is found without looking at its parent).
    monkeypatch.setitem(sys.modules, "ethosu", None)
    monkeypatch.setitem(sys.modules, "ethosu.vela", None)
    code, err = _main(capsys, "--run", str(source_run), "--arch", ARCH_CLI, "--out", str(tmp_path / "o"),
                      "--vela")
    assert code == EXIT_BAD_INPUT, err
    assert "edgeflow[deploy]" in err
    assert not (tmp_path / "o").exists()
