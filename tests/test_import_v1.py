"""import-v1: a checkpoint in the original trainer's format becomes an edgeflow run, bit for bit.

The source checkpoints are written here with tf.compat.v1 variables and the tf.compat.v1 Saver, named
and shaped exactly as the original trainer stores them. The list of the 293 model variables is
tests/data/original_v1_variables.tsv (names and shapes as the original's checkpoints hold them); it is
independent of the importer's mapping rules, and so is the reference forward pass below, which looks
the weights up by the original's layer names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeflow import config as config_mod
from edgeflow.rundir import read_events
from tests.helpers import tiny_config

TSV = Path(__file__).parent / "data" / "original_v1_variables.tsv"
META = {"checkpoint_path": "outputs/supernet/old/checkpoints/supernet_best.ckpt", "epoch": 49, "metric": 4.9512,
        "global_step": 34741, "best_metric": 4.9512, "bad_epochs": 3,
        "fairness_counts": {str(b): {"0": 104223, "1": 104223, "2": 104223} for b in range(9)},
        "extra": {"row": {"mean_epe_12": 4.9512, "std_epe_12": 0.31}}}
ARCHS = ("000000000", "222222222", "012012012", "210210210", "000021222", "121201011")


def tsv_variables() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        rows.append((name, tuple(int(s) for s in shape.split("x"))))
    return rows


def source_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in tsv_variables():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "kernel":
            value = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:3])), size=shape)
        elif leaf == "gamma":
            value = rng.uniform(0.5, 1.5, size=shape)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 2.0, size=shape)
        else:  # beta, moving_mean
            value = rng.normal(0.0, 0.1, size=shape)
        arrays[name] = value.astype(np.float32)
    return arrays


def bookkeeping(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the original saves besides the model: Adam slots, beta powers, gradient accumulators."""
    trainable = [n for n in arrays if not n.endswith(("moving_mean", "moving_variance"))]
    extra = {"beta1_power": np.float32(0.9), "beta2_power": np.float32(0.999)}
    for i, name in enumerate(trainable):
        extra[f"{name}/Adam"] = np.zeros_like(arrays[name])
        extra[f"{name}/Adam_1"] = np.zeros_like(arrays[name])
        extra[f"strict_accum_{i}"] = np.zeros_like(arrays[name])
    return extra


