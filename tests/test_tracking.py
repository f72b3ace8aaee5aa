"""Harness → MLflow round trips and the CLI's handling of bad input (real sqlite stores)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from gantrack import Config, preset, train
from gantrack import contract as C
from gantrack.analysis import load_runs
from gantrack.errors import TrainingDiverged, first_line

from conftest import cli_in_process

TINY = dict(width=0.0625, batch_size=16, steps=12, flush_every=5, sample_every=5, experiment="rt")


def test_round_trip_every_key_has_every_step(store, tmp_path):
    run_id = train(Config(**TINY), tracking_uri=store, quiet=True)
    rs = load_runs("rt", tracking_uri=store, progress=False)
    assert rs.runs["status"].tolist() == ["FINISHED"]
    m = rs.metrics
    keys = set(m["key"].astype(str))
    expected = {
        "loss/d_real",
        "loss/d_fake",
        "loss/d",
        "loss/g",
        "acc/real",
        "acc/fake",
        "prob/real",
        "prob/fake",
        "prob/gen",
        "grad/d_norm",
        "grad/g_norm",
    }
    expected |= {
        f"probe/{b}_{w}/{q}" for b in ("dbatch", "gbatch") for w in ("before", "after") for q in ("p", "d_fake", "g")
    }
    assert expected <= keys
    for key, g in m.groupby("key", observed=True):
        if key in C.per_step_keys():
            assert g["step"].tolist() == list(range(1, 13)), key
        else:  # logged once, at snapshots or at a decision: declared, and at the steps they belong to
            assert key in C.snapshot_keys(), key
    assert m.loc[m["key"] == C.DIAG_CODE, "step"].max() == 12  # the final diagnosis, at the last step
    run = rs.runs.iloc[0]
    assert run["tags.gantrack.scenario"] == "stable" and run["tags.gantrack.loss"] == "nsgan"
    assert run["tags.gantrack.seed"] == "1" and run["name"] == "stable-nsgan-s1"
    assert run["params.width"] == "0.0625" and run["params.total_steps"] == "12"
    assert "tags.mlflow.note.content" in rs.runs.columns
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("rt")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "plots", "samples", "weights"} <= top
    samples = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert samples == {
        "samples/samples_step000005.png",
        "samples/samples_step000010.png",
        "samples/samples_step000012.png",
    }
    local = client.download_artifacts(run_id, "weights", str(tmp_path / "dl"))
    state = torch.load(f"{local}/generator.pt", weights_only=True)
    assert any(k.endswith("weight") for k in state)


def test_same_seed_same_logged_curve(store):
    a = train(Config(**TINY, seed=2), tracking_uri=store, quiet=True)
    b = train(Config(**TINY, seed=2), tracking_uri=store, quiet=True)
    m = load_runs("rt", tracking_uri=store, progress=False).metrics
    va = m[m["run_id"] == a].sort_values(["key", "step"])[["key", "step", "value"]].to_numpy()
    vb = m[m["run_id"] == b].sort_values(["key", "step"])[["key", "step", "value"]].to_numpy()
    per_step = np.isin(va[:, 0], C.per_step_keys())
    # 30 per-step keys (5 probe cells × 3, and div/batch_bins), every one bit for bit, and the rest too
    assert per_step.sum() == 12 * 30 and (va == vb).all()


def test_nan_loss_is_logged_tagged_and_fails_the_run(store):
    cfg = preset("quadratic-1d").replace(
        loss="lsgan", optimizer="sgd", lr=1e6, steps=10, experiment="nan", sample_every=0
    )
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(cfg, tracking_uri=store, quiet=True)
    rs = load_runs("nan", tracking_uri=store, progress=False)
    run = rs.runs.iloc[0]
    assert run["status"] == "FAILED"
    assert "non-finite" in run["tags.gantrack.failure"]
    assert run["tags.gantrack.nonfinite_step"] == "1"
    assert len(rs.metrics[rs.metrics["key"] == "loss/g"]) == 1
    run_id = train(cfg.replace(allow_nan=True), tracking_uri=store, quiet=True)
    rs = load_runs(run_ids=[run_id], tracking_uri=store, progress=False)
    assert rs.runs["status"].iloc[0] == "FINISHED"
    assert rs.metrics[rs.metrics["key"] == "loss/g"]["value"].isna().any()


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gantrack.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "args,match",
    [
        (["--preset", "nope"], "unknown preset"),
        (["--loss", "vanilla"], "unknown loss"),
        (["--steps", "-5"], "steps must be"),
        (["--set", "batch_size=0"], "batch_size must be"),
        (["--set", "dataset=mnist", "--set", "data_path=missing.npz"], "not found"),
        (["--set", "dataset=mnist", "--set", "data_path=corrupt.npz"], "not a readable"),
        (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--tracking-uri", "sqlite:////no/such/dir/mlflow.db"], "does not exist"),
    ],
)
def test_cli_bad_input_one_line_exit_2_no_run(tmp_path, args, match, capsys, monkeypatch):
    (tmp_path / "corrupt.npz").write_bytes(b"garbage")
    code, _, err = cli_in_process(["train", "--quiet", "--steps", "2", *args], capsys, monkeypatch)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gantrack: error:") and match in lines[0], err
    assert "Traceback" not in err
    if (tmp_path / "mlflow.db").exists():  # nothing half-created
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exps = client.search_experiments()
        assert not client.search_runs([e.experiment_id for e in exps])


def test_cli_bad_input_through_a_real_process_is_one_line_exit_2(tmp_path):
    r = cli("train", "--quiet", "--steps", "2", "--preset", "nope", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "unknown preset" in r.stderr
    assert r.stderr.startswith("gantrack: error:") and "Traceback" not in r.stderr


def test_cli_trains_on_the_default_store(tmp_path):
    r = cli(
        "train",
        "--quiet",
        "--steps",
        "3",
        "--width",
        "0.0625",
        "--set",
        "batch_size=16",
        "--experiment",
        "cli",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlruns").is_dir()
    rs = load_runs("cli", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", progress=False)
    assert rs.runs["run_id"].tolist() == [run_id]
    p = cli("presets", cwd=tmp_path)
    assert p.returncode == 0 and "convergence-failure-adam" in p.stdout


def test_background_writer_keeps_every_metric_through_a_refused_write(store):
    from gantrack.tracking import MetricBuffer

    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("buffer")).info.run_id
    buffer = MetricBuffer(client, run_id, uri=store)
    buffer.add(1, [("a", 1.0), ("b", 2.0)], timestamp_ms=1)
    client.delete_run(run_id)  # a deleted run refuses writes: a real failure of the store
    buffer.flush_in_background()
    assert not buffer.flush()  # waits for the refused background write, then backs off
    assert [(m.key, m.step) for m in buffer.pending] == [("a", 1), ("b", 1)]  # kept, in order
    buffer.add(2, [("a", 3.0), ("b", 4.0)], timestamp_ms=2)
    client.restore_run(run_id)
    buffer.flush_in_background()  # still backing off: writes nothing, loses nothing
    assert buffer.close() is True  # the final flush is forced and gets everything through
    assert buffer.pending == []
    for key, values in (("a", [1.0, 3.0]), ("b", [2.0, 4.0])):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(1, values[0]), (2, values[1])]


def test_error_messages_are_one_line_even_from_empty_or_libpq_errors():
    # an exception with no message must not turn into an IndexError inside the error path
    assert first_line(TimeoutError()) == "TimeoutError"
    assert first_line(ValueError("\n  \nsecond line only\nthird")) == "second line only"
    libpq = 'connection to server at "127.0.0.1", port 5999 failed: FATAL:  password authentication failed\nDETAIL: x'
    assert first_line(RuntimeError(libpq)) == "FATAL:  password authentication failed"
    assert len(first_line(RuntimeError("x" * 1000), 120)) == 120
    sqlalchemy_like = RuntimeError(
        "(psycopg2.errors.InsufficientPrivilege)\npermission denied for table runs\n[SQL: x]"
    )
    assert first_line(sqlalchemy_like, prefer=("denied",)) == "permission denied for table runs"
    assert first_line(sqlalchemy_like, prefer=("nowhere",)) == "(psycopg2.errors.InsufficientPrivilege)"


def test_bulk_writer_stores_what_log_batch_stores(tmp_path):
    """The bulk path writes MLflow's rows itself: the same histories and latest values as log_batch for
    NaN, ±inf, duplicates, re-logged and out-of-order steps."""
    from mlflow.entities import Metric

    from gantrack.tracking import BulkWriter

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("bulk")
    a, b = (client.create_run(exp).info.run_id for _ in range(2))
    values = [1.0, float("nan"), float("inf"), -float("inf"), 2.5, 2.5, -1.0, 0.0]
    metrics = [Metric("loss/g", v, 1000 + i, s) for i, (v, s) in enumerate(zip(values, [3, 1, 2, 5, 4, 4, 5, 2]))]
    metrics += [metrics[0], Metric("acc/real", 0.5, 10, 7), Metric("acc/real", 0.25, 10, 7)]  # a duplicate, a tie
    writer = BulkWriter.for_client(client)
    assert writer is not None
    writer.write(a, metrics[:6])
    writer.write(a, metrics[6:])  # the latest value is updated across batches
    client.log_batch(b, metrics=metrics[:6])
    client.log_batch(b, metrics=metrics[6:])

    def stored(run_id):
        hist = {
            k: sorted((m.step, m.timestamp, str(m.value)) for m in client.get_metric_history(run_id, k))
            for k in ("loss/g", "acc/real")
        }
        return hist, {k: str(v) for k, v in client.get_run(run_id).data.metrics.items()}

    assert stored(a) == stored(b)
    assert BulkWriter.for_client(MlflowClient("http://127.0.0.1:9")) is None  # REST stores take log_batch


def test_two_processes_opening_a_new_sqlite_store_at_once_both_succeed(tmp_path):
    """MLflow creates and migrates a new sqlite store's tables on first open; two processes doing so at once
    race ("duplicate column name"). gantrack serialises the opening per database file."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = (
        "import sys; from gantrack.tracking import client, get_or_create_experiment; "
        "get_or_create_experiment(client(sys.argv[1]), 'race'); print('ok')"
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "GANTRACK_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == b"ok", err.decode()[-500:]
