"""One owner for a run's life in MLflow: open the store, create or re-open the run, buffer its
metrics, log its artifacts, and end it FINISHED, FAILED or KILLED.

The harness (``gantrack.train``/``resume``), ``LoopProbes`` and the Lightning callback are thin
callers of ``TrackedRun``, so every run behaves the same way:

- a store that cannot be used, or a ``create_run`` that fails, is one ``GantrackError`` line;
- while a run on an http(s) store is open, MLflow's HTTP retries are shortened in the environment
  (``tracking.fail_fast_http``): a dead server costs seconds and the metrics wait in the buffer;
- params are flattened, cut to MLflow's 6,000-character value limit and sent 100 at a time;
- ``gantrack.status`` says ``training`` while the run is open and ``finished`` at the end, and a
  finished run gets its end time; a failed one gets ``gantrack.failure`` with the reason.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import contract as C
from . import tracking
from .errors import GantrackError, first_line
from .tracking import Store

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
        self._scope = ExitStack()
        self._scope.enter_context(tracking.fail_fast_http(store.uri))

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
        self._open()
        self._buffer.add(step, values, timestamp_ms)

    def flush(self) -> bool:
        """Write what is pending and wait; True when nothing is left pending."""
        return self._buffer.flush()

    def flush_in_background(self) -> None:
        """Start writing what is pending on the writer thread; the caller does not wait."""
        self._buffer.flush_in_background()

    def log_artifact(self, local: str | Path, folder: str | None = None) -> None:
        """Upload a file, retrying transient store errors."""
        tracking.retry(self.store.client.log_artifact, self.run_id, str(local), folder)

    def log_artifacts(self, local_dir: str | Path, folder: str | None = None) -> None:
        tracking.retry(self.store.client.log_artifacts, self.run_id, str(local_dir), folder)

    def log_image(self, image, key: str, step: int) -> None:
        """An image at a step under ``key`` (MLflow >= 2.12): the UI's image grid shows it on the step slider."""
        tracking.retry(self.store.client.log_image, self.run_id, image, key=key, step=step, synchronous=True)

    def log_dict(self, data: dict, name: str) -> None:
        tracking.retry(self.store.client.log_dict, self.run_id, data, name)

    def set_tag(self, key: str, value: str, best_effort: bool = False) -> None:
        """Set a tag; ``best_effort``: for tags training must survive without (warn and go on)."""
        if best_effort:
            tracking.best_effort(self.store.client.set_tag, self.run_id, key, value)
        else:
            tracking.retry(self.store.client.set_tag, self.run_id, key, value)

    # --- closing ------------------------------------------------------------------------------------
    def finish(self, before_status=None) -> Path | None:
        """Write every pending metric, then (``before_status``: a callable for final artifacts, run
        only when the metrics got through) end the run FINISHED with its end time. If the store could
        not take the metrics, they and the final status are spooled (``gantrack sync``) and the spool
        path is returned; the run is then left for the sync to finish."""
        self._open()
        try:
            spool = self._buffer.close(final_status="FINISHED")
            if spool is None:
                if before_status is not None:
                    before_status()
                tracking.retry(self.store.client.set_tag, self.run_id, C.TAG_STATUS, "finished")
                tracking.retry(
                    self.store.client.set_terminated, self.run_id, "FINISHED", end_time=int(time.time() * 1000)
                )
            return spool
        finally:
            self._close()

    def fail(self, reason: BaseException | str) -> None:
        """End the run FAILED (KILLED for Ctrl-C) with the reason in ``gantrack.failure``; the metrics
        already logged are written first. Never raises: the store may be what failed."""
        if self.closed:
            return
        killed = isinstance(reason, KeyboardInterrupt)
        text = "interrupted" if killed else reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
        try:
            self._buffer.close()
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
