"""``gantrack ui``: MLflow's own UI on 127.0.0.1 over the store gantrack writes to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import tracking
from .errors import GantrackError


def server_command(uri: str, port: int) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", uri, "--workers", "1"]
    if uri.startswith("sqlite:"):  # new experiments made in the UI keep artifacts beside the database
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///"):]).parent / "mlruns").as_uri()]
    return cmd


def start(uri: str | None = None, port: int = 5000, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` bound to 127.0.0.1; returns (process, base URL) once it answers."""
    import requests

    uri = tracking.resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        raise GantrackError(f"{uri} is already a server: open it in a browser")
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise GantrackError(f"no MLflow database at {uri[len('sqlite:///'):]} (train something first)")
    url = f"http://127.0.0.1:{port}"
    try:
        requests.get(url + "/health", timeout=1)
        raise GantrackError(f"port {port} is already in use on 127.0.0.1 (try --port)")
    except requests.RequestException:
        pass
    proc = subprocess.Popen(server_command(uri, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise GantrackError(f"mlflow server exited: {err[-1] if err else 'no message'}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.3)
    stop(proc)
    raise GantrackError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def serve(uri: str | None = None, port: int = 5000, experiment: str | None = None) -> int:
    """Run the UI until Ctrl-C, printing where to look."""
    proc, url = start(uri, port)
    where = url
    if experiment:
        exp = tracking.client(tracking.resolve_tracking_uri(uri)).get_experiment_by_name(experiment)
        if exp is not None:
            where = f"{url}/#/experiments/{exp.experiment_id}/runs"
    print(f"MLflow UI: {where}   (Ctrl-C to stop)", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 0


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and the workers it spawned (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
