"""Benchmark: importing TensorBoard scalars into a local sqlite MLflow store, side by side in one run.

A TensorBoard event file of N scalar events (default 1,000,000: 4 tags x 250,000 steps, written with
torch's SummaryWriter) goes into a fresh sqlite store two ways:

- gantrack: ``gantrack.importers.import_file("tensorboard", ...)`` — the plain record reader, then the
  run's metric buffer (``tracking.BulkWriter`` on a SQL store: MLflow's tables, two statements a batch);
- baseline: ``tbparse.SummaryReader`` to a DataFrame, then ``MlflowClient.log_batch`` in chunks of 1,000
  (MLflow's per-call limit), the way one would script it.

Prints each side's read and write seconds and the ratio. Goal: gantrack <= 30 s for 1,000,000 events.

    python benchmarks/bench_import.py [--events 1000000]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def write_events(folder: Path, events: int, tags: int = 4) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(folder), max_queue=10_000, flush_secs=3600)
    for step in range(1, events // tags + 1):
        for t in range(tags):
            w.add_scalar(f"loss/t{t}", 0.5 + 1e-6 * step, step)
    w.close()
    return folder


def gantrack_side(folder: Path, uri: str) -> tuple[float, float, int]:
    from gantrack import importers

    t0 = time.perf_counter()
    parsed = importers.parse_tensorboard(folder)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_id, _ = importers.import_file("tensorboard", folder, "bench", tracking_uri=uri, say=lambda *_: None)
    t_all = time.perf_counter() - t0  # reads again, then writes: the import as a user runs it
    return t_read, t_all, parsed.points


def baseline_side(folder: Path, uri: str) -> tuple[float, float, int]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient
    from tbparse import SummaryReader

    t0 = time.perf_counter()
    df = SummaryReader(str(folder)).scalars
    t_read = time.perf_counter() - t0
    client = MlflowClient(uri)
    exp = client.create_experiment("baseline")
    run_id = client.create_run(exp).info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(t, float(v), ts, int(s)) for t, v, s in zip(df["tag"], df["value"], df["step"])]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.set_terminated(run_id)
    return t_read, time.perf_counter() - t0, len(metrics)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="gantrack-bench-import-"))
    folder = write_events(tmp / "tb", args.events)
    g_read, g_all, n = gantrack_side(folder, f"sqlite:///{tmp / 'gantrack.db'}")
    b_read, b_all, m = baseline_side(folder, f"sqlite:///{tmp / 'baseline.db'}")
    print(f"{n:,} events (baseline read {m:,})")
    print(f"gantrack import: {g_all:6.1f} s (reading alone {g_read:.1f} s)   goal <= 30 s for 1,000,000")
    print(f"tbparse + MlflowClient.log_batch: {b_all:6.1f} s (reading alone {b_read:.1f} s)")
    print(f"ratio baseline / gantrack: {b_all / g_all:.1f}x (reading {b_read / g_read:.1f}x)")


if __name__ == "__main__":
    main()
