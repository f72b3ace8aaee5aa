"""``gantrack ui``: MLflow's own UI on 127.0.0.1 over the store gantrack writes to.

The server runs in its own process group (``mlflow server`` starts a uvicorn worker, and job-runner
consumers unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is false, as gantrack sets it by default);
``stop`` ends the whole group. ``running`` is the leak-proof way to hold one from
Python; ``serve`` (the CLI) stops it on Ctrl-C, SIGTERM and SIGHUP alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from . import tracking
from .errors import GantrackError
from .messages import warn
from .signals import terminate_as_interrupt

# MLflow's GenAI job runner (a job-runner process and ~7 huey consumers, each importing mlflow) costs
# ~25 s of CPU at every start and serves nothing a loss-curve viewer uses; measured on 2 cores: start
# 10 s instead of 13 s, 11 s of CPU instead of 36 s. A user who sets the variable keeps their choice.
UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_command(uri: str, port: int) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]  # the store URI goes through the environment (MLFLOW_BACKEND_STORE_URI): no password on the process list
    if uri.startswith("sqlite:"):  # new experiments made in the UI keep artifacts beside the database
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///") :]).parent / "mlruns").as_uri()]
    return cmd


def _last_line(log) -> str:
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def start(uri: str | None = None, port: int = 5000, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` bound to 127.0.0.1; returns (process, base URL) once it answers.

    The caller must ``stop(process)`` on every exit path; ``running`` does that for you. The
    server's output goes to an unlinked temporary file (a pipe nobody reads would fill up and
    block the server); ``process.gantrack_log`` holds it.
    """
    import requests

    uri = tracking.resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        raise GantrackError(f"{uri} is already a server: open it in a browser")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise GantrackError(f"no MLflow database at {uri[len('sqlite:///') :]} (train something first)")
    tracking.check_reachable(uri)  # a PostgreSQL store: a wrong password is one line now, not a dead server later
    url = f"http://127.0.0.1:{port}"
    try:
        requests.get(url + "/health", timeout=1)
        raise GantrackError(f"port {port} is already in use on 127.0.0.1 (try --port)")
    except requests.RequestException:
        pass
    log = tempfile.TemporaryFile(prefix="gantrack-ui-")
    proc = subprocess.Popen(
        server_command(uri, port),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**UI_ENV, **os.environ, "MLFLOW_BACKEND_STORE_URI": uri},
    )
    proc.gantrack_log = log
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise GantrackError(f"mlflow server exited: {_last_line(log)}")
            try:
                if requests.get(url + "/health", timeout=1).status_code == 200:
                    return proc, url
            except requests.RequestException:
                time.sleep(0.3)
        raise GantrackError(f"mlflow server did not answer on {url} within {timeout:.0f} s")
    except BaseException:  # a timeout, a dead server, Ctrl-C or SIGTERM while waiting: nothing left behind
        stop(proc)
        raise


@contextmanager
def running(uri: str | None = None, port: int = 5000, timeout: float = 90.0):
    """``with running(uri, port) as (proc, url): ...`` — the server's whole process group is
    stopped when the block exits, however it exits."""
    proc, url = start(uri, port, timeout)
    try:
        yield proc, url
    finally:
        stop(proc)


def runs_url(base: str, experiment_id: str) -> str:
    """An experiment's runs table in the **Model training** view. MLflow 3.x opens a fresh browser in its
    GenAI view (Traces, Judges, Prompts, "Evaluation runs"); ``workflowType=machine_learning`` selects
    the training runs table and its metric charts."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def serve(uri: str | None = None, port: int = 5000, experiment: str | None = None) -> int:
    """Run the UI until Ctrl-C, SIGTERM or SIGHUP, printing where to look.

    Returns 0 when stopped by a signal; if the server dies on its own, prints its last log line
    and returns its exit status.
    """
    with terminate_as_interrupt():
        try:
            with running(uri, port) as (proc, url):
                where = url
                if experiment:
                    exp = tracking.client(tracking.resolve_tracking_uri(uri)).get_experiment_by_name(experiment)
                    if exp is not None:
                        where = runs_url(url, exp.experiment_id)
                print(f"MLflow UI: {where}   (Ctrl-C to stop)", flush=True)
                code = proc.wait()
                warn("mlflow server exited with status %s: %s", code, _last_line(proc.gantrack_log))
                return code if code >= 0 else 128 - code
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Terminated): the server is already stopped
            return 0


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop the server and the workers it spawned (its own process group): SIGTERM, then SIGKILL
    for whatever is still there after ``grace`` seconds. Safe to call twice."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # the group can outlive its leader (uvicorn and job consumers exit on their own schedule)
    deadline = time.time() + grace
    while _group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()
    log = getattr(proc, "gantrack_log", None)
    if log is not None and not log.closed:
        log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
