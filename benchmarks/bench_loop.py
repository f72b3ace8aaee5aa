"""Benchmark: LoopProbes in a user's loop (examples/dcgan_own_loop.py) against the same loop without
them, side by side in one run.

Runs alternate (with, without, without, with, ...: ABBA, so a linear drift of the machine cancels);
each reports its loop's wall time (run creation and the final artifact write excluded; the metrics
writes during the loop included). Prints the per-step ratio pooled over all pairs with a 95 %
bootstrap interval over pairs.

    python benchmarks/bench_loop.py [--steps 300] [--pairs 4]
"""

import argparse
import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dcgan_own_loop.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pairs", type=int, default=4)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("dcgan_own_loop", EXAMPLE)
    loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loop)
    uri = f"sqlite:///{tempfile.mkdtemp(prefix='gantrack-bench-loop-')}/mlflow.db"
    common = ["--steps", str(args.steps), "--tracking-uri", uri, "--experiment", "bench-loop"]
    loop.main(["--steps", "5", "--tracking-uri", uri])  # warm up imports and the store
    times = {"probes": [], "plain": []}
    for i in range(args.pairs):
        order = ("probes", "plain") if i % 2 == 0 else ("plain", "probes")
        for name in order:
            _, seconds = loop.main(common + ([] if name == "probes" else ["--no-probes"]))
            times[name].append(seconds)
    a, b = np.array(times["probes"]), np.array(times["plain"])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (2000, len(a)))
    boot = a[idx].sum(axis=1) / b[idx].sum(axis=1)
    print(
        f"\n{args.steps} steps x {args.pairs} pairs: plain {1000 * b.sum() / (len(b) * args.steps):.1f} ms/step, "
        f"with probes {1000 * a.sum() / (len(a) * args.steps):.1f} ms/step"
    )
    print(
        f"overhead of LoopProbes (d-first-same-batch, per-sample on): {100 * (a.sum() / b.sum() - 1):+.1f} % "
        f"[{100 * (np.quantile(boot, 0.025) - 1):+.1f}, {100 * (np.quantile(boot, 0.975) - 1):+.1f}]"
    )


if __name__ == "__main__":
    main()
