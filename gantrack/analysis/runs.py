"""MLflow runs → tidy pandas frames, fast.

``load_runs`` lists runs with MLflow's own ``search_runs`` (so filters mean what they mean
in MLflow) and reads metric histories by the fastest path the store allows:

- ``"sql"``: sqlite / PostgreSQL / MySQL stores, read directly: sqlite through the ADBC driver
  into Arrow (opened ``mode=ro``, one query per run); PostgreSQL through the ADBC PostgreSQL driver
  (extra ``gantrack[postgres]``; one query per 50 runs, Arrow all the way); others through
  SQLAlchemy. Direct reads bypass an ``mlflow server``'s permissions: use your own read-only database
  role (``postgresql://reader:...@host/db``), never the server's;
- ``"rest"``: an ``mlflow server``: ``metrics/get-history-bulk`` (one key of up to 100 runs a
  request; an answer that reaches the server's 25,000-row cap is split and asked again, never
  trusted) and ``metrics/get-history`` (paged, always with ``max_results``) where a run alone fills
  an answer or the server lacks the bulk route; through MLflow's own request helpers — so every
  credential and TLS setting MLflow honours applies (``MLFLOW_TRACKING_TOKEN``,
  ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, ``MLFLOW_TRACKING_INSECURE_TLS``, client and server
  certificates) — with requests in parallel on a thread pool no larger than MLflow's HTTP
  connection pool (``MLFLOW_HTTP_POOL_MAXSIZE``, default 10);
- ``"client"``: ``MlflowClient.get_metric_history`` per (run, key): the slow reference path
  the tests compare the others against.

All three return the same frame: columns run_id, key (categoricals), step, timestamp (int64),
value (float64; NaN where MLflow stored is_nan, as MLflow itself returns it), sorted by
(run_id, key, step, timestamp, value). Every stored row is kept — a step logged twice appears
twice; ``dedupe`` keeps the latest row per (run_id, key, step).

Finished runs (FINISHED, FAILED, KILLED) are cached as parquet under ``cache_dir`` (default
``$GANTRACK_CACHE_DIR`` or ``~/.cache/gantrack``), keyed by store, run, end time and the
run's latest-metric timestamps, so a resumed or re-logged run is read again. RUNNING runs are
always read fresh.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from .. import keymaps
from ..errors import GantrackError, first_line
from ..tracking import check_postgres, not_allowed, redact, resolve_tracking_uri, scoped_env
from ..tracking import client as make_client

METRIC_COLUMNS = ["run_id", "key", "step", "timestamp", "value"]
TERMINAL = ("FINISHED", "FAILED", "KILLED")
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
REST_PAGE = 25000  # max_results per get-history request (the server's own cap is 25,000)


@dataclass
class RunSet:
    """Runs and their metric histories as tidy frames."""

    runs: pd.DataFrame  # one row per run: run_id, name, status, start/end, params.*, tags.*
    metrics: pd.DataFrame  # long form: run_id, key, step, timestamp, value
    tracking_uri: str | None = None  # where the runs live (for their artifacts)
    cache_dir: Path | None = None
    key_map: dict[str, str] = field(default_factory=dict)  # contract key → the user's key, if mapped

    def per_sample(self, run_id: str) -> dict[str, np.ndarray]:
        """The run's per-sample probes (``gantrack.probes``): ``steps`` and one (steps, batch) float32
        array of raw D scores per probe cell. Cached beside the metrics for finished runs.

        Raises ``GantrackError`` with a one-line reason when the run has none or the file is bad.
        """
        from ..contract import PER_SAMPLE_ARTIFACT
        from ..probes import read_per_sample

        if self.tracking_uri is None:
            raise GantrackError("this RunSet was not loaded from MLflow: pass per_sample= explicitly")
        row = self.runs.loc[self.runs["run_id"] == run_id]
        status = row["status"].iloc[0] if len(row) and "status" in row else ""
        cache = (self.cache_dir or default_cache_dir()) / "per_sample" / f"{run_id}.npz"
        if status in TERMINAL and cache.is_file():
            return read_per_sample(cache)
        mlclient = make_client(self.tracking_uri)
        folder, name = PER_SAMPLE_ARTIFACT.rsplit("/", 1)
        try:
            listed = {a.path for a in mlclient.list_artifacts(run_id, folder)}
        except Exception as e:
            raise GantrackError(f"cannot list artifacts of run {run_id}: {first_line(e)}") from None
        if PER_SAMPLE_ARTIFACT not in listed:
            raise GantrackError(
                "no per-sample probes in this run (logged before they existed, with "
                "per_sample_probes=false, or by another tool)"
            )
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gantrack-ps-") as tmp:
            try:
                with scoped_env(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):  # one small file: no bar
                    local = mlclient.download_artifacts(run_id, PER_SAMPLE_ARTIFACT, tmp)
            except Exception as e:
                raise GantrackError(f"cannot download {PER_SAMPLE_ARTIFACT}: {first_line(e)}") from None
            data = Path(local).read_bytes()
        arrays = read_per_sample(data)  # validates before anything is cached
        if status in TERMINAL:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp_path = cache.with_suffix(f".tmp{os.getpid()}")
            tmp_path.write_bytes(data)
            os.replace(tmp_path, cache)
        return arrays

    def wide(self, run_id: str | None = None, key: str | None = None) -> pd.DataFrame:
        """One run as step × key, or one key as step × run_id (latest row per step)."""
        if (run_id is None) == (key is None):
            raise GantrackError("wide() takes exactly one of run_id or key")
        m = dedupe(self.metrics)
        if run_id is not None:
            sel, columns = m[m["run_id"] == run_id], "key"
        else:
            sel, columns = m[m["key"] == key], "run_id"
        if sel.empty:
            raise GantrackError(f"no metrics for {'run ' + run_id if run_id else 'key ' + key!r}")
        out = sel.pivot(index="step", columns=columns, values="value")
        out.columns = out.columns.astype(str)
        out.columns.name = None
        return out


def dedupe(metrics: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest-timestamped row per (run_id, key, step) (MLflow keeps re-logged steps as extra rows)."""
    m = metrics.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return m[~m.duplicated(["run_id", "key", "step"], keep="last")].reset_index(drop=True)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes and order, so frames from every path compare equal.

    run_id and key become categoricals with lexically sorted categories; rows are ordered by
    (run_id, key, step, timestamp, value) with a lexsort on the codes (no string comparisons).
    """
    run = (
        frame["run_id"]
        if isinstance(frame["run_id"].dtype, pd.CategoricalDtype)
        else pd.Categorical(np.asarray(frame["run_id"], dtype=object).astype(str))
    )
    key = (
        frame["key"]
        if isinstance(frame["key"].dtype, pd.CategoricalDtype)
        else pd.Categorical(np.asarray(frame["key"], dtype=object).astype(str))
    )
    run, key = pd.Categorical(run), pd.Categorical(key)
    run = run.reorder_categories(sorted(run.categories)) if not run.categories.is_monotonic_increasing else run
    key = key.reorder_categories(sorted(key.categories)) if not key.categories.is_monotonic_increasing else key
    step = np.asarray(frame["step"], dtype=np.int64)
    ts = np.asarray(frame["timestamp"], dtype=np.int64)
    value = np.asarray(frame["value"], dtype=np.float64)
    order = _order(run.codes, key.codes, len(key.categories), step, ts, value)
    out = pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(run.codes[order], run.categories.astype(str)),
            "key": pd.Categorical.from_codes(key.codes[order], key.categories.astype(str)),
            "step": step[order],
            "timestamp": ts[order],
            "value": value[order],
        }
    )
    return out


def _order(run_codes, key_codes, n_keys, step, ts, value) -> np.ndarray:
    """Row order by (run, key, step, timestamp, value).

    Fast path: one stable radix argsort of a composite int64 (run, key, step) — correct whenever no
    (run, key, step) repeats; re-logged steps (rare) fall back to a full lexsort.
    """
    n = len(step)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    lo, hi = int(step.min()), int(step.max())
    span = hi - lo + 1
    groups = (int(run_codes.max()) + 1) * max(1, n_keys)
    if span > 0 and groups * span < 2**62:
        composite = (run_codes.astype(np.int64) * max(1, n_keys) + key_codes) * span + (step - lo)
        order = np.argsort(composite, kind="stable")
        if not (np.diff(composite[order]) == 0).any():
            return order
    return np.lexsort((value, ts, step, key_codes, run_codes))


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run parts whose run_id/key are categoricals with different categories."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return _empty()
    run = union_categoricals([pd.Categorical(p["run_id"]) for p in parts], sort_categories=True)
    key = union_categoricals([pd.Categorical(p["key"]) for p in parts], sort_categories=True)
    return normalise(
        pd.DataFrame(
            {
                "run_id": run,
                "key": key,
                "step": np.concatenate([p["step"].to_numpy(np.int64) for p in parts]),
                "timestamp": np.concatenate([p["timestamp"].to_numpy(np.int64) for p in parts]),
                "value": np.concatenate([p["value"].to_numpy(np.float64) for p in parts]),
            }
        )
    )


def _part(run_id: str, keys: list[str], codes: np.ndarray, step, timestamp, value) -> pd.DataFrame:
    """One run's rows as a frame with categorical run_id/key (no per-row Python strings)."""
    n = len(codes)
    return pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [run_id]),
            "key": pd.Categorical.from_codes(np.asarray(codes, dtype=np.int32), keys),
            "step": np.asarray(step, dtype=np.int64),
            "timestamp": np.asarray(timestamp, dtype=np.int64),
            "value": np.asarray(value, dtype=np.float64),
        }
    )


