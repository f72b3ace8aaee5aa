"""Sweeps across machines: Optuna's RDB storage on a real PostgreSQL, worker processes that join the same
sweep, one of them killed with SIGKILL mid-run — every grid point FINISHED exactly once, nothing lost."""

import os
import signal
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import Postgres, spawn

optuna = pytest.importorskip("optuna")

GRID = ["--grid", "seed=1,2,3"]
SETTINGS = [
    *("--set width=0.0625 --set batch_size=16 --set steps=120 --set checkpoint_every=20").split(),
    *("--set sample_every=0 --set threads=1 --set flush_every=25").split(),
]


def _worker(storage, uri, experiment, log):
    cmd = [sys.executable, "-m", "gantrack.cli", "sweep", "--preset", "stable", *GRID, *SETTINGS]
    cmd += ["--experiment", experiment, "--tracking-uri", uri, "--storage", storage, "--workers", "1"]
    cmd += ["--heartbeat", "1", "--grace", "6", "--quiet"]
    return spawn(cmd, stdout=log, stderr=log)


def test_three_workers_one_killed_every_point_finished_once(postgres, pg_server, tmp_path):
    postgres.sql("CREATE DATABASE optuna_a OWNER mlflow")
    storage = postgres.uri("mlflow", db="optuna_a")
    ckpt = tmp_path / "checkpoints"  # shared by the workers, as a shared disk would be across machines
    os.environ["GANTRACK_CHECKPOINT_DIR"] = str(ckpt)
    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(3)]
    procs = [_worker(storage, pg_server.url, "shared", logs[i]) for i in range(3)]
    deadline = time.time() + 240
    while time.time() < deadline and len(list(ckpt.glob("*.pt"))) < 3:  # all three points under way
        assert all(p.poll() is None for p in procs), [open(f.name, "rb").read()[-1500:] for f in logs]
        time.sleep(0.05)
    assert len(list(ckpt.glob("*.pt"))) == 3, "the three workers never trained at the same time"
    victim_runs = {p.stem for p in ckpt.glob("*.pt")}
    os.killpg(procs[0].pid, signal.SIGKILL)  # a machine lost mid-run: no clean-up of any kind
    procs[0].wait(10)
    for p in procs[1:]:
        assert p.wait(300) == 0, [open(f.name, "rb").read()[-2000:].decode(errors="replace") for f in logs]

    client = MlflowClient(pg_server.url)
    exp = client.get_experiment_by_name("shared").experiment_id
    runs = client.search_runs([exp])
    children = [r for r in runs if r.data.tags.get("gantrack.kind") != "sweep"]
    parents = [r for r in runs if r.data.tags.get("gantrack.kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["gantrack.seed"] for r in children) == ["1", "2", "3"]  # each point exactly once
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    resumed = [r for r in children if "gantrack.resumed_from_step" in r.data.tags]
    assert len(resumed) == 1 and resumed[0].info.run_id in victim_runs  # the dead worker's run, continued
    for r in children:  # nothing lost: every step of the run is in the store once
        history = client.get_metric_history(r.info.run_id, "loss/g")
        assert sorted(m.step for m in history) == list(range(1, 121))
    study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["point"] for t in done) == [0, 1, 2]
    assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)  # the killed worker's try


def test_bad_storage_urls_are_one_line_errors(postgres, pg_server):
    from gantrack import GantrackError
    from gantrack.config import preset
    from gantrack.sweep import sweep

    base = preset("stable").replace(experiment="bad", width=0.0625, batch_size=16, steps=4, sample_every=0)
    cases = {
        "no such database": postgres.uri("mlflow", db="no_such_db"),
        "wrong password": f"postgresql://mlflow:bad-pw-5@127.0.0.1:{postgres.port}/mlflow",
    }
    for case, storage in cases.items():
        with pytest.raises(GantrackError) as e:
            sweep(base, {"seed": [1, 2]}, tracking_uri=pg_server.url, storage=storage, progress=False)
        message = str(e.value)
        assert "\n" not in message and "bad-pw-5" not in message and Postgres.MLFLOW_PW not in message, (case, message)
    client = MlflowClient(pg_server.url)
    exp = client.get_experiment_by_name("bad")
    assert exp is None or not client.search_runs([exp.experiment_id])  # refused before any run, parent included


def test_database_restart_mid_sweep_loses_nothing(postgres, pg_server, tmp_path):
    """PostgreSQL (tracking server's store and Optuna's storage alike) stops mid-run and comes back."""
    postgres.sql("CREATE DATABASE optuna_b OWNER mlflow")
    storage = postgres.uri("mlflow", db="optuna_b")
    ckpt = tmp_path / "checkpoints"
    os.environ["GANTRACK_CHECKPOINT_DIR"] = str(ckpt)
    log = open(tmp_path / "worker.log", "wb")
    cmd = [sys.executable, "-m", "gantrack.cli", "sweep", "--preset", "stable", "--grid", "seed=4,5", *SETTINGS]
    cmd += ["--experiment", "restart", "--tracking-uri", pg_server.url, "--storage", storage, "--workers", "1"]
    cmd += ["--heartbeat", "1", "--grace", "30", "--quiet"]
    proc = spawn(cmd, stdout=log, stderr=log)
    deadline = time.time() + 240
    while time.time() < deadline and not list(ckpt.glob("*.pt")):
        assert proc.poll() is None, open(log.name, "rb").read()[-2000:]
        time.sleep(0.05)
    postgres.stop()
    try:
        # meanwhile the server is up and its database is not: a new run is refused in one line, at once
        from gantrack import Config, GantrackError, train

        t0 = time.time()
        with pytest.raises(GantrackError, match="cannot reach its database") as e:
            train(Config(experiment="restart", steps=2, width=0.0625), tracking_uri=pg_server.url, quiet=True)
        assert "\n" not in str(e.value) and time.time() - t0 < 60
        time.sleep(3)
    finally:
        postgres.start()
    assert proc.wait(300) == 0, open(log.name, "rb").read()[-3000:].decode(errors="replace")
    client = MlflowClient(pg_server.url)
    runs = client.search_runs([client.get_experiment_by_name("restart").experiment_id])
    children = [r for r in runs if r.data.tags.get("gantrack.kind") != "sweep"]
    assert sorted(r.data.tags["gantrack.seed"] for r in children) == ["4", "5"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in children:
        history = client.get_metric_history(r.info.run_id, "loss/g")
        assert sorted(m.step for m in history) == list(range(1, 121))
