"""Stand-alone (fixed-arch) training, `train.arch`: a subnet trained alone with the trainer's guarantees,
and the ranking stability (pool_rank_tau) and kept checkpoints (checkpoint.keep_every) of a supernet run.

Real runs on the demo data at 32x48, side by side to save wall time: a supernet run straight and one
SIGKILLed after its epoch-2 checkpoint and resumed; a stand-alone run straight and one SIGKILLed after
its epoch-1 checkpoint and resumed; a stand-alone run warm-started from the supernet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from edgeflow.rundir import read_events
from edgeflow.space.arch import BLOCK_NAMES, parse_arch
from edgeflow.train.schedule import learning_rate
from tests.helpers import REPO, run_cli, tiny_config

pytestmark = pytest.mark.slow  # trains: tests/conftest.py schedules these files first

ARCH = "012012012"
POOL = ["000000000", "222222222", ARCH, "210210210"]
STEPS_PER_EPOCH = 12  # 24 demo samples, batch 2


def supernet_config(tmp: Path, demo: Path, name: str) -> Path:
    return tiny_config(tmp, demo, name, runtime={"seed": 3, "heartbeat_seconds": 0.2},
                       train={"num_epochs": 3, "batch_size": 4},
                       eval={"pool": POOL}, checkpoint={"keep_every": 2})


def standalone_config(tmp: Path, demo: Path, name: str, **checkpoint: object) -> Path:
    """tiny_config without the supernet-only eval pool, training ARCH alone."""
    path = tiny_config(tmp, demo, name, runtime={"seed": 3, "heartbeat_seconds": 0.2},
                       train={"num_epochs": 2, "batch_size": 2, "arch": ARCH, "weight_decay": 0.0,
                              "grad_clip_global_norm": 0.0, "lr_min": 1e-5},
                       checkpoint=dict(checkpoint))
    raw = yaml.safe_load(path.read_text())
    del raw["eval"]["pool"]
    path.write_text(yaml.safe_dump(raw))
    return path


def start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeflow", "train", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def first_event(events: Path, match) -> dict | None:
    return next((e for e in read_events(events) if match(e)), None)


def checkpoint_tensors(run: Path, kind: str = "latest") -> dict[str, np.ndarray]:
    import tensorflow as tf

    prefix = json.loads((run / "checkpoints" / f"{kind}.json").read_text())["prefix"]
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith(("model/", "optimizer/"))}


def evals(run: Path) -> list[dict]:
    return [e for e in read_events(run / "events.jsonl") if e["event"] == "eval"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict:
    tmp = tmp_path_factory.mktemp("standalone")
    cfgs = {"sn": supernet_config(tmp, demo_data, "sn"), "sn_killed": supernet_config(tmp, demo_data, "sn_killed"),
            "sa": standalone_config(tmp, demo_data, "sa"), "sa_killed": standalone_config(tmp, demo_data, "sa_killed")}
    dirs = {n: tmp / "out" / n for n in cfgs}
    procs = {n: start(c) for n, c in cfgs.items()}
    triggers = {"sn_killed": lambda e: e["event"] == "checkpoint" and e["kind"] == "latest" and e["epoch"] == 2,
                "sa_killed": lambda e: e["event"] == "checkpoint" and e["kind"] == "latest" and e["epoch"] == 1}
    deadline = time.time() + 500
    while triggers and time.time() < deadline:
        for name, match in list(triggers.items()):
            if first_event(dirs[name] / "events.jsonl", match) is not None:
                procs[name].send_signal(signal.SIGKILL)
                del triggers[name]
            elif procs[name].poll() is not None:
                log = procs[name].stdout.read()[-3000:]
                raise AssertionError(f"{name} exited {procs[name].returncode} early:\n{log}")
        time.sleep(0.02)
    assert not triggers, f"timed out waiting for {list(triggers)}"
    first = {n: finish(procs.pop(n)) for n in ("sn_killed", "sa_killed")}
    resumed = {n: start(cfgs[n]) for n in ("sn_killed", "sa_killed")}
    result = {"tmp": tmp, "demo": demo_data, "dirs": dirs, "cfgs": cfgs, "first": first,
              "straight": {n: finish(p) for n, p in procs.items()}}
    # a stand-alone net warm-started from the supernet run's latest checkpoint
    cfgs["warm"] = standalone_config(tmp, demo_data, "warm", init_from=str(dirs["sn"]))
    dirs["warm"] = tmp / "out" / "warm"
    warm = start(cfgs["warm"])
    result["resumed"] = {n: finish(p) for n, p in resumed.items()}
    result["warm"] = finish(warm)
    return result


# ------------------------------------------------------------------------------ stand-alone training

def test_a_standalone_run_trains_its_arch_and_records_it(runs: dict) -> None:
    code, out = runs["straight"]["sa"]
    assert code == 0, out[-3000:]
    run = runs["dirs"]["sa"]
    assert json.loads((run / "run.json").read_text())["arch"] == ARCH
    events = list(read_events(run / "events.jsonl"))
    assert [e for e in events if e["event"] == "run_start"][0]["arch"] == ARCH
    for ev in evals(run):
        # the arch's own EPE, on its own BN moving statistics; no ranking of a pool of one
        assert list(ev["arch_epe"]) == [ARCH] and ev["mean_epe"] == ev["arch_epe"][ARCH]
        assert ev["bn_mode"] == "moving_stats" and "pool_rank_tau" not in ev and "pool_rank_tau_best" not in ev
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 2 and all(e["fairness_gap"] is None and e["clip_rate"] == 0 for e in epochs)
    # the cosine heads for train.lr_min (the epoch's lr is its last step's)
    assert epochs[-1]["lr"] == learning_rate(2 * STEPS_PER_EPOCH - 1, 1e-3, 2 * STEPS_PER_EPOCH, "cosine", 1e-5)
    assert 1e-5 < epochs[-1]["lr"] < 2e-5
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 2 * STEPS_PER_EPOCH and state["fairness_gap"] is None


def test_its_checkpoint_holds_exactly_the_arch_s_layers(runs: dict) -> None:
    import tensorflow as tf

    from edgeflow.model.supernet import Supernet

    saved = {k for k in checkpoint_tensors(runs["dirs"]["sa"]) if k.startswith("model/")}
    supernet_keys = {k for k in checkpoint_tensors(runs["dirs"]["sn"]) if k.startswith("model/")}
    arch = parse_arch(ARCH)
    want = Supernet(seed=0).arch_variables(arch, trainable_only=False)
    # the same keys as the supernet's for those layers (a warm start reads them), one per variable
    assert saved <= supernet_keys and len(saved) == len(want) < len(supernet_keys)
    shapes = tf.train.load_checkpoint(str(runs["dirs"]["sn"] / "checkpoints" / json.loads(
        (runs["dirs"]["sn"] / "checkpoints" / "latest.json").read_text())["prefix"])).get_variable_to_shape_map()
    mine = checkpoint_tensors(runs["dirs"]["sa"])
    assert all(list(mine[k].shape) == shapes[k] for k in saved)
    # only the chosen option of each choice block: EB0 option 0 (one block), EB1 option 1, H1Out's 3x3 ...
    for key in saved:
        parts = key.split("/")
        for marker in ("branches", "convs"):
            if marker in parts:
                layer = parts[parts.index("layers") + 1]
                block = BLOCK_NAMES.index(layer)
                assert parts[parts.index(marker) + 1] == str(arch[block]), key


def test_sigkill_then_resume_is_bit_exact(runs: dict) -> None:
    straight, killed = runs["dirs"]["sa"], runs["dirs"]["sa_killed"]
    assert runs["first"]["sa_killed"][0] == -signal.SIGKILL
    code, out = runs["resumed"]["sa_killed"]
    assert code == 0, out[-3000:]
    starts = [e for e in read_events(killed / "events.jsonl") if e["event"] == "run_start"]
    assert len(starts) == 2 and starts[1]["start_epoch"] == 2 and starts[1]["arch"] == ARCH
    sa, sb = (json.loads((r / "state.json").read_text()) for r in (straight, killed))
    assert sa["step"] == sb["step"] == 2 * STEPS_PER_EPOCH
    assert sa["arch_digest"] == sb["arch_digest"] and sa["data_digest"] == sb["data_digest"]
    wa, wb = checkpoint_tensors(straight), checkpoint_tensors(killed)
    assert wa.keys() == wb.keys() and any(k.startswith("optimizer/") for k in wa)
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    assert evals(straight)[-1]["mean_epe"] == evals(killed)[-1]["mean_epe"]


def test_eval_and_export_load_it_and_refuse_another_arch(runs: dict, tmp_path: Path) -> None:
    run = runs["dirs"]["sa"]
    proc = run_cli("edgeflow", "eval", "--run", str(run), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    best = [e for e in evals(run) if e["improved"]][-1]
    assert result["bn_mode"] == "moving_stats" and list(result["arch_epe"]) == [ARCH]
    assert result["arch_epe"][ARCH] == pytest.approx(best["mean_epe"], rel=1e-6)
    proc = run_cli("edgeflow", "eval", "--run", str(run), "--archs", "000000000", timeout=600)
    assert proc.returncode == 2 and "stand-alone net of arch 012012012" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    from edgeflow.export.export import ExportRequest, export

    record = export(ExportRequest(run=run, arch=ARCH, out=tmp_path / "exp"), log=lambda _: None)
    assert record["standalone"] and record["bn_mode"] == "moving_stats" and record["bn_recalibration"] is None
    assert record["supernet_epe"] == pytest.approx(best["mean_epe"], rel=1e-5)
    assert record["agreement"]["tflite_float32"]["within_tolerance"]
    proc = run_cli("edgeflow", "export", "--run", str(run), "--arch", "000000000", "--out", str(tmp_path / "x"),
                   timeout=600)
    assert proc.returncode == 2 and "only that arch" in proc.stderr and not (tmp_path / "x").exists()
    proc = run_cli("edgeflow", "rank", "--run", str(run), "--all", timeout=600)
    assert proc.returncode == 2 and "needs a supernet run" in proc.stderr


def test_init_from_a_supernet_takes_exactly_the_arch_s_layers(runs: dict) -> None:
    import tensorflow as tf

    from edgeflow.model.fixed import FixedArchNet
    from edgeflow.model.supernet import Supernet
    from edgeflow.train.restore import warm_start

    code, out = runs["warm"]
    assert code == 0, out[-3000:]
    run, source = runs["dirs"]["warm"], runs["dirs"]["sn"]
    start_event = [e for e in read_events(run / "events.jsonl") if e["event"] == "run_start"][0]
    assert start_event["init_from"]["run"] == str(source.resolve())
    assert start_event["init_from"]["layers"] == f"arch {ARCH}'s layers of the supernet"
    assert json.loads((run / "run.json").read_text())["init_from"]["run"] == str(source.resolve())
    # what the trainer's warm start reads: every variable of the net, each the supernet's of that name
    prefix = str(source / "checkpoints" / json.loads((source / "checkpoints" / "latest.json").read_text())["prefix"])
    net = FixedArchNet(parse_arch(ARCH), seed=99)
    warm_start(net, prefix, standalone=True)
    supernet = Supernet(seed=98)
    tf.train.Checkpoint(model=supernet).read(prefix).expect_partial()
    want = {v.name: v.numpy() for v in supernet.arch_variables(parse_arch(ARCH), trainable_only=False)}
    assert sorted(want) == sorted(v.name for v in net.variables)
    for var in net.variables:
        np.testing.assert_array_equal(var.numpy(), want[var.name], err_msg=var.name)
    # a net of another arch's stand-alone run is refused before anything is written
    other = tiny_config(runs["tmp"], runs["demo"], "warm_other", train={"arch": "000021222"},
                        checkpoint={"init_from": str(runs["dirs"]["sa"])})
    raw = yaml.safe_load(other.read_text())
    del raw["eval"]["pool"]
    other.write_text(yaml.safe_dump(raw))
    proc = run_cli("edgeflow", "train", "--config", str(other), timeout=600)
    assert proc.returncode == 2 and "stand-alone net of arch 012012012" in proc.stderr
    assert not (runs["tmp"] / "out" / "warm_other").exists()


def test_a_supernet_run_is_not_resumed_as_standalone_nor_the_reverse(runs: dict) -> None:
    for name, flip in (("sn", [f"train.arch={ARCH}", "eval.pool=" + json.dumps(
            ["000000000", "111111111", "222222222", "012012012", "210210210", "120120120", "000021222",
             "200210002", "022202100", "000220202", "222101210", "021110010"])]),
                       ("sa", ["train.arch=", f"eval.pool={json.dumps(POOL)}"])):
        run = runs["dirs"][name]
        before = (run / "events.jsonl").read_bytes()
        proc = run_cli("edgeflow", "train", "--config", str(runs["cfgs"][name]), *[a for s in flip for a in
                                                                                    ("--set", s)], timeout=600)
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "train.arch" in proc.stderr and "cannot be continued" in proc.stderr
        assert (run / "events.jsonl").read_bytes() == before


def test_standalone_only_options_are_one_clear_error_before_anything(runs: dict, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, runs["demo"], "bad", train={"arch": "01201201"})
    proc = run_cli("edgeflow", "train", "--config", str(cfg), timeout=600)
    assert proc.returncode == 2 and "train.arch: arch code must be 9 digits" in proc.stderr
    cfg = tiny_config(tmp_path, runs["demo"], "bad2", train={"arch": ARCH})  # tiny_config sets a pool
    proc = run_cli("edgeflow", "train", "--config", str(cfg), timeout=600)
    assert proc.returncode == 2 and "eval.pool: is the supernet's evaluation pool" in proc.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the supernet's side

def test_pool_rank_tau_from_the_second_evaluation_is_scipys(runs: dict) -> None:
    code, out = runs["straight"]["sn"]
    assert code == 0, out[-3000:]
    evs = evals(runs["dirs"]["sn"])
    assert len(evs) == 3 and "pool_rank_tau" not in evs[0] and "pool_rank_tau_best" not in evs[0]

    def tau(a: dict, b: dict) -> float:
        return stats.kendalltau([a[c] for c in POOL], [b[c] for c in POOL], variant="b").statistic

    best = evs[0]["arch_epe"]
    for prev, ev in zip(evs, evs[1:], strict=False):
        assert ev["pool_rank_tau"] == pytest.approx(tau(ev["arch_epe"], prev["arch_epe"]), abs=1e-12)
        assert ev["pool_rank_tau_best"] == pytest.approx(tau(ev["arch_epe"], best), abs=1e-12)
        if ev["improved"]:
            best = ev["arch_epe"]
    # in metrics.csv beside the epoch's other figures
    rows = (runs["dirs"]["sn"] / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("pool_rank_tau")
    assert rows[1].split(",")[col] == "" and float(rows[2].split(",")[col]) == pytest.approx(evs[1]["pool_rank_tau"])


def test_pool_rank_tau_is_the_same_after_a_resume(runs: dict) -> None:
    assert runs["first"]["sn_killed"][0] == -signal.SIGKILL
    code, out = runs["resumed"]["sn_killed"]
    assert code == 0, out[-3000:]
    straight, killed = evals(runs["dirs"]["sn"]), evals(runs["dirs"]["sn_killed"])
    by_epoch = {e["epoch"]: e for e in killed}  # epoch 3 may have been evaluated before the kill too
    last = [e for e in killed if e["epoch"] == 3][-1]
    assert sorted(by_epoch) == [1, 2, 3]
    assert last["pool_rank_tau"] == pytest.approx(straight[2]["pool_rank_tau"], abs=1e-12)
    assert last["pool_rank_tau_best"] == pytest.approx(straight[2]["pool_rank_tau_best"], abs=1e-12)


def test_keep_every_keeps_epoch_checkpoints_that_eval_can_name(runs: dict) -> None:
    run = runs["dirs"]["sn"]
    kept = sorted(p.name for p in (run / "checkpoints").glob("epoch-*.json"))
    assert kept == ["epoch-2.json"]
    pointer = json.loads((run / "checkpoints" / "epoch-2.json").read_text())
    assert pointer["state"]["epoch"] == 2 and (run / "checkpoints" / f"{pointer['prefix']}.index").is_file()
    assert any(e["event"] == "checkpoint" and e["kind"] == "epoch-2" for e in read_events(run / "events.jsonl"))
    proc = run_cli("edgeflow", "eval", "--run", str(run), "--checkpoint", "epoch-2", "--archs", ARCH, "--json",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["checkpoint"] == "epoch-2" and result["epoch"] == 2
    assert result["arch_epe"][ARCH] == pytest.approx(evals(run)[1]["arch_epe"][ARCH], rel=1e-5)
    proc = run_cli("edgeflow", "eval", "--run", str(run), "--checkpoint", "epoch-3", timeout=600)
    assert proc.returncode == 2 and "no 'epoch-3' checkpoint (kept: epoch-2)" in proc.stderr