def _empty() -> pd.DataFrame:
    return normalise(
        pd.DataFrame({c: np.array([], dtype=object if c in ("run_id", "key") else float) for c in METRIC_COLUMNS})
    )


# --- the three readers: each returns one frame per run ------------------------------------------

# sqlite columns have no fixed type and ADBC infers one from the first rows of a result, so the
# query pins them (REAL for value even where a value was stored as an integer)
_SQLITE_QUERY = (
    "SELECT key, CAST(step AS INTEGER), CAST(timestamp AS INTEGER), CAST(value AS REAL), is_nan "
    "FROM metrics WHERE run_uuid = ?"
)


def _read_sqlite(uri: str, run_ids: list[str], workers: int = 0) -> list[pd.DataFrame]:
    """Per run, one parameterised query on a read-only connection, through the ADBC sqlite driver.

    ADBC steps the rows in C and hands back Arrow columns, so no Python object is made per row
    (Python's sqlite3 module builds a tuple per row: 3-4x slower on 3 M rows). Two readers on
    separate connections overlap, as the driver releases the GIL while it reads.
    """
    workers = workers or max(1, min(2, os.cpu_count() or 1, len(run_ids)))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            chunks = list(
                pool.map(lambda ids: _read_sqlite(uri, ids, workers=1), [run_ids[i::workers] for i in range(workers)])
            )
        by_run = {p["run_id"].cat.categories[0]: p for chunk in chunks for p in chunk}
        return [by_run[r] for r in run_ids]
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:
        raise GantrackError(
            "reading sqlite stores needs adbc-driver-sqlite (pip install adbc-driver-sqlite), or pass method='client'"
        ) from None

    path = urllib.parse.quote(uri[len("sqlite:///") :])
    parts = []
    with adbc.connect(f"file:{path}?mode=ro") as con, con.cursor() as cur:
        cur.execute("PRAGMA busy_timeout = 20000")  # wait out a writer's commit instead of failing
        cur.fetchall()
        for run_id in run_ids:
            cur.execute(_SQLITE_QUERY, (run_id,))
            table = cur.fetch_arrow_table()
            if table.num_rows == 0:
                parts.append(_part(run_id, [], np.zeros(0, np.int32), [], [], []))
                continue
            key = table.column(0).combine_chunks().dictionary_encode()
            value = table.column(3).to_numpy().copy()
            value[table.column(4).to_numpy().astype(bool)] = np.nan  # as MLflow's own entity conversion does
            parts.append(
                _part(
                    run_id,
                    key.dictionary.to_pylist(),
                    key.indices.to_numpy(),
                    table.column(1).to_numpy(),
                    table.column(2).to_numpy(),
                    value,
                )
            )
    return parts


