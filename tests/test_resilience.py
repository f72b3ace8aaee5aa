"""Runs that survive faults: SIGKILL + resume, concurrent writers on sqlite, tracking-server outages."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gantrack import Config, train
from gantrack import contract as C
from gantrack.analysis import load_runs
from gantrack.studies import run_configs

from conftest import cli_in_process, spawn

TINY = ["--width", "0.0625", "--set", "batch_size=16", "--set", "sample_every=0", "--set", "threads=1", "--quiet"]


def cli(*args, cwd, env=None, **kw):
    return spawn(
        [sys.executable, "-m", "gantrack.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def max_step(uri: str, experiment: str) -> int:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    runs = client.search_runs([exp.experiment_id])
    if not runs or "loss/g" not in runs[0].data.metrics:
        return 0
    return max(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/g"))


def curves(uri, run_id):
    m = load_runs(run_ids=[run_id], tracking_uri=uri, cache=False, progress=False).metrics
    return {k: g.sort_values("step")[["step", "value"]].to_numpy() for k, g in m.groupby("key", observed=True)}


def test_sigkill_at_a_random_step_then_resume_matches_the_uninterrupted_run(store, tmp_path):
    steps, every = 300, 5
    ckdir = str(tmp_path / "ck")
    ref = train(
        Config(
            width=0.0625,
            batch_size=16,
            sample_every=0,
            threads=1,
            steps=steps,
            checkpoint_every=every,
            checkpoint_dir=ckdir,
            experiment="ref",
        ),
        tracking_uri=store,
        quiet=True,
    )
    kill_at = random.Random().randint(40, 240)
    proc = cli(
        "train",
        *TINY,
        "--steps",
        str(steps),
        "--checkpoint-every",
        str(every),
        "--experiment",
        "killed",
        "--set",
        f"checkpoint_dir={ckdir}",
        "--tracking-uri",
        store,
        cwd=tmp_path,
    )
    deadline = time.time() + 120
    while max_step(store, "killed") < kill_at and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before the kill at step {kill_at}: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = MlflowClient(store)
    run = client.search_runs([client.get_experiment_by_name("killed").experiment_id])[0]
    assert run.info.status == "RUNNING"  # a hard kill leaves it so; resume picks it up
    died_at = max_step(store, "killed")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gantrack.cli",
            "train",
            "--resume",
            run.info.run_id,
            "--quiet",
            "--tracking-uri",
            store,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    # metrics are flushed right after each checkpoint: a kill between the two leaves the store one interval
    # behind the checkpoint, and the resume logs those steps from the checkpoint's history
    assert died_at <= int(resumed.data.tags["gantrack.resumed_from_step"]) <= died_at + every
    a, b = curves(store, ref), curves(store, run.info.run_id)
    assert set(a) == set(b)
    for key in a:
        if key in C.per_step_keys():
            assert b[key][:, 0].tolist() == list(range(1, steps + 1)), key  # no step missing or doubled
        assert np.array_equal(a[key], b[key]), key  # the same curve bit for bit, the diagnosis too
    # the per-sample probes survive the kill too: every step once, identical to the uninterrupted run
    rs = load_runs(run_ids=[ref, run.info.run_id], tracking_uri=store, cache=False, progress=False)
    ps_ref, ps_resumed = rs.per_sample(ref), rs.per_sample(run.info.run_id)
    assert ps_resumed["steps"].tolist() == list(range(1, steps + 1))
    for cell in ps_ref:
        assert np.array_equal(ps_ref[cell], ps_resumed[cell]), cell
    assert not list((tmp_path / "ck").glob("*.pt"))  # checkpoints removed once finished


def test_resume_bad_run_ids_are_one_line_errors(store, capsys, monkeypatch):
    train(
        Config(width=0.0625, batch_size=16, sample_every=0, steps=3, experiment="done"), tracking_uri=store, quiet=True
    )
    done = MlflowClient(store).search_runs([MlflowClient(store).get_experiment_by_name("done").experiment_id])[0]
    for run_id, match in (("doesnotexist", "unknown run id"), (done.info.run_id, "already FINISHED")):
        code, _, err = cli_in_process(["train", "--resume", run_id, "--tracking-uri", store], capsys, monkeypatch)
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err


def test_four_concurrent_runs_into_one_sqlite_store_lose_nothing(store):
    cfgs = [
        Config(width=0.0625, batch_size=16, sample_every=20, steps=120, flush_every=3, seed=s, experiment="concurrent")
        for s in range(4)
    ]
    ids = run_configs(cfgs, store, workers=4, progress=False)
    assert len(ids) == 4
    rs = load_runs("concurrent", tracking_uri=store, cache=False, progress=False)
    assert sorted(rs.runs["status"]) == ["FINISHED"] * 4
    m = rs.metrics
    n_keys = m["key"].nunique()
    for rid, g in m.groupby("run_id", observed=True):
        assert g["key"].nunique() == n_keys
        for key, s in g.groupby("key", observed=True):
            if key in C.per_step_keys():
                assert s["step"].tolist() == list(range(1, 121)), (rid, key)
    # a second call reuses all four finished runs instead of training again
    assert run_configs(cfgs, store, workers=4, progress=False) == ids


@pytest.fixture
def server(tmp_path):
    from conftest import MlflowServer

    s = MlflowServer(tmp_path / "srv")
    s.folder.mkdir()
    s.start()
    yield s
    s.stop()


def _run_through_outage(server, tmp_path, steps, down_for, env=None):
    proc = cli(
        "train",
        *TINY,
        "--steps",
        str(steps),
        "--experiment",
        "outage",
        "--set",
        "flush_every=10",
        "--tracking-uri",
        server.url,
        cwd=tmp_path,
        env=env,
    )
    deadline = time.time() + 120
    while max_step(server.url, "outage") < 30 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()
    server.stop()
    if down_for is not None:
        time.sleep(down_for)
        server.start()
    return proc


def _check_complete(url, steps):
    rs = load_runs("outage", tracking_uri=url, cache=False, progress=False)
    assert rs.runs["status"].tolist() == ["FINISHED"]
    for key, g in rs.metrics.groupby("key", observed=True):
        if key in C.per_step_keys():  # snapshots and decisions are logged at their own steps
            assert g["step"].tolist() == list(range(1, steps + 1)), key


def test_server_down_for_a_few_seconds_loses_no_metric(server, tmp_path):
    steps = 700
    proc = _run_through_outage(server, tmp_path, steps, down_for=4)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "training continues" in err
    _check_complete(server.url, steps)


def test_server_gone_for_good_spools_and_sync_completes(server, tmp_path):
    """The server never comes back: training ends, the rest of the run is spooled with the store's URI,
    the command exits 1 with one line naming the cause, and a later sync (no --tracking-uri: the
    spool records it) completes the run with every metric and the status it reached."""
    steps = 300
    spool = tmp_path / "spool"
    proc = _run_through_outage(
        server, tmp_path, steps, down_for=None, env={"GANTRACK_FINAL_FLUSH_WAIT": "2", "GANTRACK_SPOOL_DIR": str(spool)}
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    folders = [p for p in spool.iterdir() if p.is_dir()]
    assert len(folders) == 1 and f"gantrack sync {folders[0]}" in err.strip().splitlines()[-1]
    assert "server unreachable" in err.strip().splitlines()[-1]
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["tracking_uri"] == server.url and manifest["status"] == "FINISHED"
    server.start()  # the same store comes back later
    r = subprocess.run(
        [sys.executable, "-m", "gantrack.cli", "sync", str(folders[0])],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    _check_complete(server.url, steps)
