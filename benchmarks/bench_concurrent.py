"""Benchmark: N trainings started together on this machine against the same N one after another.

A run must slow down in proportion to the cores it gets, never by multiples (issue 25: three
trainings at 2 threads each on 2 cores took 195.8 s together, 48.9 s at one thread each). Two ways
of starting the same N trainings (``stable``, by default G 16 / D 32 channels, ``--steps`` steps, one
sqlite store per way):

- ``torch defaults``: the Python API in a plain process, as a user's script calls it, with as many
  threads as the machine has cores and the environment's OpenMP wait policy (libgomp's default: spin,
  then sleep) — what every training did before ``gantrack.cores``;
- ``gantrack train``: the command line's defaults: threads from the cores free for the run (claims in
  ``gantrack.cores``) and ``OMP_WAIT_POLICY=PASSIVE``.

Each way runs the N trainings one after another, then all N at once; printed: wall seconds of
each, and together / one-after-another (1.0: the machine is shared in proportion; N: no gain from
sharing; above 1: the runs fight). Run it on a quiet machine.

    python benchmarks/bench_concurrent.py [--n 3] [--steps 60] [--width 0.125 --d-width 0.5]
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

API = (
    "import sys, gantrack; from gantrack.config import preset;"
    "gantrack.train(preset('stable').replace(width=float(sys.argv[4]), d_width=float(sys.argv[5]), sample_every=0,"
    "steps=int(sys.argv[1]), threads=int(sys.argv[2])), tracking_uri=sys.argv[3], quiet=True)"
)


def commands(way: str, steps: int, uri: str, width: float, d_width: float) -> list[str]:
    if way == "torch defaults":
        return [sys.executable, "-c", API, str(steps), str(os.cpu_count() or 1), uri, str(width), str(d_width)]
    cli = [sys.executable, "-m", "gantrack.cli", "train", "--preset", "stable", "--width", str(width)]
    sets = ["--set", f"d_width={d_width}", "--set", "sample_every=0"]
    return [*cli, *sets, "--steps", str(steps), "--tracking-uri", uri, "--quiet"]


def wall(cmds: list[list[str]], env: dict, together: bool) -> float:
    t = time.perf_counter()
    if together:
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in cmds]
        codes = [p.wait() for p in procs]
    else:
        codes = [subprocess.run(c, env=env, stdout=subprocess.DEVNULL).returncode for c in cmds]
    if any(codes):
        raise SystemExit(f"a training failed (exit codes {codes})")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3, help="trainings")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--width", type=float, default=0.125, help="G's channel multiplier (0.125: 16 channels)")
    ap.add_argument("--d-width", type=float, default=0.5, help="D's channel multiplier (0.5: 32 channels)")
    args = ap.parse_args()
    print(
        f"{args.n} trainings of {args.steps} steps (stable, G {int(128 * args.width)} / D {int(64 * args.d_width)} "
        f"channels) on {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; OMP_WAIT_POLICY in the environment: "
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    print(f"{'way':<16} {'one after another':>18} {'together':>10} {'together / sequential':>22}")
    with tempfile.TemporaryDirectory(prefix="gantrack-bench-concurrent-") as tmp:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "GANTRACK_CACHE_DIR": str(Path(tmp) / "cache")}
        for way in ("torch defaults", "gantrack train"):
            uri = f"sqlite:///{Path(tmp) / (way.replace(' ', '-') + '.db')}"
            first = commands(way, 1, uri, args.width, args.d_width)
            subprocess.run(first, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # the DB
            cmds = [commands(way, args.steps, uri, args.width, args.d_width) for _ in range(args.n)]
            seq = wall(cmds, env, together=False)
            tog = wall(cmds, env, together=True)
            print(f"{way:<16} {seq:17.1f}s {tog:9.1f}s {tog / seq:21.2f}x", flush=True)


if __name__ == "__main__":
    main()
