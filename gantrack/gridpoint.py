"""A grid point's life in a sweep, shared by the local sweep (``sweep``) and the one spread over
machines (``shared_sweep``): what to do with a point (reuse, resume, train), doing it, the sweep's
identity and its parent run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import contract as C
from . import tracking
from .config import Config


def plan(mlclient, cfg: Config, takeover: bool = False) -> tuple[str, str | None]:
    """What to do for ``cfg`` in its experiment: ("reuse", FINISHED run), ("resume", an unfinished run
    that left a checkpoint) or ("train", None).

    A RUNNING run counts as unfinished only when it is an orphan (``tracking.orphan_reason``: its
    process is gone), when it predates the host/pid tags (it cannot be told), or with ``takeover`` (the
    caller knows its trainer died: a shared sweep's stale trial). An orphan with no checkpoint ends
    KILLED with the reason, and the point is trained again."""
    from .checkpoint import checkpoint_path

    exp_id = tracking.get_or_create_experiment(mlclient, cfg.experiment)  # creates the DB once, up front
    found = tracking.retry(
        mlclient.search_runs, [exp_id], f"tags.`{C.TAG_HASH}` = '{cfg.config_hash()}'", max_results=100
    )
    done = [r for r in found if r.info.status == "FINISHED"]
    if done:
        return "reuse", done[0].info.run_id
    # a RUNNING run whose process lives is someone's training: never resumed under it
    orphans = {r.info.run_id: why for r in found if (why := tracking.orphan_reason(r))}
    unfinished = [
        r
        for r in found
        if takeover or r.info.status != "RUNNING" or r.info.run_id in orphans or C.TAG_HOST not in r.data.tags
    ]
    resumable = [r for r in unfinished if checkpoint_path(cfg, r.info.run_id).is_file()]
    if resumable:
        return "resume", resumable[0].info.run_id
    for r in unfinished:  # nothing to resume from: the orphan ends KILLED, with why, and the point is retrained
        if r.info.run_id in orphans:
            tracking.close_orphan(mlclient, r, orphans[r.info.run_id] + "; no checkpoint, the point was retrained")
    return "train", None


def carry_out(kind: str, cfg: Config, uri: str, run_id: str | None, parent: str | None) -> str:
    """Do what ``plan`` said: resume ``run_id`` or train ``cfg`` under ``parent``; returns the run id."""
    from .harness import resume, train

    if kind == "resume":
        return resume(run_id, tracking_uri=uri, quiet=True)
    return train(cfg, tracking_uri=uri, quiet=True, parent_run_id=parent)


def sweep_key(base: Config, grid: dict[str, list[Any]]) -> str:
    """A sweep's identity: its grid and base config (the same command on any machine gives the same key)."""
    text = json.dumps({"grid": grid, "base": base.config_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parent_run(mlclient, exp_id: str, key: str, label: str, grid: dict, n_runs: int) -> str:
    """The sweep's parent run: the one already tagged with ``key`` (set RUNNING again) or a new one."""
    existing = tracking.retry(mlclient.search_runs, [exp_id], f"tags.`{C.TAG_SWEEP_KEY}` = '{key}'", max_results=1)
    if existing:
        parent = existing[0].info.run_id
        tracking.retry(mlclient.update_run, parent, status="RUNNING")
        return parent
    return tracking.retry(
        mlclient.create_run,
        exp_id,
        run_name=label,
        tags={
            C.TAG_KIND: "sweep",
            C.TAG_SWEEP_KEY: key,
            C.TAG_NOTE: f"gantrack sweep over {', '.join(f'{k}={v}' for k, v in grid.items())} ({n_runs} runs)",
        },
    ).info.run_id


def close_parent(mlclient, parent: str, finished: int, failed: int) -> None:
    """The sweep's result on its parent run, which ends FINISHED (FAILED when a point failed)."""
    tracking.retry(mlclient.set_tag, parent, C.TAG_SWEEP_RESULT, f"{finished} finished, {failed} failed")
    tracking.retry(mlclient.set_terminated, parent, "FINISHED" if not failed else "FAILED")
