"""Writing runs to MLflow: the tracking URI, experiments, run metadata, batched metrics, artifacts.

Metrics are buffered and sent with ``MlflowClient.log_batch`` every ``flush_every`` steps
(docs/design.md §6: ~1 ms/step instead of ~7 ms for one ``log_metrics`` call per step), on a writer
thread so the loop does not wait (except with checkpoints, see ``harness``). If a
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
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract as C
from .errors import GantrackError, first_line, store_failure
from .messages import warn
from .paths import cache_dir, own_dir

# MLflow 3 opens experiments as GenAI unless the experiment tag says model training
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = C.EXPERIMENT_KIND_TAG, C.EXPERIMENT_KIND


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else MLflow's own default made absolute: sqlite ``./mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return "sqlite:///" + str(Path.cwd() / "mlflow.db")


def redact(uri: str) -> str:
    """``uri`` with any password in it replaced by ``***`` (for messages, tags and logs)."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def resolve_tracking_uri(uri: str | None) -> str:
    uri = uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # a relative sqlite path: pin it to the current directory now, not whenever MLflow resolves it
        path = uri[len("sqlite:///") :]
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
            raise GantrackError(f"tracking server {redact(uri)} is unreachable: {type(e).__name__}") from None
        check_server_store(uri)
    elif uri.split(":", 1)[0].split("+", 1)[0] == "postgresql":
        check_postgres(uri)
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir():
            raise GantrackError(f"tracking URI {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise GantrackError(f"tracking URI {uri}: folder {folder} is not writable")
    elif "://" not in uri and not uri.startswith("file:"):
        raise GantrackError(
            f"tracking URI {uri!r} is not a URI (try sqlite:///path/mlflow.db or http://127.0.0.1:5000)"
        )


def check_server_store(uri: str) -> None:
    """One cheap request that needs the server's database, with MLflow's credentials: ``/health``
    answers while the database behind the server is down, and MLflow's client would retry a 5xx for
    minutes."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        r = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=30,
            raise_on_status=False,
        )
    except Exception as e:
        raise GantrackError(f"tracking server {redact(uri)} is unreachable: {type(e).__name__}") from None
    if r.status_code in (401, 403):
        raise not_allowed(uri, r.status_code)
    if r.status_code >= 500:
        raise GantrackError(
            f"tracking server {redact(uri)} is up but cannot reach its database (HTTP {r.status_code} "
            "on a search); check the database behind the server"
        )


def not_allowed(uri: str, status: int, what: str = "") -> GantrackError:
    """The one-line error for a 401/403 from a tracking server: which credentials MLflow reads."""
    return GantrackError(
        f"tracking server {redact(uri)}: HTTP {status}, not allowed{' to ' + what if what else ''} "
        "(set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)"
    )


def check_postgres(uri: str, timeout: int = 5) -> None:
    """Connect once, quickly: MLflow's own store retries a failed connection with back-off for about
    two minutes, logging each attempt; a wrong password or a missing database should be one line now."""
    dsn = "postgresql://" + uri.split("://", 1)[1]
    try:
        import psycopg as driver  # noqa: I001  (either driver will do: the test extra has psycopg 3)
    except ImportError:
        try:
            import psycopg2 as driver
        except ImportError:
            raise GantrackError(
                "PostgreSQL stores need a driver: pip install 'gantrack[postgres]' (psycopg2-binary)"
            ) from None
    try:
        driver.connect(dsn, connect_timeout=timeout).close()
    except Exception as e:
        raise GantrackError(f"database {redact(uri)}: {first_line(e)}") from None


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (already resolved); store errors become ``GantrackError``."""
    from mlflow.tracking import MlflowClient

    def open_client():
        with _sqlite_creation_lock(uri):
            return MlflowClient(tracking_uri=uri)

    # A process that does not take our lock (the MLflow UI, a plain MlflowClient) may be creating the same
    # new file's tables: its half-made schema fails our migration ("duplicate column name", "table ...
    # already exists"). Once it is done the store opens, so wait for it (0.5 + 1 + 2 + 4 s); a file that
    # was never made (a bad path) fails at once.
    path = sqlite_file(uri)
    try:
        return retry(open_client, attempts=5, first_wait=0.5, transient=lambda e: path is not None and path.exists())
    except Exception as e:  # MLflow raises many types for a bad store URI
        raise GantrackError(f"cannot open tracking store {redact(uri)}: {first_line(e)}") from None


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other stores and in-memory sqlite."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///") :])