_RUN_ID = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")


def _libpq_uri(uri: str) -> str:
    """A SQLAlchemy PostgreSQL URI (``postgresql+psycopg2://...``) as libpq reads it (``postgresql://...``)."""
    scheme, rest = uri.split("://", 1)
    return "postgresql://" + rest


def _read_postgres(uri: str, run_ids: list[str]) -> list[pd.DataFrame]:
    """All the runs' metrics in one query through the ADBC PostgreSQL driver: rows arrive as Arrow
    columns (libpq's binary COPY), so no Python object is made per row."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return _read_sqlalchemy(uri, {r: [] for r in run_ids})  # psycopg2 through SQLAlchemy: slower
    bad = [r for r in run_ids if not _RUN_ID.match(r)]
    if bad:
        raise GantrackError(f"not an MLflow run id: {bad[0]!r}")
    ids = ",".join(f"'{r}'" for r in run_ids)  # checked above: letters, digits, '-' and '_' only
    query = (
        f"SELECT run_uuid, key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid IN ({ids}) ORDER BY run_uuid"
    )
    try:
        with adbc.connect(_libpq_uri(uri)) as con, con.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(query)
            table = cur.fetch_arrow_table()
    except Exception as e:  # the driver's errors carry libpq's message: wrong password, no such role...
        raise GantrackError(f"cannot read metrics from {redact(uri)}: {first_line(e)}") from None
    run_col = table.column(0).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, run_col[1:] != run_col[:-1]]) if len(run_col) else np.zeros(0, int)
    bounds = dict(zip(run_col[starts], zip(starts, np.r_[starts[1:], len(run_col)]))) if len(run_col) else {}
    parts = []
    for run_id in run_ids:
        if run_id not in bounds:
            parts.append(_part(run_id, [], np.zeros(0, np.int32), [], [], []))
            continue
        a, b = bounds[run_id]
        t = table.slice(a, b - a)
        key = t.column(1).combine_chunks().dictionary_encode()
        value = t.column(4).to_numpy().astype(np.float64, copy=True)
        value[t.column(5).to_numpy(zero_copy_only=False).astype(bool)] = np.nan  # as MLflow's entities do
        parts.append(
            _part(
                run_id,
                key.dictionary.to_pylist(),
                key.indices.to_numpy(),
                t.column(2).to_numpy(),
                t.column(3).to_numpy(),
                value,
            )
        )
    return parts


def _read_sqlalchemy(uri: str, run_keys: dict[str, list[str]]) -> list[pd.DataFrame]:
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    q = sa.text("SELECT key, step, timestamp, value, is_nan FROM metrics WHERE run_uuid = :run")
    parts = []
    with engine.connect() as con:
        for run_id in run_keys:
            df = pd.read_sql(q, con, params={"run": run_id})
            df.loc[df["is_nan"].astype(bool), "value"] = np.nan
            key = pd.Categorical(df["key"].astype(str))
            parts.append(_part(run_id, list(key.categories), key.codes, df["step"], df["timestamp"], df["value"]))
    engine.dispose()
    return parts


def _series_parts(series: dict[str, dict[str, list[tuple[int, int, float]]]]) -> list[pd.DataFrame]:
    """{run: {key: [(step, timestamp, value), ...]}} → one frame per run."""
    parts = []
    for run_id, by_key in series.items():
        keys = sorted(by_key)
        rows = [r for k in keys for r in by_key[k]]
        codes = np.repeat(np.arange(len(keys)), [len(by_key[k]) for k in keys])
        arr = (
            np.array(rows, dtype=[("step", "i8"), ("timestamp", "i8"), ("value", "f8")])
            if rows
            else np.zeros(0, dtype=[("step", "i8"), ("timestamp", "i8"), ("value", "f8")])
        )
        parts.append(_part(run_id, keys, codes, arr["step"], arr["timestamp"], arr["value"]))
    return parts


def _read_rest(
    uri: str, run_keys: dict[str, list[str]], workers: int = 8, sizes: dict[tuple[str, str], int] | None = None
) -> list[pd.DataFrame]:
    """Metric histories through an ``mlflow server``, with MLflow's ``http_request`` (its credentials, TLS).

    One ``metrics/get-history-bulk`` request reads one key for up to 100 runs — the route MLflow's
    own UI charts with: a run's rows as plain JSON, one SQL query for the batch, so far less server
    work per row than ``get-history``'s protobuf answers, one request per (run, key). The server
    caps an answer at 25,000 rows and truncates silently, so runs are batched by their expected
    rows (``sizes``: the latest step + 1 of each (run, key), from the run listing) and an answer
    that reaches the cap is never trusted: its batch is split in two and asked again; a single run
    with more rows than one answer holds is paged through ``get-history``. Servers without the bulk
    route (HTTP 404) are read per (run, key) through ``get-history``, paged, ``max_results`` always
    sent. Requests run in parallel on a pool no larger than MLflow's HTTP connection pool.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    from mlflow.environment_variables import MLFLOW_HTTP_POOL_MAXSIZE
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)  # token, username/password, TLS: as MLflow's own client
    workers = max(1, min(workers, MLFLOW_HTTP_POOL_MAXSIZE.get()))  # every thread gets a pooled connection
    bulk_route = [True]  # cleared by the first 404: an older server without get-history-bulk

    def row(m: dict) -> tuple[int, int, float]:
        # NaN and ±Infinity arrive as strings (get-history's protobuf JSON) or bare literals (Flask's
        # JSON in get-history-bulk): float() reads both
        return int(m.get("step", 0)), int(m.get("timestamp", 0)), float(m.get("value", "NaN"))

    def get(endpoint: str, params, what: str) -> dict | None:
        try:
            r = http_request(creds, endpoint, "GET", params=params, timeout=120, raise_on_status=False)
        except MlflowException as e:
            raise GantrackError(f"{redact(uri)} is unreachable: {first_line(e, 200)}") from None
        if r.status_code in (401, 403):
            raise not_allowed(uri, r.status_code, f"read {what}")
        if r.status_code == 404 and endpoint.endswith("-bulk"):
            return None
        if r.status_code != 200:
            raise GantrackError(f"{redact(uri)}: HTTP {r.status_code} reading {what}")
        return r.json()

    def history(run_id: str, key: str) -> list[tuple[int, int, float]]:
        out, token = [], None
        while True:
            params = {"run_id": run_id, "metric_key": key, "max_results": REST_PAGE}
            if token:
                params["page_token"] = token
            body = get("/api/2.0/mlflow/metrics/get-history", params, f"run {run_id} key {key}")
            out.extend(map(row, body.get("metrics", [])))
            token = body.get("next_page_token")
            if not token:
                return out

    def bulk(key: str, batch: list[str]):
        """{run: rows} for the batch, or the halves to ask again for when the answer hit the cap."""
        if len(batch) > 1 and bulk_route[0]:
            params = {"run_id": batch, "metric_key": key, "max_results": REST_PAGE}
            body = get("/ajax-api/2.0/mlflow/metrics/get-history-bulk", params, f"key {key} of {len(batch)} runs")
            if body is None:
                bulk_route[0] = False
            elif len(body.get("metrics", [])) >= REST_PAGE:  # possibly truncated: ask again in halves
                return {}, [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
            else:
                out = {run_id: [] for run_id in batch}
                for m in body.get("metrics", []):
                    out[m["run_id"]].append(row(m))
                return out, []
        return {run_id: history(run_id, key) for run_id in batch}, []

    # batches of up to 100 runs whose expected rows stay under one answer's cap
    sizes = sizes or {}
    todo: list[tuple[str, list[str]]] = []
    for key in sorted({k for keys in run_keys.values() for k in keys}):
        batch, rows = [], 0
        for run_id, keys in run_keys.items():
            if key not in keys:
                continue
            n = max(1, sizes.get((run_id, key), 1))
            if batch and (len(batch) == 100 or rows + n > REST_PAGE * 0.9):
                todo.append((key, batch))
                batch, rows = [], 0
            batch.append(run_id)
            rows += n
        if batch:
            todo.append((key, batch))

    series: dict[str, dict[str, list]] = {r: {} for r in run_keys}
    with ThreadPoolExecutor(workers) as pool:
        pending = {pool.submit(bulk, key, batch): key for key, batch in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                key = pending.pop(f)
                got, again = f.result()
                for run_id, rows in got.items():
                    series[run_id][key] = rows
                pending.update({pool.submit(bulk, key, half): key for half in again})
    return _series_parts(series)


def _read_client(mlclient, run_keys: dict[str, list[str]]) -> list[pd.DataFrame]:
    """The reference: ``MlflowClient.get_metric_history`` for every (run, key)."""
    series = {
        run_id: {
            key: [(m.step, m.timestamp, m.value) for m in mlclient.get_metric_history(run_id, key)] for key in keys
        }
        for run_id, keys in run_keys.items()
    }
    return _series_parts(series)


# --- runs and the cache -------------------------------------------------------------------------


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def pick_method(uri: str) -> str:
    scheme = _scheme(uri)
    if scheme in SQL_SCHEMES:
        return "sql"
    if scheme in ("http", "https"):
        return "rest"
    return "client"


def _experiment_ids(mlclient, experiment) -> list[str]:
    names = [experiment] if isinstance(experiment, (str, int)) else list(experiment)
    ids = []
    for name in names:
        exp = mlclient.get_experiment_by_name(str(name))
        if exp is None and str(name).isdigit():
            try:
                exp = mlclient.get_experiment(str(name))
            except Exception:
                exp = None
        if exp is None:
            raise GantrackError(f"unknown experiment {name!r}")
        ids.append(exp.experiment_id)
    return ids


def _runs_frame(runs: list) -> pd.DataFrame:
    rows = []
    for r in runs:
        row = {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "experiment_id": r.info.experiment_id,
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(r.info.end_time, unit="ms", utc=True) if r.info.end_time else pd.NaT,
        }
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        rows.append(row)
    cols = ["run_id", "name", "experiment_id", "status", "start_time", "end_time"]
    return pd.DataFrame(rows, columns=None if rows else cols)


def _fingerprint(uri: str, run) -> str:
    latest = sorted((m.key, m.timestamp, m.step) for m in run.data._metric_objs)
    text = f"{uri}|{run.info.run_id}|{run.info.end_time}|{latest}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    return Path(os.environ.get("GANTRACK_CACHE_DIR") or Path.home() / ".cache" / "gantrack")


def load_runs(
    experiment: str | Iterable[str] | None = None,
    filter: str = "",
    run_ids: Iterable[str] | None = None,
    tracking_uri: str | None = None,
    keys: Iterable[str] | None = None,
    method: str = "auto",
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = True,
    key_map: dict[str, str] | None = None,
) -> RunSet:
    """Runs of an experiment (name or id, or several) or explicit ``run_ids``, as a ``RunSet``.

    ``filter`` is an MLflow search filter (e.g. ``"tags.gantrack.loss = 'nsgan'"``); ``keys``
    limits the metric keys read (contract names); ``method`` is ``"auto"`` (sql → rest → client by
    URI), ``"sql"``, ``"rest"`` or ``"client"``. ``key_map`` reads runs that another loop logged:
    ``{"loss/d_fake": "errD_fake", "loss/g": "errG"}`` (``gantrack.keymaps``; presets there).
    """
    from tqdm import tqdm

    uri = resolve_tracking_uri(tracking_uri)
    if method == "auto":
        method = pick_method(uri)
    if method not in ("sql", "rest", "client"):
        raise GantrackError(f"unknown method {method!r}; choose auto, sql, rest or client")
    if method == "sql" and _scheme(uri) not in SQL_SCHEMES:
        raise GantrackError(f"method 'sql' needs a database URI, got {uri}")
    if method == "rest" and _scheme(uri) not in ("http", "https"):
        raise GantrackError(f"method 'rest' needs an http(s) tracking URI, got {uri}")
    if _scheme(uri) == "sqlite" and not Path(uri[len("sqlite:///") :]).is_file():
        raise GantrackError(f"no MLflow database at {uri[len('sqlite:///') :]}")
    if _scheme(uri) == "postgresql":
        check_postgres(uri)  # one line now, not MLflow's two minutes of retries
    mlclient = make_client(uri)
    try:
        if run_ids is not None:
            runs = []
            for rid in run_ids:
                try:
                    runs.append(mlclient.get_run(rid))
                except Exception:
                    raise GantrackError(f"unknown run id {rid!r}") from None
        elif experiment is not None:
            runs = mlclient.search_runs(
                _experiment_ids(mlclient, experiment), filter_string=filter or "", max_results=50000
            )
        else:
            raise GantrackError("load_runs needs an experiment or run_ids")
    except GantrackError:
        raise
    except Exception as e:
        raise GantrackError(f"cannot list runs in {redact(uri)}: {first_line(e)}") from None

    wanted = None if keys is None else set(keys)
    renames = keymaps.check(key_map, {r.info.run_id: set(r.data.metrics) for r in runs}) if key_map else {}
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    frames, todo = [], {}
    for run in runs:
        path = cache_root / "runs" / f"{run.info.run_id}-{_fingerprint(uri, run)}.parquet"
        if cache and run.info.status in TERMINAL and path.is_file():
            frames.append(pd.read_parquet(path))
        else:
            todo[run.info.run_id] = (run, path)

    chunk = 50
    ids = list(todo)
    bar = tqdm(total=len(ids), disable=not progress or len(ids) < 2 * chunk, desc="loading runs", unit="run")
    for i in range(0, len(ids), chunk):
        run_keys = {rid: sorted(todo[rid][0].data.metrics) for rid in ids[i : i + chunk]}
        if method == "sql":
            if _scheme(uri) == "sqlite":
                parts = _read_sqlite(uri, list(run_keys))
            elif _scheme(uri) == "postgresql":
                parts = _read_postgres(uri, list(run_keys))
            else:
                parts = _read_sqlalchemy(uri, run_keys)
        elif method == "rest":
            sizes = {(rid, m.key): m.step + 1 for rid in run_keys for m in todo[rid][0].data._metric_objs}
            parts = _read_rest(uri, run_keys, sizes=sizes)
        else:
            parts = _read_client(mlclient, run_keys)
        for rid, part in zip(run_keys, parts):
            run, path = todo[rid]
            if cache and run.info.status in TERMINAL:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                part.to_parquet(tmp, index=False)
                os.replace(tmp, path)  # atomic: a crashed writer never leaves a half file
        frames.extend(parts)
        bar.update(len(run_keys))
    bar.close()
    metrics = _concat(frames)
    if renames:
        metrics = apply_key_map(metrics, renames)
    if wanted is not None:
        metrics = metrics[metrics["key"].isin(wanted)].reset_index(drop=True)
        metrics["key"] = metrics["key"].cat.remove_unused_categories()
    return RunSet(
        runs=_runs_frame(runs), metrics=metrics, tracking_uri=uri, cache_dir=cache_root, key_map=dict(key_map or {})
    )


def apply_key_map(metrics: pd.DataFrame, renames: dict[str, str]) -> pd.DataFrame:
    """Rename the user's keys ({user key: contract key}) in a long metrics frame."""
    metrics = metrics.copy()
    key = metrics["key"].astype("category")
    clash = sorted(set(renames.values()) & set(key.cat.categories) - set(renames))
    if clash:
        raise GantrackError(
            f"key map: the runs already log {', '.join(clash)} under gantrack's own name; map only keys they lack"
        )
    metrics["key"] = key.cat.rename_categories(lambda k: renames.get(k, k))
    return metrics
