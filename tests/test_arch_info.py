"""Arch codes and the analytic cost model, cross-checked against the real Supernet."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeflow.commands.arch_info import main
from edgeflow.space.arch import BASELINE_ARCH, BLOCK_NAMES, format_arch, parse_arch
from edgeflow.space.cost import arch_info, supernet_params
from tests.helpers import REPO

REPO_ARCHS = ["000000000", "222222222", "012012012", "210210210", BASELINE_ARCH]


# ---- arch codes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["000021222", "0 0 0 0 2 1 2 2 2", " 0,0,0,0,2,1,2,2,2 ", "0\t0 0 0 2 1 2 2 2"])
def test_parse_arch_accepts_both_spellings(text):
    assert parse_arch(text) == (0, 0, 0, 0, 2, 1, 2, 2, 2)


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("00002122", "8 digits"),
    ("0000212220", "10 digits"),
    ("000021223", "H2Out=3"),
    ("00002122x", "not 9 digits"),
    ("0 0 0 0 2 1 2 2 22", "not 9 digits"),
    ("-00021222", "not 9 digits"),
])
def test_parse_arch_rejects_bad_codes(text, match):
    with pytest.raises(ValueError, match=match):
        parse_arch(text)


def test_format_arch_round_trip():
    assert format_arch((0, 0, 0, 0, 2, 1, 2, 2, 2)) == BASELINE_ARCH
    assert format_arch(np.array([2, 1, 0, 2, 1, 0, 2, 1, 0], dtype=np.int32)) == "210210210"
    assert format_arch("0 1 2 0 1 2 0 1 2") == "012012012"
    with pytest.raises(ValueError):
        format_arch([0, 1])
    assert len(BLOCK_NAMES) == 9 and BLOCK_NAMES[4] == "H0Out"


# ---- analytic figures ------------------------------------------------------------------------------

def test_output_shapes_at_180x240():
    info = arch_info(BASELINE_ARCH, 180, 240)
    assert info["output_shapes"] == {"1/4": [48, 60, 4], "1/2": [96, 120, 4], "1/1": [192, 240, 4]}
    down1 = next(r for r in info["layers"] if r["name"] == "Down1")
    assert down1["out_shape"] == [23, 30, 128]


def test_flops_by_hand_for_all_zero_arch():
    # hand count of multiply-accumulates at 180x240 for arch 000000000 (one residual block, 3x3 heads)
    macs = (90 * 120 * 49 * 6 * 32 + 45 * 60 * 25 * 32 * 64
            + 2 * 45 * 60 * 9 * 64 * 64                  # EB0: one block, two 3x3 convs
            + 23 * 30 * 9 * 64 * 128 + 2 * 23 * 30 * 9 * 128 * 128
            + 12 * 15 * 9 * 128 * 256 + 2 * 12 * 15 * 9 * 256 * 256
            + 24 * 30 * 9 * 256 * 128 + 2 * 24 * 30 * 9 * 128 * 128
            + 48 * 60 * 9 * 128 * 64
            + 48 * 60 * 9 * 64 * 4                       # H0Out
            + 96 * 120 * 9 * 64 * 32 + 96 * 120 * 9 * 32 * 4
            + 192 * 240 * 9 * 32 * 16 + 192 * 240 * 9 * 16 * 4)
    info = arch_info("000000000", 180, 240)
    assert info["macs"] == macs
    assert info["flops"] == 2 * macs
    bigger = arch_info("222222222", 180, 240)
    assert bigger["flops"] > info["flops"] and bigger["params_active"] > info["params_active"]


def test_bad_size_rejected():
    with pytest.raises(ValueError, match="positive"):
        arch_info(BASELINE_ARCH, 0, 240)


# ---- cross-check against the real model ------------------------------------------------------------

@pytest.fixture(scope="module")
def supernet():
    from edgeflow.model.supernet import Supernet

    return Supernet(seed=0)


def _size(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def test_params_match_the_supernet_variables(supernet):
    assert supernet_params() == _size(supernet.trainable_variables)
    for code in REPO_ARCHS:
        arch = parse_arch(code)
        used = supernet.arch_variables(arch)
        assert arch_info(code, 180, 240)["params_active"] == _size(used), code
        assert all(v.trainable for v in used)


def test_output_shapes_match_a_real_forward_pass(supernet):
    import tensorflow as tf

    # odd size: every stride-2 conv rounds up and the decoder doubles what it gets
    height, width = 37, 50
    x = tf.zeros([1, height, width, 6])
    for code in ("000000000", "222222222"):
        outs = supernet(x, tf.constant(parse_arch(code), tf.int32), training=False)
        expected = arch_info(code, height, width)["output_shapes"]
        assert [list(o.shape[1:]) for o in outs] == list(expected.values())


# ---- CLI --------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeflow", "arch-info", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_cli_prints_json():
    proc = _cli("--arch", "0 0 0 0 2 1 2 2 2", "--height", "180", "--width", "240")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["arch"] == BASELINE_ARCH
    assert info["params_active"] == arch_info(BASELINE_ARCH, 180, 240)["params_active"]
    assert info["output_shapes"]["1/1"] == [192, 240, 4]
    assert "flops_convention" in info and info["flops"] == 2 * info["macs"]


@pytest.mark.parametrize("args, message", [
    (["--arch", "00002"], "5 digits"),
    (["--arch", "000021229"], "H2Out=9"),
    (["--arch", BASELINE_ARCH, "--width", "-3"], "positive integer"),
    ([], "--arch"),
])
def test_cli_bad_input_exits_2_with_a_clear_message(args, message):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_cli_main_in_process(capsys):
    assert main(["--arch", "111111111", "--brief"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "layers" not in info and info["blocks"]["DB1"] == 1


def test_cost_model_imports_no_tensorflow():
    code = "import sys, edgeflow.space.cost, edgeflow.space.sampler; print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.stdout.strip() == "False", proc.stderr
