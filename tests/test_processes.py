"""Nothing gantrack starts outlives it: the UI server on SIGTERM/SIGHUP, sweep workers on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from gantrack import Config, train
from gantrack.ui import running

from conftest import free_port, spawn

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of the session ``sid`` (a server started with start_new_session)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            out.append(int(entry))
    return out


def server_pid(port: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if b"server" in cmd and b"--port" in cmd and cmd[cmd.index(b"--port") + 1] == str(port).encode():
                return int(entry)
    raise AssertionError(f"no mlflow server on port {port}")


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'mlflow.db'}"
    train(
        Config(width=0.0625, batch_size=16, steps=5, sample_every=0, experiment="ui", probes=False),
        tracking_uri=uri,
        quiet=True,
    )
    return uri


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_gantrack_ui_stops_its_server_on_signal(small_store, sig):
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "gantrack.cli", "ui", "--tracking-uri", small_store, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # without the suite's own setting: gantrack ui turns MLflow's GenAI job runner off by itself
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"},
    )
    line = proc.stdout.readline()
    assert line.startswith("MLflow UI: http://127.0.0.1:"), proc.stderr.read()
    sid = server_pid(port)
    members = session_members(sid)
    assert sid in members and len(members) >= 2  # mlflow server + its uvicorn worker
    commands = [open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace") for pid in members]
    assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
    proc.send_signal(sig)  # to gantrack alone, as `kill`, `timeout` or a closing terminal would
    assert proc.wait(timeout=60) == 0
    deadline = time.time() + 5
    while (session_members(sid) or not port_free(port)) and time.time() < deadline:
        time.sleep(0.1)
    assert session_members(sid) == [], "server processes left behind"
    assert port_free(port)


def test_gantrack_ui_reports_a_server_that_dies(small_store):
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "gantrack.cli", "ui", "--tracking-uri", small_store, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("MLflow UI:")
    os.killpg(server_pid(port), signal.SIGKILL)
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 128 + signal.SIGKILL and "mlflow server exited with status" in err, (code, err)


def test_running_context_manager_cannot_leak(small_store):
    port = free_port()
    with pytest.raises(RuntimeError, match="boom"):
        with running(small_store, port) as (proc, url):
            sid = proc.pid
            assert len(session_members(sid)) >= 2
            raise RuntimeError("boom")
    assert session_members(sid) == [] and port_free(port)


def test_sigterm_to_a_sweep_stops_its_workers_and_marks_runs_killed(tmp_path, store):
    client = MlflowClient(store)
    client.search_experiments()  # the store exists before two processes open it (migrations are unlocked)
    proc = spawn(
        [
            sys.executable,
            "-m",
            "gantrack.cli",
            "sweep",
            "--grid",
            "seed=1,2",
            "--experiment",
            "sw",
            "--set",
            "width=0.0625",
            "--set",
            "batch_size=16",
            "--set",
            "steps=20000",
            "--set",
            "sample_every=0",
            "--set",
            "flush_every=10",
            "--tracking-uri",
            store,
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.time() + 180
    while time.time() < deadline:  # wait until both workers are training
        exp = client.get_experiment_by_name("sw")
        runs = client.search_runs([exp.experiment_id], "tags.`gantrack.seed` != ''") if exp else []
        if len(runs) == 2 and all("loss/g" in r.data.metrics for r in runs):
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    members = session_members(proc.pid)
    assert len(members) >= 3  # gantrack + two workers
    proc.terminate()
    code = proc.wait(timeout=120)
    assert code == 128 + signal.SIGTERM, proc.stderr.read()
    deadline = time.time() + 10
    while session_members(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert session_members(proc.pid) == []
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED"] * 3  # two runs and their parent
