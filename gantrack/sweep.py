"""Sweeps: grids of configs trained by worker processes into one experiment, restartable.

Each run is identified by the hash of its resolved config (tag ``gantrack.config_hash``). Running
the same sweep again reuses FINISHED runs, resumes unfinished runs that left a checkpoint (a killed
sweep picks up where each run stopped) and retrains the rest (FAILED runs, runs with no checkpoint).
All runs of a sweep hang under a parent run (``mlflow.parentRunId``), tagged ``gantrack.kind = sweep``.

Concurrency on sqlite: the database is created once, before any worker starts (MLflow runs its
schema migrations unlocked on first open); every store call that can meet "database is locked"
goes through ``tracking.retry`` (exponential back-off) and metrics are written in batches.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from . import contract as C
from . import cores, tracking
from .config import RUN_SETTINGS, Config, apply_overrides, load_toml, validate
from .errors import GantrackError, first_line
from .gridpoint import carry_out, close_parent, parent_run, plan, sweep_key

CHECKPOINT_EVERY = 50  # sweeps checkpoint by default so a killed sweep resumes its runs


def expand_grid(base: Config, grid: dict[str, list[Any]]) -> list[Config]:
    """Every combination of the grid's values applied to ``base`` (``preset`` may be a grid axis)."""
    from .config import preset

    if not grid:
        return [validate(base)]
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise GantrackError(f"grid axis {key!r} needs a non-empty list of values")
    keys = list(grid)
    if len(list(itertools.product(*grid.values()))) > 10000:
        raise GantrackError("grid has more than 10,000 runs; split it")
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        cfg = base
        if "preset" in values:
            name = values.pop("preset")
            kept = {k: getattr(base, k) for k in RUN_SETTINGS}
            cfg = preset(str(name)).replace(**kept)
        out.append(validate(apply_overrides(cfg, values)))
    return out


