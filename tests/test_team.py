"""Team scale: a real PostgreSQL behind a real ``mlflow server`` — training, reads (REST, direct Arrow,
the MlflowClient reference), reports, authentication, and one-line errors for every bad credential."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gantrack import Config, GantrackError, train
from gantrack.analysis import build_report, load_runs

from conftest import MlflowServer, Postgres

KW = dict(width=0.0625, batch_size=16, steps=8, sample_every=0)


@pytest.fixture(scope="module")
def team(pg_server, postgres):
    """Two trained runs and one hand-made RUNNING run with NaN, ±inf and a re-logged step, on the server."""
    uri = pg_server.url
    ids = [train(Config(experiment="team", seed=s, **KW), tracking_uri=uri, quiet=True) for s in (1, 2)]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("team").experiment_id
    odd = client.create_run(exp, run_name="odd").info.run_id
    metrics = [
        Metric("loss/g", float("nan"), 1000, 1),
        Metric("loss/g", float("inf"), 1001, 2),
        Metric("loss/g", float("-inf"), 1002, 3),
        Metric("loss/g", 0.5, 1003, 3),  # step 3 logged again
        Metric("loss/d_fake", 1e-300, 1004, 1),
    ]
    client.log_batch(odd, metrics=metrics)  # left RUNNING
    return uri, ids, odd


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a["run_id"].astype(str).tolist() == b["run_id"].astype(str).tolist()
    assert a["key"].astype(str).tolist() == b["key"].astype(str).tolist()
    np.testing.assert_array_equal(a["step"].to_numpy(), b["step"].to_numpy())
    np.testing.assert_array_equal(a["timestamp"].to_numpy(), b["timestamp"].to_numpy())
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())  # NaN == NaN here


def test_rest_and_direct_postgres_reads_equal_the_client_reference(team, postgres):
    uri, ids, odd = team
    ref = load_runs("team", tracking_uri=uri, method="client", cache=False, progress=False)
    rest = load_runs("team", tracking_uri=uri, method="rest", cache=False, progress=False)
    direct = load_runs("team", tracking_uri=postgres.uri("reader"), method="sql", cache=False, progress=False)
    assert set(ref.runs["run_id"]) == {*ids, odd}
    assert set(direct.runs["run_id"]) == set(ref.runs["run_id"])
    assert dict(zip(direct.runs["run_id"], direct.runs["status"]))[odd] == "RUNNING"
    for frame in (rest.metrics, direct.metrics):
        _frames_equal(frame, ref.metrics)
    g = ref.metrics[(ref.metrics["run_id"] == odd) & (ref.metrics["key"] == "loss/g")]
    values = g["value"].tolist()
    # MLflow's SQL store keeps NaN as a flag and clamps ±inf to ±max float; every path reads what it stored
    assert math.isnan(values[0]) and values[1:] == [sys.float_info.max, -sys.float_info.max, 0.5]
    assert len(ref.metrics[ref.metrics["run_id"] == ids[0]]) > 8 * 20  # every step of every key


def test_rest_reads_never_trust_a_capped_answer(team, monkeypatch):
    """The bulk route truncates at its row cap without saying so. Without row estimates every key is
    one batch of all runs: with a cap of 7 each answer overflows and is split down to single runs,
    paged through get-history 7 rows at a time; with 30, some batches of two fit and some split."""
    from gantrack.analysis import readers
    from gantrack.analysis.frames import concat

    uri, ids, odd = team
    ref = load_runs("team", tracking_uri=uri, method="client", cache=False, progress=False).metrics
    run_keys = {rid: sorted(set(ref.loc[ref["run_id"] == rid, "key"].astype(str))) for rid in (*ids, odd)}
    for cap in (7, 30, 25000):
        monkeypatch.setattr(readers, "REST_PAGE", cap)
        _frames_equal(concat(readers._read_rest(uri, run_keys)), ref)


def test_report_and_training_work_against_the_postgres_server(team, tmp_path):
    uri, ids, _ = team
    rep = build_report("team", tracking_uri=uri, out_dir=tmp_path / "rep", progress=False, n_boot=100)
    assert rep.html.is_file() and rep.markdown.is_file()
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("team").experiment_id])
    assert {r.info.run_id for r in runs if r.info.status == "FINISHED"} >= set(ids)


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "gantrack.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def _one_line_exit_2(p: subprocess.CompletedProcess, *secrets: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gantrack: error:"), p.stderr[-2000:]
    for secret in secrets:
        assert secret not in p.stderr + p.stdout
    return lines[0]


def test_bad_database_credentials_and_rights_are_one_line_errors(team, postgres):
    port = postgres.port
    cases = {  # the URI, and what the one line must say
        "wrong password": (f"postgresql://reader:wrong-pw-9@127.0.0.1:{port}/mlflow", "password authentication failed"),
        "no such database": (postgres.uri("reader", db="nope"), 'database "nope" does not exist'),
        "no read rights": (f"postgresql://nobody:nobody-pw@127.0.0.1:{port}/mlflow", "permission denied"),
        "unreachable": (f"postgresql://reader:{Postgres.READER_PW}@127.0.0.1:1/mlflow", "Connection refused"),
    }
    for case, (uri, reason) in cases.items():
        with pytest.raises(GantrackError) as e:
            load_runs("team", tracking_uri=uri, cache=False, progress=False)
        message = str(e.value)
        assert "\n" not in message and reason in message and "127.0.0.1" in message, (case, message)
        for secret in ("wrong-pw-9", Postgres.READER_PW, "nobody-pw"):
            assert secret not in message, (case, message)


def test_training_against_a_missing_database_is_refused_and_leaves_no_run(postgres, tmp_path):
    uri = postgres.uri("mlflow", db="nope")
    p = _cli("train", "--tracking-uri", uri, "--steps", "2", "--width", "0.0625", "--quiet")
    _one_line_exit_2(p, Postgres.MLFLOW_PW)


def test_basic_auth_server_reads_with_mlflows_credentials_and_refuses_without(postgres, tmp_path, monkeypatch):
    ini = tmp_path / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "admin_username = admin\nadmin_password = admin-pw-7f3a\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server = MlflowServer(
        tmp_path,
        app_name="basic-auth",
        env={"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"},
    )
    server.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pw-7f3a")
        rid = train(Config(experiment="auth", **KW), tracking_uri=server.url, quiet=True)
        rs = load_runs("auth", tracking_uri=server.url, method="rest", cache=False, progress=False)
        assert set(rs.metrics["run_id"].astype(str)) == {rid} and len(rs.metrics) > 8 * 20
        tags = MlflowClient(server.url).get_run(rid).data
        assert "admin-pw-7f3a" not in repr(tags.params) + repr(tags.tags)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        with pytest.raises(GantrackError) as e:
            load_runs("auth", tracking_uri=server.url, method="rest", cache=False, progress=False)
        assert "401" in str(e.value) or "credentials" in str(e.value).lower() or "unauthor" in str(e.value).lower()
        assert "\n" not in str(e.value)
    finally:
        server.stop()


def test_ui_over_the_shared_database_keeps_the_password_off_the_process_list(team, postgres):
    import requests

    from gantrack.ui import running

    from conftest import free_port

    with running(postgres.uri("mlflow"), port=free_port()) as (proc, url):
        r = requests.get(
            url + "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "team"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["experiment"]["name"] == "team"
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(errors="replace")
        assert Postgres.MLFLOW_PW not in cmdline
    p = _cli("ui", "--tracking-uri", f"postgresql://mlflow:bad-pw-3@127.0.0.1:{postgres.port}/mlflow")
    _one_line_exit_2(p, "bad-pw-3")


def test_report_from_direct_reads_never_shows_the_password(team, postgres, tmp_path, capsys, caplog):
    rep = build_report("team", tracking_uri=postgres.uri("reader"), out_dir=tmp_path / "r", progress=False, n_boot=100)
    out = capsys.readouterr()
    assert rep.markdown.is_file() and rep.report_run_id is None
    assert Postgres.READER_PW not in out.out + out.err
    for f in (tmp_path / "r").glob("report.*"):
        assert Postgres.READER_PW not in f.read_text()
    # the read-only role cannot log the results back: said in one line, the report itself is there
    # (gantrack's warnings go to its logger; without logging configured Python prints them to stderr)
    assert Postgres.READER_PW not in caplog.text
    warning = [ln for ln in (out.err + caplog.text).splitlines() if "not logged back" in ln]
    assert len(warning) == 1 and "postgresql://reader:***@" in warning[0] and "permission denied" in warning[0]
