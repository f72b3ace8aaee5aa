"""Benchmark: gantrack.analysis.load_runs vs a loop over MlflowClient.get_metric_history.

Writes 100 runs x 15 metrics x 2,000 steps to a fresh sqlite store through MLflow's own
``log_batch`` (reused with --reuse DIR), then loads the experiment both ways in one process,
checks the frames are identical and prints the speed-up, the warm-cache time and peak memory.

    python benchmarks/bench_load.py [--runs 100 --metrics 15 --steps 2000] [--reuse /tmp/gantrack-bench-load]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def build_store(folder: Path, runs: int, metrics: int, steps: int) -> str:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    if client.get_experiment_by_name("bench") is not None:
        return uri
    exp = client.create_experiment("bench", artifact_location=str(folder / "mlruns"))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for r in range(runs):
        run = client.create_run(exp, run_name=f"run{r}")
        values = rng.standard_normal((metrics, steps)).cumsum(axis=1)
        values[0, 5] = np.nan  # the store keeps NaN as is_nan: both paths must agree on it
        batch = [
            Metric(f"m{k:02d}", float(values[k, s]), 1_700_000_000_000 + s, s)
            for s in range(steps)
            for k in range(metrics)
        ]
        for i in range(0, len(batch), 1000):
            client.log_batch(run.info.run_id, metrics=batch[i : i + 1000])
        client.set_terminated(run.info.run_id)
        print(f"\rwrote run {r + 1}/{runs} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    return uri


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=15)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reuse", help="folder for the store, kept between invocations")
    args = ap.parse_args()
    from gantrack.analysis import load_runs

    folder = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="gantrack-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    uri = build_store(folder, args.runs, args.metrics, args.steps)
    cache = Path(tempfile.mkdtemp(prefix="gantrack-cache-"))

    t0 = time.perf_counter()
    ref = load_runs("bench", tracking_uri=uri, method="client", cache=False, progress=False)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = load_runs("bench", tracking_uri=uri, method="sql", cache_dir=cache, progress=False)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = load_runs("bench", tracking_uri=uri, method="sql", cache_dir=cache, progress=False)
    t_warm = time.perf_counter() - t0

    import pandas as pd

    pd.testing.assert_frame_equal(ref.metrics, fast.metrics)
    pd.testing.assert_frame_equal(ref.metrics, warm.metrics)
    rows = len(fast.metrics)
    print(f"rows: {rows:,} ({args.runs} runs x {args.metrics} metrics x {args.steps} steps); frames identical")
    print(f"MlflowClient.get_metric_history loop: {t_ref:8.2f} s")
    print(f"load_runs (sql, cold cache):          {t_fast:8.2f} s   ratio {t_ref / t_fast:6.1f}x")
    print(f"load_runs (sql, warm cache):          {t_warm:8.2f} s   ratio {t_ref / t_warm:6.1f}x")
    print(f"frame memory: {fast.metrics.memory_usage(deep=True).sum() / 2**20:.0f} MiB")
    # peak memory in fresh processes (tracemalloc would distort the timings above)
    for label, extra in (
        ("imports only", ""),
        ("cold load", f"load_runs('bench', tracking_uri='{uri}', cache_dir='{tempfile.mkdtemp()}', progress=False)"),
        ("warm load", f"load_runs('bench', tracking_uri='{uri}', cache_dir='{cache}', progress=False)"),
    ):
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report our peak
        code = (
            "from gantrack.analysis import load_runs; "
            + (extra + "; " if extra else "")
            + "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        print(f"peak RSS, {label + ':':14s} {int(out.stdout.split()[-1]) / 1024:6.0f} MiB")


if __name__ == "__main__":
    main()
