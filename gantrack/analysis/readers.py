"""The store readers: each reads the metric histories of a batch of runs and returns one frame per run.

``READERS`` maps (method, URI scheme) to a reader, ``reader_for`` picks one; ``runs.load_runs`` only
calls it. The methods (``"sql"``, ``"rest"``, ``"client"``) and what each costs are described in
``gantrack.analysis.runs``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ..errors import GantrackError, first_line
from ..tracking import not_allowed, redact
from .frames import part as _part

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
REST_PAGE = 25000  # max_results per get-history request (the server's own cap is 25,000)


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


def scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def pick_method(uri: str) -> str:
    """The fastest method the store allows: sql for databases, rest for servers, client otherwise."""
    s = scheme(uri)
    if s in SQL_SCHEMES:
        return "sql"
    if s in ("http", "https"):
        return "rest"
    return "client"


# Each reader: (uri, mlclient, run_keys {run id: keys}, runs {run id: MLflow run}) -> one frame per run
Reader = Callable[[str, object, dict, dict], list[pd.DataFrame]]
READERS: dict[tuple[str, str], Reader] = {
    ("sql", "sqlite"): lambda uri, mlclient, run_keys, runs: _read_sqlite(uri, list(run_keys)),
    ("sql", "postgresql"): lambda uri, mlclient, run_keys, runs: _read_postgres(uri, list(run_keys)),
    ("sql", "*"): lambda uri, mlclient, run_keys, runs: _read_sqlalchemy(uri, run_keys),
    ("rest", "*"): lambda uri, mlclient, run_keys, runs: _read_rest(
        # expected rows per series (latest step + 1) let the bulk route batch runs into capped answers
        uri,
        run_keys,
        sizes={(rid, m.key): m.step + 1 for rid in run_keys for m in runs[rid].data._metric_objs},
    ),
    ("client", "*"): lambda uri, mlclient, run_keys, runs: _read_client(mlclient, run_keys),
}
METHOD_SCHEMES = {"sql": SQL_SCHEMES, "rest": ("http", "https"), "client": None}  # None: any store


def reader_for(method: str, uri: str) -> Reader:
    """The reader for ``method`` ("auto", "sql", "rest", "client") on the store at ``uri``."""
    if method == "auto":
        method = pick_method(uri)
    if method not in METHOD_SCHEMES:
        raise GantrackError(f"unknown method {method!r}; choose auto, {', '.join(METHOD_SCHEMES)}")
    allowed = METHOD_SCHEMES[method]
    if allowed is not None and scheme(uri) not in allowed:
        need = "a database URI" if method == "sql" else "an http(s) tracking URI"
        raise GantrackError(f"method {method!r} needs {need}, got {redact(uri)}")
    return READERS.get((method, scheme(uri))) or READERS[(method, "*")]
