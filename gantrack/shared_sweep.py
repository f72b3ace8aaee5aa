"""A sweep shared by machines: Optuna's RDB storage hands out the grid, MLflow keeps the runs.

Every process, on any machine, that runs the same ``gantrack sweep ... --storage postgresql://...``
joins the same Optuna study (named after the sweep's key: grid + base config hash) and trains grid
points until all are done:

- **Each point once.** The process that creates the study enqueues every grid point as a trial and
  creates the MLflow parent run (its id is a study attribute, so every machine's runs hang under one
  parent). Workers pop enqueued trials; Optuna's RDB storage moves a trial from WAITING to RUNNING in
  one guarded update, so two workers never get the same trial. Optuna's ``GridSampler`` is not used:
  it may hand a point to two workers at once. The config-hash check stays in front of training
  (a point already FINISHED in MLflow, e.g. by an earlier local sweep, is reused, not retrained).
- **Dead workers.** Trials send heartbeats (``heartbeat`` seconds); a trial silent for ``grace``
  seconds is failed by whichever worker notices first (``optuna.storages.fail_stale_trials``; the
  state change is guarded, so only one does) and ``RetryFailedTrialCallback`` enqueues it again.
  The retry resumes the dead worker's MLflow run from its last checkpoint when the checkpoint folder
  is shared (``checkpoint_dir`` / ``GANTRACK_CHECKPOINT_DIR`` on a shared disk), else trains it anew.
- **Outages.** Storage calls of the worker loop retry with back-off while the database is away; the
  training itself buffers its metrics through a tracking outage (``tracking.MetricBuffer``).
  Heartbeats missed during an outage longer than ``grace`` make the trial stale; keep ``grace`` above
  the outages you expect (default 120 s).

Credentials in the storage URL are never logged: messages show it with the password as ``***``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import contextmanager
from typing import Any

from . import tracking
from .config import Config
from .cores import free_cores
from .errors import GantrackError, first_line
from .gridpoint import carry_out, close_parent, parent_run, plan
from .messages import warn

ATTR_PARENT, ATTR_POINTS, ATTR_SEEDED = "gantrack_parent_run_id", "gantrack_points", "gantrack_seeded"


@contextmanager
def optuna_quiet():
    """Optuna's process-wide settings for the block only: its per-trial INFO lines off, and its
    ExperimentalWarning (heartbeats and stale-trial retries, the behaviour relied on here) silenced;
    both as they were afterwards."""
    import warnings

    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _storage(url: str, heartbeat: float, grace: float, max_retry: int):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import OperationalError

    class ResilientRDBStorage(RDBStorage):
        """Optuna's heartbeat thread dies at its first failed write, and a trial whose heartbeats stop is
        retried elsewhere while it still trains; a beat missed while the database restarts is skipped."""

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except OperationalError as e:
                warn("heartbeat not recorded (%s); next beat retries", first_line(e))

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(10):
        try:
            return ResilientRDBStorage(
                url,
                heartbeat_interval=int(max(1, heartbeat)),
                grace_period=int(max(2, grace)),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                engine_kwargs={"pool_pre_ping": True},  # a connection that died with a database restart is replaced
            )
        except Exception as e:
            # machines starting together race to create Optuna's tables ("duplicate key ... pg_type"):
            # the loser waits and finds them made
            race = isinstance(e, (IntegrityError, ProgrammingError)) or any(
                m in str(e) for m in ("already exists", "duplicate key")
            )
            if not race or attempt == 9:
                raise GantrackError(f"Optuna storage {tracking.redact(url)}: {first_line(e)}") from None
            time.sleep(0.5 + attempt * 0.5)


def _retrying(fn, *args, what: str, patience: float = 600.0, **kw):
    """Call a storage or tracking function, waiting out a database that is restarting (up to ``patience`` s)."""
    from sqlalchemy.exc import OperationalError

    delay, waited = 1.0, 0.0
    while True:
        try:
            return fn(*args, **kw)
        except OperationalError as e:
            if waited >= patience:
                raise GantrackError(f"{what}: the database stayed unreachable for {patience:.0f} s") from None
            warn("%s: database unreachable (%s); retrying", what, first_line(e))
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 15.0)


def _open_study(configs: list[Config], grid, storage, uri: str, key: str, label: str):
    """Create the study (and enqueue every point, and the parent run) or join the existing one."""
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    name = f"gantrack-sweep-{key}"
    try:
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=False)
        creator = True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        creator = False
    if creator:
        mlclient = tracking.client(uri)
        exp_id = tracking.get_or_create_experiment(mlclient, configs[0].experiment)
        study.set_user_attr(ATTR_PARENT, parent_run(mlclient, exp_id, key, label, grid, len(configs)))
        study.set_user_attr(ATTR_POINTS, len(configs))
        for i in range(len(configs)):
            # the point rides in the trial's user attributes, which a retried copy keeps too
            study.enqueue_trial({}, user_attrs={"point": i, "config_hash": configs[i].config_hash()})
        study.set_user_attr(ATTR_SEEDED, True)
    deadline = time.time() + 120
    while not study.user_attrs.get(ATTR_SEEDED):  # another machine is enqueueing right now
        if time.time() > deadline:
            raise GantrackError(f"sweep study {name} was created but never filled (its creator died?)")
        time.sleep(1)
    if study.user_attrs.get(ATTR_POINTS) != len(configs):
        raise GantrackError(
            f"sweep study {name} has {study.user_attrs.get(ATTR_POINTS)} points, this grid {len(configs)}"
        )
    return study


def _objective(configs: list[Config], uri: str, parent: str):
    import optuna

    def objective(trial) -> float:
        point = trial.user_attrs.get("point")
        if point is None:  # a fresh trial, not one of ours: the queue ran empty under us
            raise optuna.TrialPruned("no grid point left")
        cfg = configs[point]
        # a point handed out again is one whose worker died (stale heartbeat): its run may be taken over
        kind, run_id = plan(tracking.client(uri), cfg, takeover=True)
        if kind != "reuse":
            run_id = carry_out(kind, cfg, uri, run_id, parent)
        trial.set_user_attr("mlflow_run_id", run_id)
        return 0.0

    return objective


def _state(study) -> tuple[set[int], int, int, set[int]]:
    """(completed points, WAITING trials, RUNNING trials, points whose every try failed)."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if "point" in t.user_attrs]
    complete = {t.user_attrs["point"] for t in trials if t.state == TrialState.COMPLETE}
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    live = {t.user_attrs["point"] for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    failed = {t.user_attrs["point"] for t in trials if t.state == TrialState.FAIL} - complete - live
    # a failed try that Optuna will retry has a WAITING copy (same point): only points with none are lost
    return complete, waiting, running, failed


def worker(configs, grid, url: str, uri: str, key: str, label: str, options: dict[str, Any]) -> None:
    """One worker loop: pop and train points until every point is done (or failed for good)."""
    with optuna_quiet():
        _work_on(configs, grid, url, uri, key, label, options)


def _work_on(configs, grid, url: str, uri: str, key: str, label: str, options: dict[str, Any]) -> None:
    import optuna

    storage = _storage(url, options["heartbeat"], options["grace"], options["max_retry"])
    study = _retrying(_open_study, configs, grid, storage, uri, key, label, what="open the sweep")
    objective = _objective(configs, uri, study.user_attrs[ATTR_PARENT])
    n = len(configs)
    while True:
        _retrying(optuna.storages.fail_stale_trials, study, what="check for dead workers")
        complete, waiting, running, failed = _retrying(_state, study, what="read the sweep")
        if len(complete) + len(failed) >= n:
            return
        if waiting:
            _retrying(study.optimize, objective, n_trials=1, catch=(Exception,), what="run a trial")
        else:  # others are training the rest: wait, and take over theirs if they die
            time.sleep(options["poll"])


def _spawned_worker(*args) -> None:
    from .allocator import keep_freed_memory
    from .cores import passive_wait_policy

    passive_wait_policy()  # our own process, torch not yet imported (gantrack.cores)
    keep_freed_memory()
    worker(*args)


def shared_sweep(
    configs: list[Config],
    grid: dict,
    storage: str,
    tracking_uri: str,
    key: str,
    label: str,
    progress: bool = True,
    workers: int = 1,
    heartbeat: float = 30.0,
    grace: float = 120.0,
    max_retry: int = 3,
    poll: float = 5.0,
) -> dict[str, Any]:
    """Join (or start) the shared sweep and work on it with ``workers`` local processes until it is done;
    returns {"parent": run id, "runs": [...], "failed": n} like ``sweep``."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise GantrackError("sweeps with --storage need Optuna: pip install 'gantrack[postgres]'") from None
    if not storage.startswith(("postgresql", "mysql", "sqlite")):
        raise GantrackError(f"--storage must be a database URL (postgresql://...), got {tracking.redact(storage)}")
    if storage.startswith("postgresql"):
        tracking.check_postgres(storage)
    options = dict(heartbeat=heartbeat, grace=grace, max_retry=max_retry, poll=poll)
    threads = max(1, free_cores() // max(1, workers))  # the cores free here, shared by this machine's workers
    configs = [c.replace(threads=c.threads or threads) for c in configs]
    args = (configs, grid, storage, tracking_uri, key, label, options)
    if workers <= 1:
        worker(*args)
    else:
        ctx = multiprocessing.get_context("spawn")  # see sweep.run_configs: never fork after torch
        procs = [ctx.Process(target=_spawned_worker, args=args) for _ in range(workers)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(30)
    return _finish(configs, storage, tracking_uri, key, heartbeat, grace, max_retry)


def _finish(configs, url, uri, key, heartbeat, grace, max_retry) -> dict[str, Any]:
    import optuna

    with optuna_quiet():
        storage = _storage(url, heartbeat, grace, max_retry)
        study = optuna.load_study(study_name=f"gantrack-sweep-{key}", storage=storage)
    complete, _, _, failed = _state(study)
    parent = study.user_attrs[ATTR_PARENT]
    from optuna.trial import TrialState

    ids = sorted(
        {t.user_attrs["mlflow_run_id"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    )
    mlclient = tracking.client(uri)
    if len(complete) + len(failed) >= len(configs):  # the last worker to finish closes the parent run
        close_parent(mlclient, parent, len(ids), len(failed))
    return {"parent": parent, "runs": ids, "failed": len(failed), "pid": os.getpid()}