def write_v1(folder: Path, arrays: dict[str, np.ndarray], meta: dict | None = META,
             name: str = "supernet_best.ckpt") -> Path:
    """A Saver V2 checkpoint keyed by the original's names, as its trainer writes it, plus .meta.json."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    variables = {n: tf.compat.v1.Variable(v, name=n.replace("/", "_")) for n, v in arrays.items()}
    prefix = folder / name
    tf.compat.v1.train.Saver(var_list=variables).save(None, str(prefix), write_meta_graph=False)
    if meta is not None:
        Path(f"{prefix}.meta.json").write_text(json.dumps(dict(meta, checkpoint_path=str(prefix))))
    return prefix


def find(names, pattern: str) -> str:
    hits = [n for n in names if re.fullmatch(pattern, n)]
    assert len(hits) == 1, (pattern, hits)
    return hits[0]


def expected_source(ours: str, names) -> str:
    """The original's variable for one of ours, found by its documented layer names (not the importer's rules)."""
    p = ours.split("/")
    layer, leaf = p[0], p[-1]
    if p[1].startswith("depth"):
        d, i = int(p[1][5:]), int(p[2][5:]) + 1
        own = {"conv1": "conv1_conv", "bn1": "conv1_bn", "conv2": "conv2", "bn2": "bn2"}[p[3]]
        return find(names, rf"supernet_backbone/{layer}/branch{d}_block{i}/(.*/)?{own}/{leaf}")
    if p[1] == "choice":
        return find(names, rf"supernet_head/{layer}/.*/{p[2]}_conv/{leaf}")
    if layer.endswith("Out"):
        return find(names, rf"supernet_head/{layer}/.*/{p[1]}/{leaf}")
    own = {("E", "conv"): f"{layer}_conv", ("E", "bn"): f"{layer}_bn", ("D", "conv"): f"{layer}Conv",
           ("D", "bn"): f"{layer}BN", ("U", "conv"): f"{layer}_conv", ("U", "bn"): f"{layer}BN",
           ("H", "bn"): f"{layer}BN"}[(layer[0], p[1])]
    return find(names, rf"supernet_(backbone|head)/.*/{own}/{leaf}")


def reference_forward(a: dict[str, np.ndarray], x, arch: str, batch_stats: bool = False):
    """The supernet computed from the original's arrays with plain TF ops, looked up by layer name."""
    import tensorflow as tf

    names = list(a)

    def w(pattern: str):
        return tf.constant(a[find(names, pattern)])

    def bn(h, scope: str):
        g, b = w(rf".*/{scope}/gamma"), w(rf".*/{scope}/beta")
        if batch_stats:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(h, g, b, epsilon=1e-5, is_training=True)
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(h, g, b, mean=w(rf".*/{scope}/moving_mean"),
                                                       variance=w(rf".*/{scope}/moving_variance"),
                                                       epsilon=1e-5, is_training=False)
        return y

    def conv(h, kernel_pattern: str, stride: int = 1):
        return tf.nn.conv2d(h, w(kernel_pattern), strides=stride, padding="SAME")

    def up(h):
        return tf.raw_ops.ResizeBilinear(images=h, size=tf.shape(h)[1:3] * 2, align_corners=False,
                                         half_pixel_centers=False)

    def depth(h, block: str, option: int):
        for i in range(1, option + 2):
            s = rf"{block}/branch{option + 1}_block{i}/(.*/)?"
            r = tf.nn.relu(bn(conv(h, rf".*{s}conv1_conv/kernel"), rf"{block}/branch{option + 1}_block{i}/.*conv1_bn"))
            r = bn(conv(r, rf".*{s}conv2/kernel"), rf"{block}/branch{option + 1}_block{i}/(.*/)?bn2")
            h = tf.nn.relu(r + h)
        return h

    k = lambda digit: (3, 5, 7)[int(digit)]  # noqa: E731
    h = tf.nn.relu(bn(conv(x, r".*/E0_conv/kernel", 2), "E0_bn"))
    h = tf.nn.relu(bn(conv(h, r".*/E1_conv/kernel", 2), "E1_bn"))
    h = depth(h, "EB0", int(arch[0]))
    h = tf.nn.relu(bn(conv(h, r".*/Down1Conv/kernel", 2), "Down1BN"))
    h = depth(h, "EB1", int(arch[1]))
    h = tf.nn.relu(bn(conv(h, r".*/Down2Conv/kernel", 2), "Down2BN"))
    h = depth(h, "DB0", int(arch[2]))
    h = tf.nn.relu(bn(conv(up(h), r".*/Up1_conv/kernel"), "Up1BN"))
    h = depth(h, "DB1", int(arch[3]))
    h = tf.nn.relu(bn(conv(up(h), r".*/Up2_conv/kernel"), "Up2BN"))
    out0 = conv(h, rf".*H0Out/.*/k{k(arch[4])}/kernel")
    h = tf.nn.relu(bn(conv(up(h), rf".*H1/.*/k{k(arch[5])}_conv/kernel"), "H1BN"))
    out1 = conv(h, rf".*H1Out/.*/k{k(arch[6])}/kernel")
    h = tf.nn.relu(bn(conv(up(h), rf".*H2/.*/k{k(arch[7])}_conv/kernel"), "H2BN"))
    out2 = conv(h, rf".*H2Out/.*/k{k(arch[8])}/kernel")
    return [out0.numpy(), out1.numpy(), out2.numpy()]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return source_arrays()


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, arrays) -> Path:
    """An old run folder: the 293 model variables plus the 545 optimizer/bookkeeping ones, and .meta.json."""
    return write_v1(tmp_path_factory.mktemp("old_run") / "checkpoints", {**arrays, **bookkeeping(arrays)})


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory, demo_data) -> Path:
    return tiny_config(tmp_path_factory.mktemp("cfg"), demo_data, name="imported_cfg")


@pytest.fixture(scope="module")
def imported(tmp_path_factory, old_run, tiny_cfg) -> tuple[Path, str]:
    from edgeflow.cli import main

    out = tmp_path_factory.mktemp("runs") / "imported"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["import-v1", "--checkpoint", f"{old_run}.index", "--config", str(tiny_cfg), "--out", str(out)])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def test_tsv_is_the_documented_model(arrays):
    assert len(arrays) == 293
    assert sum(a.size for a in arrays.values()) == 12_137_280
    trainable = [a.size for n, a in arrays.items() if not n.endswith(("moving_mean", "moving_variance"))]
    assert sum(trainable) == 12_122_016
    assert len(bookkeeping(arrays)) == 545


