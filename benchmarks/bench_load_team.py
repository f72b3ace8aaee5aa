"""Benchmark: reading a team's runs — MlflowClient loop vs gantrack's REST path vs direct PostgreSQL reads.

A throwaway PostgreSQL 15 (tests/pgserver.py: a temp folder, 127.0.0.1) holds an MLflow store with
100 runs x 15 metrics x 2,000 steps behind a real ``mlflow server`` (2 workers, 127.0.0.1). The runs
are created through the server; their metric rows are bulk-copied into MLflow's ``metrics`` and
``latest_metrics`` tables (3 M rows through ``log_batch`` would take most of an hour; what is
measured here is reading). Then, in one process, side by side:

- the reference: ``MlflowClient.get_metric_history`` for every (run, key), through the server;
- ``load_runs(method="rest")``: the REST path (MLflow's request helpers, a thread pool);
- ``load_runs(method="sql")`` on the read-only role's URI: direct ADBC reads into Arrow.

The three frames must be identical. Goals (issue 14): direct >= 20x, REST >= 5x the client loop.

    python benchmarks/bench_load_team.py [--runs 100 --metrics 15 --steps 2000]
"""

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # 100 "View run" lines
# the server under test without MLflow's GenAI job runner (idle consumers that only cost CPU here)
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pgserver import Postgres, free_port  # noqa: E402


def start_server(backend: str, folder: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--artifacts-destination", str(folder / "artifacts"), "--workers", "2"]
    log = open(folder / "server.log", "wb")
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError((folder / "server.log").read_text()[-2000:])


def seed(pg: Postgres, url: str, runs: int, metrics: int, steps: int) -> None:
    import psycopg
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.create_experiment("bench")
    rng = np.random.default_rng(0)
    ids = [client.create_run(exp, run_name=f"run{r}").info.run_id for r in range(runs)]
    t0 = time.perf_counter()
    with psycopg.connect(pg.uri("mlflow")) as con:
        for r, run_id in enumerate(ids):
            values = rng.standard_normal((metrics, steps)).cumsum(axis=1)
            nan = np.zeros_like(values, dtype=bool)
            nan[0, 5] = True  # the store keeps NaN as is_nan: every path must agree on it
            buf = io.StringIO()
            for k in range(metrics):
                for s in range(steps):
                    v = 0.0 if nan[k, s] else float(values[k, s])
                    buf.write(f"m{k:02d}\t{v!r}\t{1_700_000_000_000 + s}\t{run_id}\t{s}\t{str(nan[k, s]).lower()}\n")
            with con.cursor().copy("COPY metrics (key, value, timestamp, run_uuid, step, is_nan) FROM STDIN") as cp:
                cp.write(buf.getvalue())
            con.execute(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "SELECT DISTINCT ON (key) key, value, timestamp, step, is_nan, run_uuid FROM metrics "
                "WHERE run_uuid = %s ORDER BY key, step DESC",
                (run_id,),
            )
            print(f"\rcopied run {r + 1}/{runs} ({time.perf_counter() - t0:.0f} s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    for run_id in ids:
        client.set_terminated(run_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=15)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    from gantrack.analysis import load_runs

    pg = Postgres()
    proc = None
    try:
        pg.init()
        folder = Path(tempfile.mkdtemp(prefix="gantrack-bench-team-"))
        proc, url = start_server(pg.uri("mlflow"), folder)
        pg.grant_reader()
        seed(pg, url, args.runs, args.metrics, args.steps)
        timings, frames = {}, {}
        for label, uri, method in (
            ("MlflowClient.get_metric_history loop (server)", url, "client"),
            ("load_runs, REST (server)", url, "rest"),
            ("load_runs, direct PostgreSQL (read-only role)", pg.uri("reader"), "sql"),
        ):
            t0 = time.perf_counter()
            frames[label] = load_runs("bench", tracking_uri=uri, method=method, cache=False, progress=False).metrics
            timings[label] = time.perf_counter() - t0
        ref_label = next(iter(frames))
        for label, t in timings.items():
            print(f"{label:48s} {t:8.2f} s", flush=True)
        ref = frames[ref_label]
        for frame in frames.values():  # column by column as arrays: pandas' own check boxes every categorical
            for col in ("run_id", "key"):
                a, b = ref[col].array, frame[col].array
                assert np.array_equal(np.asarray(a.categories)[a.codes], np.asarray(b.categories)[b.codes]), col
            for col in ("step", "timestamp", "value"):
                np.testing.assert_array_equal(ref[col].to_numpy(), frame[col].to_numpy())
        rows = len(ref)
        print(f"rows: {rows:,} ({args.runs} runs x {args.metrics} metrics x {args.steps} steps); frames identical")
        goals = {"load_runs, REST (server)": 5, "load_runs, direct PostgreSQL (read-only role)": 20}
        for label, t in timings.items():
            ratio = timings[ref_label] / t
            goal = goals.get(label)
            verdict = f"  (goal >= {goal}x: {'met' if ratio >= goal else 'not met'})" if goal else ""
            print(f"{label:48s} {t:8.2f} s   ratio {ratio:6.1f}x{verdict}")
    finally:
        if proc is not None:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pg.cleanup()


if __name__ == "__main__":
    main()
