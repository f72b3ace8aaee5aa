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
    yield


@pytest.fixture
def store(tmp_path):
    """A fresh sqlite tracking URI inside the test's temp dir."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