def test_every_variable_is_imported_bit_for_bit(imported, arrays):
    from edgeflow.train.restore import open_run

    out, stdout = imported
    assert "imported 293 model variables" in stdout
    assert "ignored 545 optimizer/bookkeeping variables (adam_slots 362, adam_beta_powers 2, " \
           "gradient_accumulators 181)" in stdout
    model = open_run(out).build_model()
    ours = {v.name.split(":")[0]: v.numpy() for v in model.variables}
    assert len(ours) == 293
    used = set()
    for name, value in ours.items():
        source = expected_source(name, arrays)
        used.add(source)
        assert value.dtype == np.float32 and value.shape == arrays[source].shape, name
        assert np.array_equal(value.view(np.uint32), arrays[source].view(np.uint32)), (name, source)
    assert used == set(arrays)


def test_forward_equals_reference_computed_from_the_source_arrays(imported, arrays):
    import tensorflow as tf

    from edgeflow.train.restore import open_run

    model = open_run(imported[0]).build_model()
    x = np.random.default_rng(1).uniform(0, 1, size=(2, 32, 48, 6)).astype(np.float32)
    before = [v.numpy() for v in model.bn_moving_variables]
    for arch in ARCHS:
        code = tf.constant([int(c) for c in arch], tf.int32)
        got = [o.numpy() for o in model(x, code, training=False)]
        want = reference_forward(arrays, x, arch)
        assert [g.shape for g in got] == [(2, 8, 12, 4), (2, 16, 24, 4), (2, 32, 48, 4)]
        for g, r in zip(got, want, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=arch)
        # The original's evaluation protocol: batch statistics, moving statistics untouched.
        got_bs = [o.numpy() for o in model(x, code, training=True, bn_momentum=None)]
        for g, r in zip(got_bs, reference_forward(arrays, x, arch, batch_stats=True), strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=arch)
    after = [v.numpy() for v in model.bn_moving_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_run_files_record_the_source_and_the_uncalibrated_statistics(imported, old_run, tiny_cfg):
    from edgeflow.train.restore import open_run

    out = imported[0]
    run = json.loads((out / "run.json").read_text())
    src = run["imported_from"]
    assert run["status"] == "imported" and run["experiment"] == "imported"
    assert src["checkpoint"] == str(old_run.resolve())
    assert (src["epoch"], src["global_step"], src["metric"], src["best_metric"], src["bad_epochs"]) == \
           (49, 34741, 4.9512, 4.9512, 3)
    assert src["fairness_counts"] == META["fairness_counts"]
    assert src["fairness_counts_by_block"] == [[104223] * 3] * 9
    assert src["ignored"] == {"adam_slots": 362, "adam_beta_powers": 2, "gradient_accumulators": 181,
                              "global_step": 0, "other": 0}
    assert run["bn_calibrated"] is False
    marked = run["uncalibrated_bn"]
    assert len(marked) == 96 and all(re.fullmatch(r"(EB|DB)[01]/depth\d/block\d/bn[12]/moving_(mean|variance)", n)
                                     for n in marked)
    state = json.loads((out / "state.json").read_text())
    assert (state["status"], state["epoch"], state["step"], state["bad_epochs"]) == ("imported", 49, 34741, 3)
    handle = open_run(out, "latest")
    assert handle.pointer.prefix == open_run(out, "best").pointer.prefix  # one copy, both pointers
    assert not handle.bn_calibrated and len(handle.uncalibrated_bn) == 96
    saved = config_mod.load(out / "config.yaml")
    assert saved.runtime.experiment_name == "imported" and saved.data.input_height == 32
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def refused(tmp_path: Path, prefix: Path, tiny_cfg: Path, capsys) -> str:
    from edgeflow.cli import main

    out = tmp_path / "new_run"
    code = main(["import-v1", "--checkpoint", str(prefix), "--config", str(tiny_cfg), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    return err


def test_refuses_a_missing_model_variable(tmp_path, arrays, tiny_cfg, capsys):
    gone = "supernet_backbone/DB1/branch3_block2/bn177/bn2/moving_variance"
    assert gone in arrays
    prefix = write_v1(tmp_path / "ck", {k: v for k, v in arrays.items() if k != gone})
    err = refused(tmp_path, prefix, tiny_cfg, capsys)
    assert "missing" in err and "DB1/branch3_block2/.../bn2/moving_variance" in err
    assert "DB1/depth3/block1/bn2/moving_variance" in err


def test_refuses_a_shape_mismatch(tmp_path, arrays, tiny_cfg, capsys):
    name = "supernet_head/H1Out/conv202/k5/kernel"
    bad = dict(arrays, **{name: np.zeros((5, 5, 32, 2), np.float32)})
    err = refused(tmp_path, write_v1(tmp_path / "ck", bad), tiny_cfg, capsys)
    assert "shape mismatch" in err and name in err and "[5, 5, 32, 2]" in err and "[5, 5, 32, 4]" in err


def test_refuses_an_unknown_model_variable(tmp_path, arrays, tiny_cfg, capsys):
    name = "supernet_backbone/EB0/branch4_block1/conv_bn_relu300/conv301/conv1_conv/kernel"
    bad = dict(arrays, **{name: np.zeros((3, 3, 64, 64), np.float32)})
    err = refused(tmp_path, write_v1(tmp_path / "ck", bad), tiny_cfg, capsys)
    assert "unknown model variable" in err and name in err


def test_refuses_a_truncated_checkpoint(tmp_path, arrays, tiny_cfg, capsys):
    prefix = write_v1(tmp_path / "ck", arrays)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    err = refused(tmp_path, prefix, tiny_cfg, capsys)
    assert "cannot read supernet_" in err and "truncated or corrupt" in err


def test_refuses_an_unreadable_checkpoint(tmp_path, arrays, tiny_cfg, capsys):
    prefix = write_v1(tmp_path / "ck", {k: arrays[k] for k in list(arrays)[:3]})
    Path(f"{prefix}.index").write_bytes(b"not a checkpoint index" * 10)
    err = refused(tmp_path, prefix, tiny_cfg, capsys)
    assert "not a readable checkpoint" in err and str(prefix) in err


def test_refuses_no_checkpoint_and_an_existing_run(tmp_path, tiny_cfg, capsys, imported):
    err = refused(tmp_path, tmp_path / "nothing.ckpt", tiny_cfg, capsys)
    assert "nothing.ckpt.index does not exist" in err
    from edgeflow.cli import main

    out = imported[0]
    before = sorted(p.name for p in out.rglob("*"))
    assert main(["import-v1", "--checkpoint", str(tmp_path / "x"), "--config", str(tiny_cfg),
                 "--out", str(out)]) == 2
    assert sorted(p.name for p in out.rglob("*")) == before


def test_missing_meta_json_is_allowed_with_a_warning(tmp_path, arrays, tiny_cfg, capsys):
    from edgeflow.cli import main

    prefix = write_v1(tmp_path / "ck", arrays, meta=None)
    out = tmp_path / "run"
    assert main(["import-v1", "--checkpoint", str(prefix), "--config", str(tiny_cfg), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and f"{prefix}.meta.json does not exist" in err
    src = json.loads((out / "run.json").read_text())["imported_from"]
    assert src["meta_missing"] is True and src["epoch"] is None and src["fairness_counts"] is None


def test_eval_reports_both_protocols_side_by_side(imported, arrays, capsys):
    import tensorflow as tf

    from edgeflow.cli import main
    from edgeflow.train import loss as loss_lib
    from edgeflow.train.evaluate import datasets
    from edgeflow.train.restore import open_run

    out = imported[0]
    before = (out / "checkpoints" / "best.json").read_text()
    assert main(["eval", "--run", str(out), "--archs", "012012012", "--bn-mode", "batch_stats", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bn_mode"] == "batch_stats" and report["imported_from"]["metric"] == 4.9512
    batch = report["arch_epe"]["012012012"]
    # batch_stats is the original's protocol: BN on each eval batch's statistics, from the source arrays.
    run = open_run(out)
    _, evals = datasets(run.cfg, run.splits.train, run.splits.val)
    want = np.mean([float(loss_lib.epe([tf.constant(o) for o in reference_forward(arrays, x.numpy(), "012012012",
                                                                                   batch_stats=True)], flow))
                    for x, flow in evals])
    assert batch == pytest.approx(want, rel=1e-4)

    assert main(["eval", "--run", str(out), "--archs", "012012012", "--bn-mode", "both"]) == 0
    table = capsys.readouterr()
    lines = table.out.splitlines()
    assert "EPE recalibrate" in lines[1] and "EPE batch_stats" in lines[1]
    row = lines[2].split()
    assert row[0] == "012012012" and float(row[2]) == pytest.approx(batch, abs=6e-5)
    assert np.isfinite(float(row[1])) and float(row[1]) != float(row[2])  # the two protocols differ
    assert "original trainer logged mean EPE 4.9512 at epoch 49" in table.out
    assert "not calibrated" in table.err
    assert (out / "checkpoints" / "best.json").read_text() == before


@pytest.mark.slow
def test_continue_from_import_trains_a_new_experiment(imported, tmp_path, demo_data, capsys):
    import tensorflow as tf

    from edgeflow.cli import main
    from edgeflow.train.restore import open_run

    out = imported[0]
    cfg = tiny_config(tmp_path, demo_data, name="continued", eval={"pool": ["012012012"]},
                      checkpoint={"init_from": str(out), "reset_early_stop_on_resume": True})
    assert main(["train", "--config", str(cfg)]) == 0, capsys.readouterr().err
    run_dir = tmp_path / "out" / "continued"
    start = next(e for e in read_events(run_dir / "events.jsonl") if e["event"] == "run_start")
    assert start["init_from"]["run"] == str(out.resolve())
    assert start["init_from"]["imported_from"] == json.loads((out / "run.json").read_text())["imported_from"][
        "checkpoint"]
    assert start["start_epoch"] == 1 and start["resumed_from"] == str(open_run(out, "latest").pointer.prefix)
    assert json.loads((run_dir / "run.json").read_text())["init_from"] == start["init_from"]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 6  # fresh schedule: 24 samples / batch 4
    evals = [e for e in read_events(run_dir / "events.jsonl") if e["event"] == "eval"]
    assert evals and evals[-1]["bn_mode"] == "recalibrate"
    # It trained: the weights moved away from the imported ones.
    a = tf.train.load_checkpoint(str(open_run(out).pointer.prefix))
    b = tf.train.load_checkpoint(str(open_run(run_dir, "latest").pointer.prefix))
    kernel = "model/layers/E0/conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert not np.array_equal(a.get_tensor(kernel), b.get_tensor(kernel))

    # The imported run itself is never resumed in place (it has no training state).
    own = yaml.safe_load(cfg.read_text())
    own["runtime"].update(output_root=str(out.parent), experiment_name=out.name)
    own["checkpoint"] = {}
    own_path = tmp_path / "own.yaml"
    own_path.write_text(yaml.safe_dump(own))
    assert main(["train", "--config", str(own_path)]) == 2
    assert "imported checkpoint" in capsys.readouterr().err


def test_init_from_config_is_validated():
    with pytest.raises(config_mod.ConfigError, match="checkpoint.init_from"):
        config_mod.from_dict({"checkpoint": {"init_from": "a", "resume_experiment_name": "b"}})
    with pytest.raises(config_mod.ConfigError, match="eval.bn_mode"):
        config_mod.from_dict({"eval": {"bn_mode": "batchstats"}})
    assert config_mod.from_dict({}).eval.bn_mode == "recalibrate"


def test_name_rules_classify_bookkeeping_and_refuse_strangers(tmp_path):
    from edgeflow.v1import import names
    from edgeflow.v1import.meta import MetaError, read_meta

    model = [n for n, _ in tsv_variables()]
    c = names.classify(model + ["global_step", "beta1_power", "strict_accum_7", f"{model[0]}/Adam_1", "foo"])
    assert len(c.model) == 293 and len(set(c.model.values())) == 293
    assert {k: len(v) for k, v in c.ignored.items()} == {"adam_slots": 1, "adam_beta_powers": 1,
                                                         "gradient_accumulators": 1, "global_step": 1, "other": 1}
    for bad in ("supernet_backbone/EB0/branch1_block2/conv9/conv2/kernel",  # branch 1 has one block only
                "supernet_head/H3Out/conv1/k3/kernel", "supernet_backbone/conv5/E0_conv/bias"):
        with pytest.raises(names.UnknownVariable, match=re.escape(bad)):
            names.classify([bad])
    Path(tmp_path / "x.ckpt.meta.json").write_text("{not json")
    with pytest.raises(MetaError, match="x.ckpt.meta.json"):
        read_meta(tmp_path / "x.ckpt")
    Path(tmp_path / "x.ckpt.meta.json").write_text(json.dumps({"epoch": "49"}))
    with pytest.raises(MetaError, match="epoch must be an integer"):
        read_meta(tmp_path / "x.ckpt")


# ---- crash-clean: a killed or stopped import leaves nothing; the next step it prints works ------------

def _dead_writer_name(out: Path, kind: str = "importing") -> str:
    """The hidden folder name a writer process used, after that process ended (as after a SIGKILL)."""
    import subprocess
    import sys

    code = (f"from pathlib import Path; from edgeflow.rundir.staging import hidden_name; "
            f"print(hidden_name(Path({str(out)!r}), {kind!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_what_a_killed_import_left_is_removed_by_the_next(tmp_path, old_run, tiny_cfg, capsys):
    import subprocess
    import sys

    from edgeflow.cli import main

    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = [tmp_path / _dead_writer_name(out), tmp_path / f".run.importing-{dead.pid}"]  # now, and older names
    for folder in killed:
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "best-000000.data-00000-of-00001").write_bytes(b"half a checkpoint")
    # Not dead, or not ours to judge: a live writer on this host, one on another node of a shared disk.
    from edgeflow.rundir.staging import hidden_name

    live = tmp_path / hidden_name(out, "importing")
    elsewhere = tmp_path / f".run.importing-othernode-{dead.pid}-0123abcd"
    for folder in (live, elsewhere):
        folder.mkdir()
    assert main(["import-v1", "--checkpoint", str(old_run), "--config", str(tiny_cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([live.name,
                                                                                          elsewhere.name])
    assert (out / "run.json").is_file()


_STOP_IMPORT = r"""
import os, signal, sys
from edgeflow import rundir
from edgeflow.cli import main
real = rundir.write_state
def write_state_then_signal(*args, **kwargs):  # the moment the run directory is half written
    real(*args, **kwargs)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
rundir.write_state = write_state_then_signal
raise SystemExit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signame, code, said", [("SIGTERM", 75, "stopped by SIGTERM"),
                                                 ("SIGINT", 1, "interrupted (Ctrl-C)")])
def test_sigterm_or_ctrl_c_mid_import_leaves_nothing_and_says_one_line(tmp_path, old_run, tiny_cfg, signame,
                                                                       code, said):
    import subprocess
    import sys

    from tests.helpers import REPO

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _STOP_IMPORT, signame, "import-v1", "--checkpoint", str(old_run),
                           "--config", str(tiny_cfg), "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == code, proc.stderr[-3000:]
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and said in err[0] and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def _next_step(stdout: str) -> list[str]:
    import shlex

    line = next(line for line in stdout.splitlines() if line.startswith("next: "))
    words = shlex.split(line[len("next: "):])
    assert words[:3] == ["python", "-m", "edgeflow"], line
    return words[3:]


def test_the_printed_next_step_works_from_another_folder(tmp_path, old_run, demo_data, capsys, monkeypatch):
    from edgeflow.cli import main

    # The config names its data relative to where the import runs, as the shipped configs do.
    (tmp_path / "here").mkdir()
    raw = yaml.safe_load(tiny_config(tmp_path, demo_data, name="rel", eval={"pool": ["000000000"]}).read_text())
    raw["data"].update(train_dir=os.path.relpath(demo_data / "train", tmp_path / "here"),
                       val_dir=os.path.relpath(demo_data / "val", tmp_path / "here"))
    (tmp_path / "here" / "rel.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "here")
    out = tmp_path / "my runs" / "from_v1"  # a space: the printed command must quote it
    assert main(["import-v1", "--checkpoint", str(old_run), "--config", "rel.yaml", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err, captured.err
    saved = config_mod.load(out / "config.yaml")
    assert saved.data.train_dir == str(demo_data / "train") and saved.data.val_dir == str(demo_data / "val")
    monkeypatch.chdir(tmp_path)
    assert main(_next_step(captured.out)) == 0, capsys.readouterr().err
    assert "EPE recalibrate" in capsys.readouterr().out


def test_data_folders_that_do_not_exist_are_named_with_the_set_to_add(tmp_path, old_run, demo_data, capsys):
    from edgeflow.cli import main

    cfg = tiny_config(tmp_path, tmp_path / "nowhere", name="elsewhere", eval={"pool": ["000000000"]})
    out = tmp_path / "runs" / "imported"
    assert main(["import-v1", "--checkpoint", str(old_run), "--config", str(cfg), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "data folders" in line]
    assert len(warning) == 1 and str(tmp_path / "nowhere" / "train") in warning[0], captured.err
    step = _next_step(captured.out)
    assert "data.train_dir=TRAIN_DIR" in step and "data.val_dir=VAL_DIR" in step, step
    mine = {"TRAIN_DIR": str(demo_data / "train"), "VAL_DIR": str(demo_data / "val")}
    filled = []
    for word in step:
        key, _, value = word.partition("=")
        filled.append(f"{key}={mine[value]}" if value in mine else word)
    assert main(filled) == 0, capsys.readouterr().err
    assert main(step[:step.index("--set")]) == 4  # as printed before: without the data, eval cannot run
