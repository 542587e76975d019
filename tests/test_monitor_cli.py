"""The sidecar's command line, export modes (textfile, Pushgateway) and observer choice."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import require_service
from monitor_support import REPO, samples, value, write_full_run

from monitor.observe import choose_observer, filesystem_type, is_network_fs
from monitor.publish import parse_listen


def run_monitor(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "monitor", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)


BLOCK_TF = (
    "import sys, runpy; sys.modules['tensorflow'] = None; sys.argv = ['monitor', *sys.argv[1:]];"
    "\ntry:\n    runpy.run_module('monitor', run_name='__main__')\nfinally:\n"
    "    assert not any(m.startswith('tensorflow') and sys.modules[m] for m in sys.modules), 'tf imported'"
)


def test_help_and_a_full_scan_work_without_tensorflow(tmp_path):
    helped = run_monitor("--help", code=BLOCK_TF)
    assert helped.returncode == 0, helped.stderr
    assert "--pushgateway" in helped.stdout and "--observer" in helped.stdout
    write_full_run(tmp_path / "run", experiment="notf", epochs=2)
    printed = run_monitor("--run", str(tmp_path / "run"), "--print", code=BLOCK_TF)
    assert printed.returncode == 0, printed.stderr
    assert value(printed.stdout, "edgeflow_epoch", experiment="notf") == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--print"], "give --run DIR or --root DIR"),
        (["--run", "x"], "one of the arguments --http --textfile --pushgateway --print is required"),
        (["--run", "x", "--http", "localhost"], "--http expects ADDR:PORT"),
        (["--run", "x", "--http", "127.0.0.1:99999"], "port must be 0..65535"),
        (["--run", "x", "--http", "1:2", "--textfile", "d"], "not allowed with argument"),
        (["--run", "x", "--print", "--poll-interval", "0"], "--poll-interval must be > 0"),
        (["--run", "x", "--print", "--observer", "fanotify"], "invalid choice: 'fanotify'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    result = run_monitor(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_run_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "events.jsonl"
    target.write_text("")
    result = run_monitor("--run", str(target), "--print")
    assert result.returncode == 2
    assert f"--run {target}: not a directory" in result.stderr


def test_pushgateway_url_must_be_http(tmp_path):
    result = run_monitor("--run", str(tmp_path), "--pushgateway", "ftp://gw:9091", "--once")
    assert result.returncode == 2
    assert "--pushgateway expects an http(s) URL" in result.stderr


def test_missing_run_dir_is_waited_for_not_an_error(tmp_path):
    result = run_monitor("--run", str(tmp_path / "not-yet"), "--textfile", str(tmp_path / "tf"), "--once")
    assert result.returncode == 0, result.stderr
    assert "does not exist yet; waiting for it" in result.stderr
    text = (tmp_path / "tf" / "edgeflow_not-yet.prom").read_text()
    assert value(text, "edgeflow_monitor_runs_followed") == 0


@pytest.mark.parametrize(
    "text, expected",
    [("9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)), ("0.0.0.0:80", ("0.0.0.0", 80)),
     ("[::1]:9464", ("::1", 9464)), ("node1:0", ("node1", 0))],
)
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host", "a:b", "::1:80", "[::1]", "1.2.3.4:-1"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="ADDR:PORT"):
        parse_listen(text)


def test_textfile_is_valid_for_node_exporter(tmp_path):
    require_service(shutil.which("promtool") is not None, "promtool (Debian package prometheus) not installed")
    write_full_run(tmp_path / "runs" / "a", experiment="a", job_id="11", epochs=2, end=None)
    write_full_run(tmp_path / "runs" / "b", experiment="b", job_id=None, epochs=1, end="early_stopped")
    out = tmp_path / "textfile"
    result = run_monitor("--root", str(tmp_path / "runs"), "--textfile", str(out), "--once")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["edgeflow_runs.prom"]  # no temporary file left behind
    text = (out / "edgeflow_runs.prom").read_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert value(text, "edgeflow_step", experiment="a", job_id="11") == 24
    assert value(text, "edgeflow_run_status", experiment="b", status="early_stopped") == 1
    assert value(text, "edgeflow_monitor_runs_followed") == 2


def test_auto_observer_polls_on_network_filesystems(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "nas:/export/home /shared nfs4 rw,relatime 0 0\n"
        "lustre@tcp:/scratch /shared/scratch\\040space lustre rw 0 0\n"
        "tmpfs /shared/tmp tmpfs rw 0 0\n"
    )
    assert filesystem_type("/shared/runs/exp", mounts) == "nfs4"
    assert filesystem_type("/shared/scratch space/x", mounts) == "lustre"
    assert filesystem_type("/shared/tmp/x", mounts) == "tmpfs"
    assert filesystem_type("/home/me", mounts) == "ext4"
    assert is_network_fs("fuse.sshfs") and not is_network_fs("ext4") and not is_network_fs(None)
    assert choose_observer("auto", ["/shared/runs/exp"], mounts) == "polling"
    assert choose_observer("auto", ["/home/me/outputs/exp"], mounts) == "inotify"
    assert choose_observer("auto", ["/home/me", "/shared/scratch space/x"], mounts) == "polling"
    assert choose_observer("inotify", ["/shared/runs"], mounts) == "inotify"
    with pytest.raises(ValueError, match="observer must be one of"):
        choose_observer("fanotify", [], mounts)


def test_auto_observer_on_this_machine_matches_proc_mounts(tmp_path):
    fs = filesystem_type(tmp_path)
    assert fs is not None
    expected = "polling" if is_network_fs(fs) else "inotify"
    assert choose_observer("auto", [tmp_path]) == expected


class Recorder(BaseHTTPRequestHandler):
    """A tiny Pushgateway stand-in that records requests: a real HTTP peer for the push client."""

    requests: list[tuple[str, str, bytes]] = []
    status = 200

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append((self.command, self.path, body))
        self.send_response(type(self).status)
        self.end_headers()

    do_PUT = do_POST = do_DELETE = _record

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway():
    Recorder.requests = []
    Recorder.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, Recorder
    server.shutdown()
    server.server_close()


def test_pushgateway_groups_per_run_and_deletes_at_run_end(tmp_path, gateway):
    server, recorder = gateway
    url = f"http://127.0.0.1:{server.server_address[1]}"
    run = tmp_path / "fc2"
    log = write_full_run(run, experiment="fc2", job_id="4242_3", epochs=2, end=None)
    result = run_monitor("--run", str(run), "--pushgateway", url, "--instance", "svc1", "--once")
    assert result.returncode == 0, result.stderr
    by_path = {(m, p): body.decode() for m, p, body in recorder.requests}
    run_group = ("PUT", "/metrics/job/edgeflow/experiment/fc2/job_id/4242_3")
    assert run_group in by_path, list(by_path)
    assert value(by_path[run_group], "edgeflow_epoch", experiment="fc2", job_id="4242_3") == 2
    assert not any(name.startswith("edgeflow_monitor") for name, _ in samples(by_path[run_group]))
    health = ("PUT", "/metrics/job/edgeflow_monitor/instance/svc1")
    assert value(by_path[health], "edgeflow_monitor_runs_followed") == 1

    recorder.requests.clear()
    log.emit("run_end", status="completed", reason="done")
    result = run_monitor("--run", str(run), "--pushgateway", url, "--instance", "svc1", "--once")
    assert result.returncode == 0, result.stderr
    methods = [(m, p) for m, p, _ in recorder.requests]
    assert ("DELETE", "/metrics/job/edgeflow/experiment/fc2/job_id/4242_3") in methods
    assert run_group not in methods


def test_run_without_job_id_gets_an_empty_grouping_value(tmp_path, gateway):
    server, recorder = gateway
    write_full_run(tmp_path / "local", experiment="local", job_id=None, epochs=1, end=None)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert run_monitor("--run", str(tmp_path / "local"), "--pushgateway", url, "--once").returncode == 0
    paths = [p for _, p, _ in recorder.requests]
    assert "/metrics/job/edgeflow/experiment/local/job_id@base64/=" in paths


def test_pushgateway_errors_are_reported_not_fatal(tmp_path, gateway):
    server, recorder = gateway
    recorder.status = 500
    write_full_run(tmp_path / "r", experiment="r", epochs=1, end=None)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    result = run_monitor("--run", str(tmp_path / "r"), "--pushgateway", url, "--once")
    # Reported and every group still attempted; `--once` (cron, tests) then says so in its exit code.
    assert result.returncode == 1
    assert f"monitor: pushgateway {url}:" in result.stderr
    assert len(recorder.requests) == 2  # the run group and the health group were both attempted


def test_http_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_monitor("--run", str(tmp_path), "--http", f"127.0.0.1:{port}", "--once")
    assert result.returncode == 2
    assert "monitor: [Errno 98] Address already in use" in result.stderr


def test_textfile_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "node_exporter.prom"
    target.write_text("")
    result = run_monitor("--run", str(tmp_path), "--textfile", str(target), "--once")
    assert result.returncode == 2
    assert f"--textfile {target}: not a directory" in result.stderr
