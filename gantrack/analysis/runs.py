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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import keymaps, paths
from ..errors import GantrackError, first_line
from ..tracking import check_postgres, redact, resolve_tracking_uri, scoped_env
from ..tracking import client as make_client
from .frames import METRIC_COLUMNS, concat, dedupe, normalise  # noqa: F401  (re-exported: the frame's helpers)
from .readers import SQL_SCHEMES, pick_method, reader_for, scheme  # noqa: F401

TERMINAL = ("FINISHED", "FAILED", "KILLED")


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
        cache = (self.cache_dir or paths.cache_dir()) / "per_sample" / f"{run_id}.npz"
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


# --- runs and the cache -------------------------------------------------------------------------


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
    read = reader_for(method, uri)
    if scheme(uri) == "sqlite" and not Path(uri[len("sqlite:///") :]).is_file():
        raise GantrackError(f"no MLflow database at {uri[len('sqlite:///') :]}")
    if scheme(uri) == "postgresql":
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
    cache_root = Path(cache_dir) if cache_dir else paths.cache_dir()
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
        parts = read(uri, mlclient, run_keys, {rid: todo[rid][0] for rid in run_keys})
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
    metrics = concat(frames)
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
