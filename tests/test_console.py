"""The console: TensorFlow's start-up noise stays off it, and the kit's loggers follow redirections."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgeflow.console import console_logger
from tests.helpers import REPO

NOISE = ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "oneDNN custom operations",
         "Could not find cuda drivers")


@pytest.mark.slow
def test_tensorflow_start_up_noise_is_silenced() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-m", "edgeflow", "arch-info", "--arch", "000021222", "--height", "32",
                          "--width", "48"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "000021222" in out.stdout
    noisy = [line for line in out.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, out.stderr


def test_console_logger_writes_to_the_current_stream(capsys: pytest.CaptureFixture[str]) -> None:
    log = console_logger("edgeflow-test", "test: %(message)s")
    log.info("hello %s", "there")
    assert capsys.readouterr().err == "test: hello there\n"
    again = console_logger("edgeflow-test", "test: %(message)s")
    again.warning("once")
    assert capsys.readouterr().err == "test: once\n"  # one handler, not two
