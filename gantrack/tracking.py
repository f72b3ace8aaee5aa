"""Writing runs to MLflow: the tracking URI, experiments, run metadata, batched metrics, artifacts.

Metrics are buffered and sent with ``MlflowClient.log_batch`` every ``flush_every`` steps
(DESIGN.md §7: ~1 ms/step instead of ~7 ms for one ``log_metrics`` call per step). If a
flush fails (server gone, database locked) the metrics stay in the buffer and are retried
at the next flush; if they still cannot be written when the run ends they are spooled to a
JSON-lines file so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import GantrackError

log = logging.getLogger("gantrack")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3 opens experiments as GenAI unless set
EXPERIMENT_KIND = "custom_model_development"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow's own default made absolute: sqlite ``./mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return "sqlite:///" + str(Path.cwd() / "mlflow.db")


def resolve_tracking_uri(uri: str | None) -> str:
    uri = uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # a relative sqlite path: pin it to the current directory now, not whenever MLflow resolves it
        path = uri[len("sqlite:///"):]
        if path and not path.startswith(":memory:"):
            uri = "sqlite:///" + str(Path(path).resolve())
    return uri


def check_reachable(uri: str) -> None:
    """Fail fast, with one line, when the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as e:
            raise GantrackError(f"tracking server {uri} is unreachable: {type(e).__name__}") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise GantrackError(f"tracking URI {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise GantrackError(f"tracking URI {uri}: folder {folder} is not writable")
    elif "://" not in uri and not uri.startswith("file:"):
        raise GantrackError(f"tracking URI {uri!r} is not a URI (try sqlite:///path/mlflow.db or http://127.0.0.1:5000)")


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (already resolved); store errors become ``GantrackError``."""
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:  # MLflow raises many types for a bad store URI
        raise GantrackError(f"cannot open tracking store {uri}: {str(e).splitlines()[0]}") from None


def get_or_create_experiment(mlclient, name: str) -> str:
    """Experiment id for ``name``, created if needed, tagged to open as model training in the UI."""
    try:
        exp = mlclient.get_experiment_by_name(name)
        if exp is None:
            exp_id = mlclient.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                raise GantrackError(f"experiment {name!r} is deleted; restore it or pick another name")
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                mlclient.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp_id
    except GantrackError:
        raise
    except Exception as e:
        raise GantrackError(f"cannot use experiment {name!r}: {str(e).splitlines()[0]}") from None


def git_commit() -> str | None:
    """The commit of the gantrack checkout (when installed from one), for the run's tags."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


class MetricBuffer:
    """Collects per-step metrics and writes them with ``log_batch`` in chunks.

    ``add`` costs a list append; ``flush`` sends everything pending. A failed flush keeps
    the metrics pending (retried next time); ``close`` spools what never got through.
    """

    def __init__(self, mlclient, run_id: str, spool_dir: Path | None = None):
        self.client = mlclient
        self.run_id = run_id
        self.pending: list = []
        self.failures = 0
        self.spool_dir = spool_dir

    def add(self, step: int, values: Iterable[tuple[str, float]], timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        self.pending.extend(Metric(k, v, ts, step) for k, v in values)

    def flush(self) -> bool:
        """Send pending metrics; True when nothing is left pending."""
        if not self.pending:
            return True
        try:
            # log_batch accepts at most 1000 metrics per call over REST; chunk so a retry resends little
            while self.pending:
                chunk = self.pending[:1000]
                self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
                del self.pending[:1000]
            return True
        except Exception as e:  # network or lock errors: keep the metrics and retry later
            self.failures += 1
            log.warning("could not write %d metrics to MLflow (%s); will retry", len(self.pending),
                        str(e).splitlines()[0][:200])
            return False

    def close(self) -> Path | None:
        """Final flush; if it fails, write pending metrics to a spool file and return its path."""
        if self.flush():
            return None
        folder = self.spool_dir or Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"gantrack-spool-{self.run_id}.jsonl"
        with path.open("a") as f:
            for m in self.pending:
                value = m.value if math.isfinite(m.value) else str(m.value)
                f.write(json.dumps({"run_id": self.run_id, "key": m.key, "value": value,
                                    "timestamp": m.timestamp, "step": m.step}) + "\n")
        self.pending.clear()
        print(f"gantrack: MLflow unreachable; metrics spooled to {path} (upload with `gantrack sync {path}`)",
              file=sys.stderr)
        return path


def sync_spool(path: str | Path, tracking_uri: str | None = None) -> int:
    """Upload a spool file written by ``MetricBuffer.close``; returns the number of metrics written."""
    from mlflow.entities import Metric

    p = Path(path)
    if not p.is_file():
        raise GantrackError(f"spool file not found: {p}")
    by_run: dict[str, list] = {}
    try:
        for line in p.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                by_run.setdefault(r["run_id"], []).append(
                    Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])))
    except (ValueError, KeyError, TypeError) as e:
        raise GantrackError(f"{p} is not a gantrack spool file: {e}") from None
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    mlclient = client(uri)
    n = 0
    for run_id, metrics in by_run.items():
        buf = MetricBuffer(mlclient, run_id)
        buf.pending = metrics
        if not buf.flush():
            raise GantrackError(f"could not upload {len(buf.pending)} metrics of run {run_id}; spool kept")
        n += len(metrics)
    p.rename(p.with_suffix(".synced"))
    return n