@contextmanager
def _sqlite_creation_lock(uri: str):
    """Opening a sqlite store creates and migrates its tables; two processes doing it at once on a new
    file race (MLflow fails with "duplicate column name"). Serialise the opening per database file."""
    path = sqlite_file(uri)
    if path is None:
        yield
        return
    import fcntl
    import hashlib

    key = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    try:
        folder = cache_dir("locks")
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"sqlite-{key}", "a")
    except OSError:  # no cache folder: open unserialised, as MLflow itself does
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def get_or_create_experiment(mlclient, name: str) -> str:
    """Experiment id for ``name``, created if needed, tagged to open as model training in the UI."""
    try:
        exp = mlclient.get_experiment_by_name(name)
        if exp is None:
            try:
                return mlclient.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except Exception as e:  # another machine created it between our lookup and create: use theirs
                exp = mlclient.get_experiment_by_name(name)
                if exp is None:
                    raise e from None
        if exp.lifecycle_stage == "deleted":
            raise GantrackError(f"experiment {name!r} is deleted; restore it or pick another name")
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            mlclient.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    except GantrackError:
        raise
    except Exception as e:
        raise GantrackError(f"cannot use experiment {name!r}: {first_line(e)}") from None


@dataclass(frozen=True)
class Store:
    """A tracking store that has been checked: its resolved URI and an ``MlflowClient`` on it."""

    uri: str
    client: Any

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created if needed (tagged to open as model training in the UI)."""
        return get_or_create_experiment(self.client, name)


def open_store(tracking_uri: str | None = None) -> Store:
    """Resolve ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI`` or ``./mlflow.db``), check that the
    store can be used (one line otherwise), and open a client on it."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    return Store(uri, client(uri))


ORPHAN_AFTER = 900.0  # seconds without a heartbeat after which a RUNNING run on another host is an orphan


def orphan_reason(run, now: float | None = None) -> str:
    """``orphan_status`` of an MLflow run."""
    return orphan_status(run.info.status, run.data.tags, run.info.start_time, now)


