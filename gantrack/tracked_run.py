"""One owner for a run's life in MLflow: open the store, create or re-open the run, buffer its
metrics, log its artifacts, and end it FINISHED, FAILED or KILLED.

The harness (``gantrack.train``/``resume``), ``LoopProbes`` and the Lightning callback are thin
callers of ``TrackedRun``, so every run behaves the same way:

- a store that cannot be used, or a ``create_run`` that fails, is one ``GantrackError`` line;
- while a run on an http(s) store is open, MLflow's HTTP retries are shortened in the environment
  (``tracking.fail_fast_http``): a dead server costs seconds and the metrics wait in the buffer;
- params are flattened, cut to MLflow's 6,000-character value limit and sent 100 at a time;
- ``gantrack.status`` says ``training`` while the run is open and ``finished`` at the end, and a
  finished run gets its end time; a failed one gets ``gantrack.failure`` with the reason;
- a store that fails for good (a full disk, a locked or read-only database, a server gone) loses
  nothing: what the run still writes — metrics, final artifacts, images, tags — goes to a spool folder
  (``gantrack.spool``) with the store's URI and the status the run reached; the run is marked FAILED
  with the cause if the store still takes that, ``finish`` raises ``RunSpooled`` (the CLI: one line,
  exit code 1), and ``gantrack sync FOLDER`` completes the run later;
- MLflow's own error reports (SQLAlchemy tracebacks) go to a log file, named once, not the terminal.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import contract as C
from . import tracking
from .errors import GantrackError, RunSpooled, first_line, store_failure
from .messages import warn
from .spool import Spool
from .tracking import Store

STORE_FAILURES = ("disk full", "database locked", "read-only store", "permission denied", "server unreachable")
PARAM_LIMIT = 6000  # MLflow's longest param value (characters)
PARAM_BATCH = 100  # MLflow's most params per log_batch


def _owner_tags() -> dict[str, str]:
    """Who trains the run: host, pid and a first heartbeat (``tracking.orphan_reason`` reads them)."""
    import os
    import socket

    return {C.TAG_HOST: socket.gethostname(), C.TAG_PID: str(os.getpid()), C.TAG_HEARTBEAT: str(int(time.time()))}


class TrackedRun:
    """An open MLflow run: ``create`` or ``reopen`` it, ``log`` metrics, ``log_artifact``, then
    ``finish`` or ``fail``. After either, ``closed`` is true and further calls raise."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self.closed = False
        self._buffer = tracking.MetricBuffer(store.client, run_id, uri=store.uri, heartbeat=True)
        self.spool: Spool | None = None  # once the store has failed for good: where the rest goes
        self._scope = ExitStack()
        self._scope.enter_context(tracking.fail_fast_http(store.uri))
        self._scope.enter_context(tracking.mlflow_errors_to_file())

    # --- opening ------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        store: Store,
        experiment: str,
        tags: dict[str, str],
        run_name: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> TrackedRun:
        """A new run in ``experiment`` with ``tags`` and the flattened ``params``."""
        from mlflow.entities import Param, RunTag

        exp_id = store.experiment_id(experiment)
        tags = {**tags, **_owner_tags()}
        try:
            run = tracking.retry(store.client.create_run, exp_id, tags=tags, run_name=run_name)
        except Exception as e:
            raise GantrackError(f"cannot create a run in {tracking.redact(store.uri)}: {first_line(e)}") from None
        self = cls(store, run.info.run_id)
        try:
            flat = [Param(k, v[:PARAM_LIMIT]) for k, v in tracking.flatten(params or {}).items()]
            status = [RunTag(C.TAG_STATUS, "training")]
            for i in range(0, max(1, len(flat)), PARAM_BATCH):
                tracking.retry(
                    store.client.log_batch, self.run_id, params=flat[i : i + PARAM_BATCH], tags=status if i == 0 else []
                )
        except BaseException as e:  # the run exists: it must not stay RUNNING
            self.fail(e)
            raise
        return self

    @classmethod
    def reopen(cls, store: Store, run_id: str) -> TrackedRun:
        """An existing run set RUNNING again (a resume after a crash)."""
        from mlflow.entities import RunTag

        tracking.retry(store.client.update_run, run_id, status="RUNNING")
        self = cls(store, run_id)
        tags = [RunTag(k, v) for k, v in {C.TAG_STATUS: "training", **_owner_tags()}.items()]
        tracking.retry(store.client.log_batch, run_id, tags=tags)
        return self

    # --- while it runs ----------------------------------------------------------------------------
    def log(self, step: int, values, timestamp_ms: int | None = None) -> None:
        """Buffer one step's ``(key, value)`` pairs (written by ``flush`` / ``flush_in_background``)."""
        if self.spool is not None:  # the run is ending on a failed store: straight to the spool
            self._buffer.add(step, values, timestamp_ms)
            self.spool.add_metrics(self._buffer.pending)
            self._buffer.pending.clear()
            return
        self._open()
        self._buffer.add(step, values, timestamp_ms)

    def log_series(self, key: str, steps, values, timestamp_ms: int) -> None:
        """One key's points at their own steps (an import), buffered like ``log``."""
        self._open()
        self._buffer.add_series(key, steps, values, timestamp_ms)

    def flush(self) -> bool:
        """Write what is pending and wait; True when nothing is left pending."""
        if self.spool is not None:
            return True
        return self._buffer.flush()

    def flush_in_background(self) -> None:
        """Start writing what is pending on the writer thread; the caller does not wait."""
        self._buffer.flush_in_background()

    def log_artifact(self, local: str | Path, folder: str | None = None) -> None:
        """Upload a file, retrying transient store errors; spooled once the store has failed."""
        self._store_or_spool(
            self.store.client.log_artifact, (str(local), folder), lambda sp: sp.add_artifact(local, folder)
        )

    def log_artifacts(self, local_dir: str | Path, folder: str | None = None) -> None:
        def to_spool(sp):
            for item in sorted(Path(local_dir).iterdir()):
                sp.add_artifact(item, folder)

        self._store_or_spool(self.store.client.log_artifacts, (str(local_dir), folder), to_spool)

    def log_image(self, image, key: str, step: int) -> None:
        """An image at a step under ``key`` (MLflow >= 2.12): the UI's image grid shows it on the step slider."""

        def upload(run_id, img):
            self.store.client.log_image(run_id, img, key=key, step=step, synchronous=True)

        self._store_or_spool(upload, (image,), lambda sp: sp.add_image(image, key, step))

    def log_dict(self, data: dict, name: str) -> None:
        tracking.retry(self.store.client.log_dict, self.run_id, data, name)

    def set_tag(self, key: str, value: str, best_effort: bool = False) -> None:
        """Set a tag; ``best_effort``: for tags training must survive without (warn and go on)."""
        if self.spool is not None:
            self.spool.add_tag(key, value)
        elif best_effort:
            tracking.best_effort(self.store.client.set_tag, self.run_id, key, value)
        else:
            self._store_or_spool(self.store.client.set_tag, (key, value), lambda sp: sp.add_tag(key, value))

    def _store_or_spool(self, call, args: tuple, to_spool) -> None:
        """``call(run_id, *args)`` with retries; once the store has failed for good (or does now, on a
        store failure), ``to_spool(spool)`` instead, so nothing of the run exists only in memory."""
        if self.spool is None:
            try:
                tracking.retry(call, self.run_id, *args)
                return
            except Exception as e:
                cause = store_failure(e)
                if cause not in STORE_FAILURES:
                    raise
                warn(
                    "cannot write to MLflow: %s (%s); the rest of run %s goes to the spool",
                    cause,
                    first_line(e, 120),
                    self.run_id,
                )
                self._start_spool(cause)
        to_spool(self.spool)

    def _start_spool(self, cause: str) -> None:
        self.spool = Spool.open(self.run_id, self.store.uri, cause)
        self.spool.add_metrics(self._buffer.pending)
        self._buffer.pending.clear()

    # --- closing ------------------------------------------------------------------------------------
    def finish(self, before_status=None) -> None:
        """Write every pending metric, then ``before_status`` (a callable for final artifacts and tags),
        then end the run FINISHED with its end time. If the store fails for good on the way, the rest —
        pending metrics, the final artifacts, the tags — goes to the spool with the status FINISHED, the
        run is marked FAILED with the cause where the store still takes that, and ``RunSpooled`` is
        raised (``gantrack sync`` finishes the run later)."""
        self._open()
        try:
            if not self._buffer.close():
                self._start_spool(self._buffer.cause or "store failed")
            if before_status is not None:
                before_status()
            if self.spool is None:
                try:
                    tracking.retry(self.store.client.set_tag, self.run_id, C.TAG_STATUS, "finished")
                    tracking.retry(
                        self.store.client.set_terminated, self.run_id, "FINISHED", end_time=int(time.time() * 1000)
                    )
                    return
                except Exception as e:
                    if store_failure(e) not in STORE_FAILURES:
                        raise
                    self._start_spool(store_failure(e))
            folder = self.spool.close("FINISHED")
            marked = self._mark_failed(f"the store failed ({self.spool.manifest['cause']}); spooled to {folder}")
            raise RunSpooled(self.run_id, folder, self.spool.manifest["cause"], marked)
        finally:
            self._close()

    def _mark_failed(self, reason: str) -> bool:
        """FAILED with the reason, if the store takes it (no retries: it has failed already)."""
        try:
            self.store.client.set_tag(self.run_id, C.TAG_FAILURE, reason[:4000])
            self.store.client.set_tag(self.run_id, C.TAG_STATUS, "failed")
            self.store.client.set_terminated(self.run_id, "FAILED", end_time=int(time.time() * 1000))
            return True
        except Exception:
            return False

    def fail(self, reason: BaseException | str) -> None:
        """End the run FAILED (KILLED for Ctrl-C) with the reason in ``gantrack.failure``; the metrics
        already logged are written first. Never raises: the store may be what failed."""
        if self.closed:
            return
        killed = isinstance(reason, KeyboardInterrupt)
        text = "interrupted" if killed else reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        try:
            if not self._buffer.close():  # the metrics up to the failure are kept for a sync
                self._start_spool(self._buffer.cause or "store failed")
                self.spool.add_tag(C.TAG_FAILURE, text[:4000])
                self.spool.close("KILLED" if killed else "FAILED")
                warn(
                    "metrics of run %s spooled to %s (gantrack sync %s)",
                    self.run_id,
                    self.spool.folder,
                    self.spool.folder,
                )
            self.store.client.set_tag(self.run_id, C.TAG_FAILURE, text[:4000])
            self.store.client.set_tag(self.run_id, C.TAG_STATUS, "killed" if killed else "failed")
            self.store.client.set_terminated(
                self.run_id, "KILLED" if killed else "FAILED", end_time=int(time.time() * 1000)
            )
        except Exception:  # the store itself is gone: the spool file (if any) holds the metrics
            pass
        finally:
            self._close()

    def _open(self) -> None:
        if self.closed:
            raise GantrackError(f"run {self.run_id} is already closed")

    def _close(self) -> None:
        self.closed = True
        self._scope.close()
