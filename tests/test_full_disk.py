"""A store that fails mid-run: a full disk (a real 3 MB tmpfs where the machine allows it, and a
fault-injected sqlite store everywhere). The cause in one line, MLflow's tracebacks in a log file, a
non-zero exit, everything the run produced in a spool folder that records its store, and a sync that
completes the run with every metric and every artifact and the status it really reached."""

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gantrack import Config, GantrackError, train
from gantrack import contract as C
from gantrack.errors import RunSpooled, store_failure
from gantrack.spool import sync

TINY = dict(width=0.0625, batch_size=32, sample_every=100, threads=1, experiment="full")


def _complete(uri: str, run_id: str, steps: int) -> None:
    c = MlflowClient(uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[C.TAG_STATUS] == "finished"
    assert C.TAG_FAILURE not in run.data.tags and C.TAG_SYNCED_FROM in run.data.tags
    for key in (C.G_LOSS, C.D_FAKE, C.probe_key("gbatch_after", "g")):
        assert sorted(m.step for m in c.get_metric_history(run_id, key)) == list(range(1, steps + 1)), key
    have = {a.path for folder in ("weights", "probes", "plots", "samples") for a in c.list_artifacts(run_id, folder)}
    assert {
        "weights/generator.pt",
        "weights/discriminator.pt",
        C.PER_SAMPLE_ARTIFACT,
        "plots/plot_line_plot_loss.png",
    } <= have
    assert any(p.startswith("samples/") for p in have)


def _fill_after(db: Path, rows: int) -> None:
    """A trigger that refuses metric inserts past ``rows`` with SQLite's full-disk message."""
    con = sqlite3.connect(db)
    con.execute(
        f"CREATE TRIGGER gantrack_test_full BEFORE INSERT ON metrics WHEN (SELECT count(*) FROM metrics) > {rows} "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    con.commit()
    con.close()


def _space_back(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER gantrack_test_full")
    con.commit()
    con.close()


def test_mlflow_error_reports_go_to_the_log_file_not_the_terminal(tmp_path, monkeypatch, capsys, caplog):
    import logging

    from gantrack.tracking import mlflow_errors_to_file

    monkeypatch.setenv("GANTRACK_LOG_DIR", str(tmp_path / "logs"))
    mlflow_logger = logging.getLogger("mlflow.store.db.utils")
    handler = logging.StreamHandler()  # MLflow's own terminal handler stands in
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="gantrack"), mlflow_errors_to_file() as target:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError:
                mlflow_logger.error("SQLAlchemy database error.", exc_info=True)
                mlflow_logger.error("SQLAlchemy database error.", exc_info=True)
        mlflow_logger.error("after the run")  # the handlers are restored: this one reaches the terminal
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    text = target.path.read_text()
    assert text.count("Traceback") == 2 and "database or disk is full" in text
    err = capsys.readouterr().err
    assert "Traceback" not in err and "after the run" in err
    assert sum(str(target.path) in r.getMessage() for r in caplog.records) == 1  # named once


def test_causes_are_named_in_a_users_words():
    assert store_failure(sqlite3.OperationalError("database or disk is full")) == "disk full"
    assert store_failure(OSError(28, "No space left on device")) == "disk full"
    assert store_failure(sqlite3.OperationalError("database is locked")) == "database locked"
    assert store_failure(sqlite3.OperationalError("attempt to write a readonly database")) == "read-only store"
    assert store_failure(PermissionError(13, "Permission denied")) == "permission denied"
    assert store_failure(ConnectionError("Max retries exceeded with url")) == "server unreachable"


def test_a_store_that_fills_up_mid_run_spools_everything_and_sync_completes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GANTRACK_FINAL_FLUSH_WAIT", "1")
    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    train(Config(steps=2, **TINY), tracking_uri=uri, quiet=True)  # the store exists
    _fill_after(db, 2000)  # ~80 steps of metrics fit, then the "disk" is full
    steps = 150
    with pytest.raises(RunSpooled) as caught:
        train(Config(steps=steps, seed=2, **TINY), tracking_uri=uri, quiet=True)
    err = caught.value
    assert err.cause == "disk full" and "gantrack sync" in str(err)
    folder = Path(err.folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tracking_uri"] == uri and manifest["status"] == "FINISHED" and manifest["cause"] == "disk full"
    spooled = {a["path"] for a in manifest["artifacts"]}
    assert {"artifacts/weights/generator.pt", "artifacts/probes/per_sample.npz"} <= spooled
    assert all((folder / p).is_file() for p in spooled)
    run = MlflowClient(uri).get_run(err.run_id)
    assert run.info.status == "FAILED" and "disk full" in run.data.tags[C.TAG_FAILURE]
    with pytest.raises(GantrackError):  # still full: the sync says so and keeps the folder
        sync(folder)
    assert folder.is_dir()
    _space_back(db)
    n, artifacts, status = sync(folder)  # the recorded store: no --tracking-uri needed
    assert status == "FINISHED" and n > 0 and artifacts >= 4
    assert not folder.exists() and folder.with_name(folder.name + ".synced").is_dir()
    _complete(uri, err.run_id, steps)


def _can_mount_tmpfs() -> str:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux to mount a tmpfs"
    probe = Path(f"/tmp/gantrack-tmpfs-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
        if r.returncode != 0:
            return f"cannot mount a tmpfs here: {r.stderr.decode().strip()[:100]}"
        subprocess.run(["umount", str(probe)], check=True)
        return ""
    finally:
        probe.rmdir()


@pytest.fixture
def tiny_disk():
    why = _can_mount_tmpfs()
    if why:
        pytest.skip(why)
    mnt = Path(f"/tmp/gantrack-full-{uuid.uuid4().hex[:8]}")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def test_a_real_full_disk_under_the_store_is_one_clear_line_exit_1_and_sync_completes(tiny_disk, tmp_path):
    """The accident as a user meets it: `gantrack train` with its store on a 3 MB filesystem."""
    env = {
        **os.environ,
        "GANTRACK_SPOOL_DIR": str(tmp_path / "spool"),
        "GANTRACK_LOG_DIR": str(tmp_path / "logs"),
        "GANTRACK_FINAL_FLUSH_WAIT": "2",
        "OMP_NUM_THREADS": "1",
    }
    uri = f"sqlite:///{tiny_disk / 'm.db'}"
    steps = 400
    sets = [f"--set={k}={v}" for k, v in {**TINY, "steps": steps}.items() if k != "experiment"]
    r = subprocess.run(
        [sys.executable, "-m", "gantrack.cli", "train", *sets, "--quiet", "--tracking-uri", uri],
        cwd=tiny_disk,  # artifacts in ./mlruns on the same small disk
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("20")]  # MLflow's own INFO lines aside
    assert "Traceback" not in r.stderr and len(lines) <= 4, r.stderr
    assert "disk full" in lines[-1] and "gantrack sync" in lines[-1] and "unreachable" not in r.stderr
    # metrics take gantrack's bulk path on a sqlite store; whatever MLflow itself reported went to a log
    # file that the terminal names once (test_mlflow_error_reports_go_to_the_log_file checks the diversion)
    for log in (tmp_path / "logs").glob("*.log"):
        assert r.stderr.count(str(log)) == 1 and "disk is full" in log.read_text()
    folder = Path(lines[-1].rsplit("gantrack sync ", 1)[1].strip())
    run_id = folder.name
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)  # space is back
    s = subprocess.run(
        [sys.executable, "-m", "gantrack.cli", "sync", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert s.returncode == 0, s.stderr
    _complete(uri, run_id, steps)
