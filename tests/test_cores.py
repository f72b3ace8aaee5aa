"""Sharing the machine: threads from the cores free for a run, the OpenMP wait policy in gantrack's own
processes only, and one study per store and experiment at a time (gantrack.cores, gantrack.studies)."""

import json
import os
import subprocess
import sys

import torch
from mlflow.tracking import MlflowClient

import gantrack
from gantrack import contract as C
from gantrack import cores
from gantrack.config import preset
from gantrack.studies import one_study_at_a_time

from conftest import spawn


def _claim_for(pid: int, threads: int) -> None:
    folder = cores.claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{pid}.json").write_text(json.dumps({"threads": threads}))


def test_a_claim_takes_the_free_cores_and_is_released(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite caps its processes at one thread
    with cores.claim() as n:
        assert n == cores.machine_cores()
        assert (cores.claims_dir() / f"{os.getpid()}.json").is_file()
    assert not (cores.claims_dir() / f"{os.getpid()}.json").exists()
    with cores.claim(3) as n:  # an explicit choice is kept, and still claimed for the others to see
        assert n == 3
        assert json.loads((cores.claims_dir() / f"{os.getpid()}.json").read_text()) == {"threads": 3}


def test_omp_num_threads_caps_the_free_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with cores.claim() as n:
        assert n == 1
    with cores.claim(2) as n:  # an explicit choice is the user's
        assert n == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert cores.env_threads() is None


def test_live_claims_of_others_count_and_dead_ones_are_dropped(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    other = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    _claim_for(other.pid, cores.machine_cores() - 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _claim_for(int(dead.stdout), 64)  # a training that is gone: its claim is ignored and removed
    assert cores.claimed_by_others() == cores.machine_cores() - 1
    assert not (cores.claims_dir() / f"{int(dead.stdout)}.json").exists()
    with cores.claim() as n:
        assert n == 1
    _claim_for(other.pid, 10 * cores.machine_cores())  # more claimed than there is: still one thread
    assert cores.free_cores() == 1


def test_a_training_takes_the_threads_left_by_another(store, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch.get_num_threads() == 1  # the suite's own cap (conftest), set before torch was imported
    other = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
    _claim_for(other.pid, cores.machine_cores())
    cfg = preset("stable").replace(width=0.0625, d_width=0.25, steps=3, sample_every=0, diversity_every=-1)
    run_id = gantrack.train(cfg, tracking_uri=store, quiet=True)
    assert MlflowClient(store).get_run(run_id).data.tags[C.TAG_THREADS] == "1"
    run_id = gantrack.train(cfg.replace(seed=2, threads=2), tracking_uri=store, quiet=True)
    assert MlflowClient(store).get_run(run_id).data.tags[C.TAG_THREADS] == "2"  # asked for: kept


def test_the_wait_policy_is_set_in_gantracks_processes_only():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"
    user = subprocess.run([sys.executable, "-c", "import gantrack; " + show], env=env, capture_output=True, text=True)
    assert user.stdout.strip() == "None"  # a user's own process: left as found
    cli = "from gantrack.cli import main; main(['presets']); " + show
    out = subprocess.run([sys.executable, "-c", cli], env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE"
    worker = "from gantrack.sweep import _worker_init; _worker_init(); " + show
    out = subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run(
        [sys.executable, "-c", worker], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True
    )
    assert out.stdout.strip() == "ACTIVE"  # a policy the user set wins


def test_a_second_study_on_the_same_store_and_experiment_is_refused_in_one_line(store, tmp_path):
    cmd = [sys.executable, "-m", "gantrack.cli", "study", "chapter10", "--seeds", "1", "--set", "steps=5"]
    cmd += ["--experiment", "busy", "--tracking-uri", store, "--out", str(tmp_path / "rep")]
    with one_study_at_a_time("busy", store):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "another study (pid " in lines[0] and "'busy'" in lines[0], out.stderr
    assert f"pid {os.getpid()}" in lines[0]
    assert out.stdout.splitlines()[0].startswith("chapter10: ")  # the plan comes first (tests/test_main_job.py)
    assert not MlflowClient(store).search_experiments(filter_string="name = 'busy'")  # nothing was trained
    with one_study_at_a_time("other", store):  # another experiment on the same store is free
        pass
