"""The harness benchmark's accounting: every step is timed once, on the right side, and the
overhead estimator gives known answers. (Its speed figures come from running the script, not here.)"""

import importlib.util
import math
from pathlib import Path

import pytest

from gantrack import Config, harness, tracking

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_harness.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_harness", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_round_overheads_known_answers(bench):
    # harness steps 10 % slower in every round, whatever the round's length: +10 %, a tight interval
    rounds = [
        dict(h_steps=n, b_steps=n, h_wall=0.11 * n, b_wall=0.10 * n, h_cpu=0.2 * n, b_cpu=0.2 * n)
        for n in (16, 16, 16, 5)
    ]
    est, lo, hi = bench.round_overheads(rounds)
    assert est == pytest.approx(10.0) and lo == pytest.approx(10.0) and hi == pytest.approx(10.0)
    assert bench.round_overheads(rounds, "cpu")[0] == pytest.approx(0.0)
    # a lumpy cost (one slow round of four) counts in full in the pooled ratio: 1.3 s extra over 6.4 s
    lumpy = [
        dict(h_steps=16, b_steps=16, h_wall=1.6 + (1.3 if i == 2 else 0.0), b_wall=1.6, h_cpu=1, b_cpu=1)
        for i in range(4)
    ]
    est, lo, hi = bench.round_overheads(lumpy)
    assert est == pytest.approx(100 * 1.3 / 6.4)
    assert lo < est < hi  # resampling rounds with and without the lump spreads the interval


def test_interleaved_times_every_step_once_and_restores_the_harness(bench, tmp_path):
    cfg = Config(width=0.0625, steps=7, experiment="bench", sample_every=3, flush_every=2, probes=False)
    originals = (harness.gan_step, tracking.MetricBuffer.flush_in_background, tracking.MetricBuffer.close)
    rounds = bench.interleaved(cfg, str(tmp_path), block=2)
    assert [r["h_steps"] for r in rounds] == [4, 3]
    assert [r["b_steps"] for r in rounds] == [4, 3]  # as many bare steps as harness steps, per round
    assert rounds[0]["one_off"] > 0  # train() outside its loop: run creation, final plots, weights
    for r in rounds:
        assert all(r[k] > 0 and math.isfinite(r[k]) for k in ("h_wall", "b_wall", "h_cpu", "b_cpu"))
    assert (harness.gan_step, tracking.MetricBuffer.flush_in_background, tracking.MetricBuffer.close) == originals
    # the run itself is complete: 7 logged steps per key
    from mlflow.tracking import MlflowClient

    mlclient = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = mlclient.search_runs([mlclient.get_experiment_by_name("bench").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert len(mlclient.get_metric_history(run.info.run_id, "loss/g")) == 7
