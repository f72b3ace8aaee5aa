"""The fast loader returns exactly what the MlflowClient reference path returns."""

import math

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gantrack.analysis import dedupe, load_runs
from gantrack.errors import GantrackError


def populate(uri: str, experiment: str = "load") -> list[str]:
    """Runs with awkward content: NaN, ±inf, a re-logged step, uneven steps, a key only some runs have."""
    client = MlflowClient(uri)
    exp = client.create_experiment(experiment)
    rng = np.random.default_rng(0)
    ids = []
    for r in range(3):
        run = client.create_run(exp, run_name=f"r{r}", tags={"gantrack.loss": "nsgan" if r else "hinge"})
        metrics = [Metric("loss/g", float(v), 1000 + s, s) for s, v in enumerate(rng.standard_normal(120))]
        metrics += [Metric("loss/d_fake", float(v), 1000 + s, s) for s, v in enumerate(rng.standard_normal(120))]
        metrics += [Metric("every3", float(s), 5000 + s, s) for s in range(0, 60, 3)]
        metrics += [
            Metric("loss/g", math.nan, 9000, 200),
            Metric("loss/g", math.inf, 9001, 201),
            Metric("loss/g", -math.inf, 9002, 202),
            Metric("loss/g", 7.0, 9999, 5),
        ]  # step 5 again
        if r == 2:
            metrics.append(Metric("only_in_r2", 1.0, 1, 1))
        client.log_batch(run.info.run_id, metrics=metrics)
        client.log_param(run.info.run_id, "seed", str(r))
        if r < 2:
            client.set_terminated(run.info.run_id)  # r2 stays RUNNING
        ids.append(run.info.run_id)
    return ids


def test_sql_path_equals_client_path_on_sqlite(store, tmp_path):
    ids = populate(store)
    ref = load_runs("load", tracking_uri=store, method="client", cache=False, progress=False)
    fast = load_runs("load", tracking_uri=store, method="sql", cache_dir=tmp_path / "c", progress=False)
    warm = load_runs("load", tracking_uri=store, method="sql", cache_dir=tmp_path / "c", progress=False)
    pd.testing.assert_frame_equal(ref.metrics, fast.metrics)
    pd.testing.assert_frame_equal(ref.metrics, warm.metrics)
    assert len(list((tmp_path / "c" / "runs").glob("*.parquet"))) == 2  # the RUNNING run is never cached
    m = fast.metrics
    g = m[(m["key"] == "loss/g") & (m["run_id"] == ids[0])]
    assert (g["step"] == 5).sum() == 2  # both stored rows are returned ...
    assert (dedupe(m).query("key == 'loss/g' and step == 5")["value"] == 7.0).all()  # ... dedupe keeps the latest
    assert g[g["step"] == 200]["value"].isna().all()
    assert set(fast.runs["params.seed"]) == {"0", "1", "2"}
    w = fast.wide(run_id=ids[0])
    assert {"loss/g", "loss/d_fake", "every3"} <= set(w.columns)
    assert set(fast.wide(key="loss/g").columns) == set(ids)


def test_sql_path_reads_a_store_whose_path_needs_quoting_and_an_empty_run(tmp_path):
    # a space and "#" mean something in the sqlite URI the reader opens: the path must be quoted
    folder = tmp_path / "my runs #1"
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    populate(uri)
    client = MlflowClient(uri)
    empty = client.create_run(client.get_experiment_by_name("load").experiment_id, run_name="no-metrics")
    client.set_terminated(empty.info.run_id)
    ref = load_runs("load", tracking_uri=uri, method="client", cache=False, progress=False)
    fast = load_runs("load", tracking_uri=uri, method="sql", cache=False, progress=False)
    pd.testing.assert_frame_equal(ref.metrics, fast.metrics)
    assert len(fast.runs) == 4 and empty.info.run_id not in set(fast.metrics["run_id"].astype(str))


def test_cache_is_invalidated_when_a_finished_run_changes(store, tmp_path):
    ids = populate(store)
    cache = tmp_path / "c"
    load_runs("load", tracking_uri=store, cache_dir=cache, progress=False)
    MlflowClient(store).log_metric(ids[0], "osc/loss/g/std", 1.5, step=0)
    again = load_runs("load", tracking_uri=store, cache_dir=cache, progress=False)
    assert "osc/loss/g/std" in set(again.metrics["key"].astype(str))


def test_filters_keys_and_run_ids(store):
    ids = populate(store)
    rs = load_runs("load", filter="tags.gantrack.loss = 'hinge'", tracking_uri=store, progress=False)
    assert rs.runs["run_id"].tolist() == [ids[0]]
    rs = load_runs(run_ids=ids[1:], tracking_uri=store, keys=["loss/g"], progress=False)
    assert set(rs.metrics["run_id"].astype(str)) == set(ids[1:])
    assert set(rs.metrics["key"].astype(str)) == {"loss/g"}


def test_rest_path_equals_client_path_on_a_real_server(mlflow_server, tmp_path):
    populate(mlflow_server.url, "rest-load")
    ref = load_runs("rest-load", tracking_uri=mlflow_server.url, method="client", cache=False, progress=False)
    fast = load_runs(
        "rest-load", tracking_uri=mlflow_server.url, method="auto", cache_dir=tmp_path / "c", progress=False
    )
    pd.testing.assert_frame_equal(ref.metrics, fast.metrics)
    assert len(fast.metrics) == len(ref.metrics) > 700


def test_bad_input_is_a_clear_error(store, tmp_path):
    populate(store)
    with pytest.raises(GantrackError, match="unknown experiment"):
        load_runs("nope", tracking_uri=store, progress=False)
    with pytest.raises(GantrackError, match="unknown run id"):
        load_runs(run_ids=["0123456789abcdef"], tracking_uri=store, progress=False)
    with pytest.raises(GantrackError, match="no MLflow database"):
        load_runs("load", tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}", progress=False)
    with pytest.raises(GantrackError, match="unknown method"):
        load_runs("load", tracking_uri=store, method="fast", progress=False)
    with pytest.raises(GantrackError, match="needs an experiment or run_ids"):
        load_runs(tracking_uri=store, progress=False)
