"""Benchmark: report generation for 30 runs of 450 steps (target: under 30 s on 2 cores).

The runs are real: tiny DCGANs (width 1/16, batch 32) trained once into a sqlite store with the
full probe grid (--reuse keeps the store between invocations). The timed part is
``build_report``: load, oscillation, explanation with bootstrap CIs, 32 figures, HTML + Markdown,
and logging everything back to MLflow. The load is timed cold (empty cache) and warm.

    python benchmarks/bench_report.py [--runs 30 --steps 450] [--reuse /tmp/gantrack-bench-report]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--reuse", help="store folder kept between invocations")
    args = ap.parse_args()
    from gantrack import Config
    from gantrack.analysis import build_report
    from gantrack.studies import run_configs

    folder = Path(args.reuse or tempfile.mkdtemp(prefix="gantrack-bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    scenarios = [("stable", {}), ("convergence-failure", {"schedule": "joint"}), ("minimax", {"loss": "minimax"})]
    configs = [
        Config(
            width=0.0625,
            batch_size=32,
            steps=args.steps,
            sample_every=0,
            experiment="bench-report",
            seed=i,
            scenario=scenarios[i % 3][0],
            **scenarios[i % 3][1],
        )
        for i in range(args.runs)
    ]
    t0 = time.perf_counter()
    run_configs(configs, uri)
    print(f"store ready ({time.perf_counter() - t0:.0f} s to train/reuse {args.runs} runs)")
    os.environ["GANTRACK_CACHE_DIR"] = tempfile.mkdtemp()  # empty: the first report reads the store cold
    for label in ("cold cache", "warm cache"):
        t0 = time.perf_counter()
        rep = build_report("bench-report", tracking_uri=uri, out_dir=folder / "report", progress=False)
        dt = time.perf_counter() - t0
        print(
            f"report for {len(rep.summary)} runs x {args.steps} steps ({label}): {dt:5.1f} s  "
            f"(target < 30 s: {'met' if dt < 30 else 'NOT met'})"
        )
    print(f"report: {rep.html}")


if __name__ == "__main__":
    main()
