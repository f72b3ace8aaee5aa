"""Runs whose process is gone (SIGKILL, SIGTERM, a lost terminal) are recognised, closed or resumed by
the next gantrack command that sees them, and never break it."""

import os
import signal
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from gantrack import contract as C
from gantrack.analysis import build_report, load_runs
from gantrack.tracking import open_store, orphan_reason

from conftest import kill_group, spawn

USER_SCRIPT = r"""
import sys, time, torch
from gantrack import LoopProbes
D = torch.nn.Linear(2, 1)
probes = LoopProbes(D, order="d-first-same-batch", experiment="killed", tracking_uri=sys.argv[1])
with probes:
    print(probes.run_id, flush=True)
    for i in range(100000):
        x = torch.randn(8, 2)
        probes.d_step(x, D(x)); probes.g_step(x, D(x)); probes.end_step()
        time.sleep(0.002)
"""


def test_a_users_script_killed_by_sigterm_is_closed_by_the_next_report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = spawn([sys.executable, "-c", USER_SCRIPT, uri], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    time.sleep(12)  # past the 10 s flush: the metrics so far reach the store
    os.killpg(proc.pid, signal.SIGTERM)  # Python's default: the process ends at once (exit 143), no clean-up
    assert proc.wait(timeout=30) == -signal.SIGTERM
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags[C.TAG_PID] == str(proc.pid)
    assert "process" in orphan_reason(run) and "is gone" in orphan_reason(run)
    rs = load_runs("killed", tracking_uri=uri, progress=False)
    assert len(rs.metrics[rs.metrics["key"] == C.D_FAKE]) >= 100  # seconds of curves lost, not minutes
    rep = build_report("killed", tracking_uri=uri, out_dir=tmp_path / "r", progress=False, n_boot=20, workers=1)
    assert rep.html.is_file()
    run = client.get_run(run_id)
    if run.info.status != "KILLED":  # it had enough data to explain: the report does not need to close it
        assert rep.summary.set_index("run_id").loc[run_id, "reason"] == ""
    else:
        assert "orphaned" in run.data.tags[C.TAG_FAILURE] and run.data.tags[C.TAG_STATUS] == "killed"


def test_a_study_killed_mid_way_recovers_on_the_same_command(tmp_path):
    """SIGKILL to a running study's process group, then the same command: the report is written, every
    point has exactly one FINISHED run, and the killed runs were resumed or closed KILLED with the reason."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cmd = [sys.executable, "-m", "gantrack.cli", "study", "chapter10", "--quick", "--seeds", "1", "--set", "steps=60"]
    cmd += ["--set", "width=0.0625", "--set", "d_width=0.25"]
    cmd += ["--experiment", "k", "--tracking-uri", uri, "--out", str(tmp_path / "rep")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The store is created (tables migrated) before the study starts: a client opened on the new file while
    # the study migrates it races (CI once saw the study die of it, and the test wait for a run that never came).
    client = open_store(uri).client
    log = tmp_path / "first.log"
    with open(log, "w") as err:
        first = spawn(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline, exp = time.time() + 240, None
    while time.time() < deadline and first.poll() is None:  # kill once some run is training
        time.sleep(1)
        exp = client.get_experiment_by_name("k")
        if exp and any(r.data.metrics for r in client.search_runs([exp.experiment_id])):
            break
    assert first.poll() is None, f"the study ended before it was killed:\n{log.read_text()[-2000:]}"
    kill_group(first)
    assert exp is not None, f"no run trained within 240 s:\n{log.read_text()[-2000:]}"
    stranded = [r.info.run_id for r in client.search_runs([exp.experiment_id]) if r.info.status == "RUNNING"]
    assert stranded, "the kill left no run behind: nothing was tested"
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (tmp_path / "rep" / "report.html").is_file()
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(C.TAG_KIND) != "report"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    hashes = [r.data.tags[C.TAG_HASH] for r in finished]
    assert len(hashes) == 4 and len(set(hashes)) == 4  # each point once, none twice
    for rid in stranded:
        r = client.get_run(rid)
        resumed = r.info.status == "FINISHED" and C.TAG_RESUMED_FROM in r.data.tags
        closed = r.info.status == "KILLED" and "orphaned" in r.data.tags.get(C.TAG_FAILURE, "")
        assert resumed or closed, (r.info.status, r.data.tags.get(C.TAG_FAILURE))