def orphan_status(status: str, tags: dict, start_ms: int | None = None, now: float | None = None) -> str:
    """Why a RUNNING run is an orphan — its training process is gone — or "" when it is not (or cannot be
    told: runs from before the host/pid tags). On this host the recorded pid is checked; elsewhere the
    heartbeat (set with every metrics write) must be older than ``GANTRACK_ORPHAN_AFTER`` seconds
    (default 900)."""
    import socket

    if status != "RUNNING":
        return ""
    host, pid = tags.get(C.TAG_HOST), tags.get(C.TAG_PID, "")
    if host and host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"orphaned: its process (pid {pid} on {host}) is gone"
        except PermissionError:  # alive, another user's
            return ""
        return ""
    beat = tags.get(C.TAG_HEARTBEAT) or (str(int(start_ms) // 1000) if host and start_ms else "")
    limit = float(os.environ.get("GANTRACK_ORPHAN_AFTER", ORPHAN_AFTER))
    if beat.isdigit() and (now or time.time()) - int(beat) > limit:
        return f"orphaned: no heartbeat from {host} for {((now or time.time()) - int(beat)) / 60:.0f} min"
    return ""


def close_orphan(mlclient, run, reason: str) -> None:
    """End an orphaned run KILLED with the reason in ``gantrack.failure`` (its metrics stay)."""
    retry(mlclient.set_tag, run.info.run_id, C.TAG_FAILURE, reason)
    retry(mlclient.set_tag, run.info.run_id, C.TAG_STATUS, "killed")
    retry(mlclient.set_terminated, run.info.run_id, "KILLED")


def git_commit() -> str | None:
    """The commit of the gantrack checkout (when installed from one), for the run's tags."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
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


TRANSIENT = (
    "database is locked",
    "database table is locked",
    "connection",
    "timed out",
    "timeout",
    "max retries",
    "temporarily unavailable",
    "502",
    "503",
    "504",
    "refused",
)


def _transient(e: Exception) -> bool:
    text = f"{type(e).__name__}: {e}".lower()
    return any(t in text for t in TRANSIENT)


def retry(fn, *args, attempts: int = 8, first_wait: float = 0.25, transient=None, **kwargs):
    """Call ``fn``, retrying transient store errors (sqlite "database is locked", a server that is
    restarting; ``transient(e)`` says which, by default these) with exponential back-off: 0.25 s,
    0.5 s, ... (about a minute in all)."""
    transient = transient or _transient
    wait = first_wait
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if i == attempts - 1 or not transient(e):
                raise
            time.sleep(wait)
            wait = min(wait * 2, 16)


def best_effort(fn, *args, **kwargs) -> bool:
    """For calls training must survive without (sample grids, tags): warn and go on."""
    try:
        fn(*args, **kwargs)
        return True
    except Exception as e:
        warn("MLflow call %s failed (%s); training continues", getattr(fn, "__name__", fn), first_line(e, 200))
        return False


@contextmanager
def scoped_env(**values: str):
    """Set environment variables (only those the user has not set) for the block; restore after.

    MLflow reads some settings from the environment at each request, and threads share it, so this
    changes the process's environment while the block runs — callers say so in their docstrings.
    """
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def log_dir() -> Path:
    return own_dir("GANTRACK_LOG_DIR", "logs")


class _ErrorFile(logging.Handler):
    """MLflow's error records (with their tracebacks) appended to a file, opened on the first one; the
    file's path is said once. Never raises: the disk that failed the store may be this one too."""

    def __init__(self, path: Path):
        super().__init__(logging.WARNING)
        self.path, self.said = path, False
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not self.said:
            self.said = True
            warn("MLflow's own error reports go to %s", self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(self.format(record) + "\n")
        except Exception:
            pass


class _Divert(logging.Filter):
    """On MLflow's terminal handlers: its store errors go to the file instead."""

    def __init__(self, target: _ErrorFile):
        super().__init__()
        self.target = target

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith(
            ("mlflow.store", "mlflow.tracking", "sqlalchemy")
        ):
            return True
        if not getattr(record, "gantrack_diverted", False):  # once, however many handlers see it
            record.gantrack_diverted = True
            self.target.handle(record)
        return False


@contextmanager
def mlflow_errors_to_file():
    """While a run is open, MLflow's store errors (a full disk gives one SQLAlchemy traceback per failed
    write) go to ``<GANTRACK_LOG_DIR or ~/.cache/gantrack/logs>/mlflow-errors-<pid>.log``; gantrack's own
    one-line warnings name the cause. The handlers are restored afterwards."""
    target = _ErrorFile(log_dir() / f"mlflow-errors-{os.getpid()}.log")
    divert = _Divert(target)
    loggers = [logging.getLogger(n) for n in ("mlflow", "sqlalchemy")]
    handlers = [h for lg in loggers for h in lg.handlers] + list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(divert)
    try:
        yield target
    finally:
        for h in handlers:
            h.removeFilter(divert)


def fail_fast_http(uri: str):
    """MLflow's own HTTP retries back off for minutes; during training a failed write should come
    back quickly so the metrics are kept and retried by ``MetricBuffer`` instead."""
    if not uri.startswith(("http://", "https://")):
        return nullcontext()
    return scoped_env(
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1", MLFLOW_HTTP_REQUEST_TIMEOUT="10"
    )


class BulkWriter:
    """Metrics straight into the tables of MLflow's SQL store (sqlite, PostgreSQL), for a run gantrack owns.

    ``MlflowClient.log_batch`` on a SQL store builds one SQLAlchemy ORM object per metric and compares
    each against the run's latest values in Python: ~60 µs a metric on a 2-core machine, more than a
    small model's training step per 25 metrics. This writes the same rows with two statements per batch
    on MLflow's own table definitions (``mlflow.store.tracking.dbmodels``), about 5 µs a metric
    (``benchmarks/bench_import.py``): the ``metrics`` rows (duplicates ignored, as log_batch drops
    them) and one upsert of ``latest_metrics`` per key, newer by (step, timestamp, value) as MLflow
    orders them; values sanitised as MLflow does (NaN stored as 0 with ``is_nan``, ±inf as ±max float);
    a run that is not active (deleted) refuses them, as log_batch does.
    ``tests/test_tracking.py`` holds the two paths to the same stored rows. Anything else — an
    http(s) store, another database, a schema this does not recognise — uses ``log_batch``.
    """

    def __init__(self, engine):
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun

        self.engine, self.metrics, self.latest = engine, SqlMetric.__table__, SqlLatestMetric.__table__
        self.runs = SqlRun.__table__
        if engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        self._insert = insert

    @classmethod
    def for_client(cls, mlclient) -> BulkWriter | None:
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = mlclient._tracking_client.store
            if isinstance(store, SqlAlchemyStore) and store.engine.dialect.name in ("sqlite", "postgresql"):
                return cls(store.engine)
        except Exception:
            pass
        return None

    def write(self, run_id: str, metrics: list) -> None:
        from sqlalchemy import and_, or_

        rows, newest = [], {}
        for m in metrics:
            value = float(m.value)
            is_nan = math.isnan(value)
            value = 0.0 if is_nan else (math.copysign(1.7976931348623157e308, value) if math.isinf(value) else value)
            row = {"key": m.key, "value": value, "timestamp": int(m.timestamp), "step": int(m.step)}
            row.update(is_nan=is_nan, run_uuid=run_id)
            rows.append(row)
            cur = newest.get(m.key)
            if cur is None or (row["step"], row["timestamp"], value) > (cur["step"], cur["timestamp"], cur["value"]):
                newest[m.key] = row
        if not rows:
            return
        upsert = self._insert(self.latest)
        new, old = upsert.excluded, self.latest.c
        newer = or_(
            new.step > old.step,
            and_(new.step == old.step, new.timestamp > old.timestamp),
            and_(new.step == old.step, new.timestamp == old.timestamp, new.value > old.value),
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[old.key, old.run_uuid],
            set_={"value": new.value, "timestamp": new.timestamp, "step": new.step, "is_nan": new.is_nan},
            where=newer,
        )
        from sqlalchemy import select

        with self.engine.begin() as conn:
            # as log_batch: only an active run takes metrics (a deleted one refuses them)
            stage = conn.execute(select(self.runs.c.lifecycle_stage).where(self.runs.c.run_uuid == run_id)).scalar()
            if stage != "active":
                state = "not in the store" if stage is None else stage
                raise GantrackError(f"run {run_id} is {state}: metrics refused")
            conn.execute(self._insert(self.metrics).on_conflict_do_nothing(), rows)
            conn.execute(upsert, list(newest.values()))


def _valid_keys(metrics: list, seen: set) -> bool:
    """MLflow's metric-name rule (alphanumerics, ``_ - . / :`` and spaces, no ``..``), checked once per key:
    a bad name takes ``log_batch``'s path and its own error."""
    import re

    for m in metrics:
        if m.key not in seen:
            if not re.fullmatch(r"[\w\-. /:]+", m.key) or ".." in m.key or m.key.startswith("/"):
                return False
            seen.add(m.key)
    return True


class MetricBuffer:
    """Collects per-step metrics and writes them with ``log_batch`` in chunks.

    ``add`` costs a list append; ``flush`` sends everything pending and waits;
    ``flush_in_background`` hands what is pending to one writer thread and returns at once, so
    the training loop does not wait on the store (MLflow's ORM spends ~0.1-0.2 ms per metric,
    1-2 % of a quick-width step). A failed write keeps the metrics pending (retried at the next
    flush), so training goes on through a tracking outage. ``close`` waits for the writer, then
    keeps trying for ``GANTRACK_FINAL_FLUSH_WAIT`` seconds (default 60) and returns False if metrics
    are still pending (``TrackedRun`` then spools them: ``gantrack.spool``). ``cause`` is the last
    failure in a user's words (``errors.store_failure``: "disk full", "database locked", ...).
    """

    def __init__(self, mlclient, run_id: str, uri: str = "", heartbeat: bool = False):
        self.client = mlclient
        self.run_id = run_id
        self.heartbeat = heartbeat  # each write also sets gantrack.heartbeat (no extra request)
        self.pending: list = []
        self.failures = 0
        self.cause = ""
        self.next_try = 0.0  # during an outage, flushes are skipped until then: training keeps its speed
        self.backoff = 2.0
        self._lock = threading.Lock()  # guards ``pending`` between the loop and the writer thread
        self._bulk = BulkWriter.for_client(mlclient)  # None: log_batch
        self._keys_ok: set[str] = set()
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    def add(self, step: int, values: Iterable[tuple[str, float]], timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in values]
        with self._lock:
            self.pending.extend(metrics)

    def add_series(self, key: str, steps, values, timestamp_ms: int) -> None:
        """One key's points at their own steps (an import)."""
        from mlflow.entities import Metric

        metrics = [Metric(key, float(v), timestamp_ms, int(s)) for s, v in zip(steps, values)]
        with self._lock:
            self.pending.extend(metrics)

    def flush(self, force: bool = False) -> bool:
        """Send pending metrics and wait; True when nothing is left pending. After a failure,
        further attempts wait 2 s, 4 s, ... (at most 60 s) unless ``force``."""
        self._wait()  # a background write finishes first: order and failure accounting stay simple
        return self._send(force)

    def flush_in_background(self) -> None:
        """Start writing what is pending on the writer thread. If the previous write is still
        going, do nothing: these metrics go with the next one."""
        if not self.pending or (self._in_flight is not None and not self._in_flight.done()):
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="gantrack-metrics")
        self._in_flight = self._writer.submit(self._send, False)

    def _wait(self) -> None:
        if self._in_flight is not None:
            self._in_flight.result()  # _send never raises
            self._in_flight = None

    def _send(self, force: bool) -> bool:
        if not force and time.monotonic() < self.next_try:
            return not self.pending
        from mlflow.entities import RunTag

        with self._lock:
            batch, self.pending = self.pending, []
        if not batch:
            return True
        sent = 0
        try:
            attempts = 1 if self.failures else 3
            if self._bulk is not None and _valid_keys(batch, self._keys_ok):
                while sent < len(batch):  # one transaction per 20,000 rows: a retry resends little
                    chunk = batch[sent : sent + 20_000]
                    retry(self._bulk.write, self.run_id, chunk, attempts=attempts)
                    sent += len(chunk)
                if self.heartbeat:
                    hb = [RunTag(C.TAG_HEARTBEAT, str(int(time.time())))]
                    retry(self.client.log_batch, self.run_id, tags=hb, synchronous=True, attempts=attempts)
            # at most 1000 metrics per call (MLflow's REST limit); a retry resends little
            while sent < len(batch):
                chunk = batch[sent : sent + 1000]
                tags = [RunTag(C.TAG_HEARTBEAT, str(int(time.time())))] if self.heartbeat and not sent else []
                retry(
                    self.client.log_batch,
                    self.run_id,
                    metrics=chunk,
                    tags=tags,
                    synchronous=True,
                    attempts=attempts,
                )
                sent += len(chunk)
            if self.failures:
                warn("MLflow reachable again; buffered metrics written")
                self.failures, self.backoff = 0, 2.0
            return not self.pending
        except Exception as e:  # network or lock errors: keep the metrics (in order) and retry later
            with self._lock:
                self.pending[:0] = batch[sent:]
            self.failures += 1
            self.cause = store_failure(e)
            self.next_try = time.monotonic() + self.backoff
            self.backoff = min(self.backoff * 2, 60.0)
            if self.failures == 1:
                warn(
                    "cannot write to MLflow: %s (%s); training continues, metrics are buffered",
                    self.cause,
                    first_line(e, 120),
                )
            return False

    def close(self) -> bool:
        """Final flush, retried for ``GANTRACK_FINAL_FLUSH_WAIT`` seconds; True when everything got
        through (otherwise ``pending`` still holds what did not)."""
        deadline = time.time() + float(os.environ.get("GANTRACK_FINAL_FLUSH_WAIT", "60"))
        try:
            while not self.flush(force=True):
                if time.time() > deadline:
                    return False
                time.sleep(2)
            return True
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None


def sync_spool(path: str | Path, tracking_uri: str | None = None) -> int:
    """Upload a legacy spool file (``<run id>.jsonl``, gantrack before spool folders); sets the run's
    final status if recorded.
    Returns the number of metrics written; the file is renamed ``*.synced`` afterwards."""
    from mlflow.entities import Metric

    p = Path(path)
    if not p.is_file():
        raise GantrackError(f"spool file not found: {p}")
    by_run: dict[str, list] = {}
    status: dict[str, str] = {}
    try:
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "status" in r:
                status[r["run_id"]] = r["status"]
            else:
                by_run.setdefault(r["run_id"], []).append(
                    Metric(str(r["key"]), float(r["value"]), int(r["timestamp"]), int(r["step"]))
                )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise GantrackError(f"{p} is not a gantrack spool file: {e}") from None
    store = open_store(tracking_uri)
    uri, mlclient = store.uri, store.client
    n = 0
    for run_id in set(by_run) | set(status):
        try:
            mlclient.get_run(run_id)
        except Exception:
            raise GantrackError(f"run {run_id} from {p} does not exist in {uri}") from None
        metrics = by_run.get(run_id, [])
        for i in range(0, len(metrics), 1000):
            retry(mlclient.log_batch, run_id, metrics=metrics[i : i + 1000])
        n += len(metrics)
        if run_id in status:
            retry(mlclient.set_tag, run_id, C.TAG_SYNCED_FROM, str(p))
            retry(mlclient.set_terminated, run_id, status[run_id])
    p.rename(p.with_suffix(".synced"))
    return n