def load_sweep_file(path: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A sweep TOML: config fields (``preset = ...`` allowed) and a ``[grid]`` table of lists.
    Returns (config values, grid); a scalar grid value is a one-point axis."""
    values = load_toml(path, tables=("grid",))
    grid = values.pop("grid", {})
    if not isinstance(grid, dict):
        raise GantrackError("grid must be a table: [grid] seed = [1, 2]")
    return values, {k: v if isinstance(v, list) else [v] for k, v in grid.items()}


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["seed=1,2,3", "loss=nsgan,hinge"]`` → ``{"seed": ["1","2","3"], "loss": ["nsgan","hinge"]}``."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise GantrackError(f"--grid expects key=v1,v2,..., got {item!r}")
        grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def _worker_terminated(signum, frame):
    import signal

    from .signals import Terminated

    # the pool's manager thread terminates the other workers again when one exits: let the first
    # signal's clean-up (run marked KILLED, metrics flushed) finish
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(signum)


def _worker_init() -> None:
    """In each worker: idle OpenMP threads sleep, SIGTERM ends the run KILLED through train's clean-up, not
    mid-write, and freed memory is reused (the worker is gantrack's own process)."""
    import signal

    from .allocator import keep_freed_memory

    cores.passive_wait_policy()  # before this worker first imports torch (gantrack.cores)
    signal.signal(signal.SIGTERM, _worker_terminated)
    keep_freed_memory()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's processes (the parent is going away: their runs end KILLED and keep
    their checkpoints, so the same command resumes them). Python 3.11 has no public call for this."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()


def run_configs(
    configs: list[Config],
    tracking_uri: str | None = None,
    workers: int = 2,
    progress: bool = True,
    parent_run_id: str | None = None,
) -> list[str]:
    """Train every config not already FINISHED in its experiment; run ids in the configs' order
    (failed runs are left out and reported)."""
    from tqdm import tqdm

    store = tracking.open_store(tracking_uri)
    uri, mlclient = store.uri, store.client
    ids: list[str | None] = []
    todo = []
    for cfg in configs:
        cfg = validate(cfg)
        kind, run_id = plan(mlclient, cfg)
        ids.append(run_id if kind == "reuse" else None)
        if kind != "reuse":
            todo.append((len(ids) - 1, kind, cfg, run_id))
    if progress and len(configs) > len(todo):
        print(
            f"reusing {len(configs) - len(todo)} finished run(s); "
            f"{sum(t[1] == 'resume' for t in todo)} to resume, {sum(t[1] == 'train' for t in todo)} to train",
            flush=True,
        )
    if not todo:
        return [i for i in ids if i is not None]
    # the cores free now (other gantrack trainings here claim theirs: gantrack.cores), shared by the workers
    threads = max(1, cores.free_cores() // max(1, min(workers, len(todo))))
    errors = []
    bar = tqdm(total=len(todo), disable=not progress, desc="runs", unit="run")
    # spawn, not fork: a process that has run torch holds an OpenMP thread pool that a forked child
    # inherits locked (its first parallel op hangs). Scripts calling this need the usual
    # `if __name__ == "__main__":` guard.
    pool = ProcessPoolExecutor(
        max(1, min(workers, len(todo))), mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    )
    try:
        futures = {
            pool.submit(carry_out, kind, cfg.replace(threads=cfg.threads or threads), uri, rid, parent_run_id): (i, cfg)
            for i, kind, cfg, rid in todo
        }
        for fut in as_completed(futures):
            i, cfg = futures[fut]
            try:
                ids[i] = fut.result()
            except Exception as e:  # one failed run does not stop the others; it ends FAILED in MLflow
                errors.append(f"{cfg.scenario}/{cfg.loss}/seed {cfg.seed}: {first_line(e)}")
            bar.update(1)
            bar.set_postfix(failed=len(errors), refresh=False)
    except BaseException:  # Ctrl-C, SIGTERM, an error here: no worker outlives the sweep
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    if errors:
        print(
            f"{len(errors)} run(s) failed (re-run the same command to retry them):\n  " + "\n  ".join(errors),
            flush=True,
        )
    return [i for i in ids if i is not None]


def sweep(
    base: Config,
    grid: dict[str, list[Any]],
    tracking_uri: str | None = None,
    workers: int = 2,
    name: str | None = None,
    progress: bool = True,
    storage: str | None = None,
    shared: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the grid under a parent run; returns {"parent": run id, "runs": [...], "failed": n}.

    ``storage``: an Optuna RDB URL (``postgresql://...``): the sweep is shared by every process on any
    machine that runs the same sweep with the same storage (``gantrack.shared_sweep``; ``shared``: its
    options). Without it, ``workers`` local processes train the grid (the embedded default).
    """
    if base.checkpoint_every == 0:
        base = base.replace(checkpoint_every=CHECKPOINT_EVERY)
    configs = expand_grid(base, grid)
    store = tracking.open_store(tracking_uri)
    uri, mlclient = store.uri, store.client
    exp_id = store.experiment_id(base.experiment)
    label = name or ("sweep-" + "-".join(sorted(grid)) if grid else "sweep")
    key = sweep_key(base, grid)
    if storage:
        from .shared_sweep import shared_sweep

        return shared_sweep(configs, grid, storage, uri, key, label, progress=progress, **(shared or {}))
    parent = parent_run(mlclient, exp_id, key, label, grid, len(configs))
    t0 = time.time()
    try:
        ids = run_configs(configs, uri, workers, progress, parent_run_id=parent)
    except BaseException as e:  # Ctrl-C, SIGTERM, a store error: the parent run does not stay RUNNING
        tracking.best_effort(
            mlclient.set_terminated, parent, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        )
        raise
    failed = len(configs) - len(ids)
    tracking.retry(mlclient.log_metric, parent, C.SWEEP_FINISHED, len(ids))
    tracking.retry(mlclient.log_metric, parent, C.SWEEP_SECONDS, time.time() - t0)
    close_parent(mlclient, parent, len(ids), failed)
    return {"parent": parent, "runs": ids, "failed": failed}
