import os

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own temp dir: default stores, caches and artifacts land there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GANTRACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GANTRACK_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("GANTRACK_SPOOL_DIR", str(tmp_path / "spool"))
    yield


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite tracking URI inside the test's temp dir."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a sqlite store; can be stopped and restarted."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{folder / 'server.db'}"
        self.proc = None

    def start(self, timeout: float = 90.0) -> None:
        import requests

        self.log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.backend, "--artifacts-destination", str(self.folder / "artifacts"),
             "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "server.log").read_text()[-2000:])
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("mlflow server did not start in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server's uvicorn and job workers too
            self.proc.wait(timeout=30)
        if self.proc:
            self.log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("server"))
    server.start()
    yield server
    server.stop()
