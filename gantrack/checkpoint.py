"""Checkpoints: what a run needs to continue after a crash, written atomically, read back safely.

A checkpoint holds the models, the optimisers, the training random stream, the logged history and
the per-sample probes so far (tensors and plain containers only: ``torch.load(weights_only=True)``).
The harness writes the store's metrics only right after a checkpoint, so a resumed run neither skips
nor doubles a step (``log_missing_steps`` covers a kill between the two).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from . import contract as C
from . import tracking
from .paths import own_dir


def checkpoint_path(cfg, run_id: str) -> Path:
    """``<dir>/<run_id>.pt``; the folder: the config's ``checkpoint_dir``, ``$GANTRACK_CHECKPOINT_DIR``
    or ``~/.cache/gantrack/checkpoints``."""
    root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else own_dir("GANTRACK_CHECKPOINT_DIR", "checkpoints")
    return root / f"{run_id}.pt"


def save(path: Path, gan, step: int, history: dict, per_sample, events: list | None = None) -> None:
    """Write the checkpoint of ``gan`` after ``step`` (atomic: a kill mid-write keeps the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "D": gan.D.state_dict(),
            "G": gan.G.state_dict(),
            "opt_d": gan.opt_d.state_dict(),
            "opt_g": gan.opt_g.state_dict(),
            "gen": gan.gen.get_state(),
            "history": history,
            "per_sample": per_sample.state() if per_sample else None,
            # metrics logged at their own steps (diversity snapshots, div/batch_bins, the detector's
            # decisions) as (key, step, value): a kill before the flush must not lose them either
            "events": list(events or []),
        },
        tmp,
    )
    tmp.replace(path)


def restore(path: Path, gan) -> dict:
    """Load the checkpoint into ``gan`` (models, optimisers, random stream); returns the whole state."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    gan.D.load_state_dict(state["D"])
    gan.G.load_state_dict(state["G"])
    gan.opt_d.load_state_dict(state["opt_d"])
    gan.opt_g.load_state_dict(state["opt_g"])
    gan.gen.set_state(state["gen"])  # the only stream training draws from
    gan.per_sample_state = state.get("per_sample")
    return state


def log_missing_steps(mlclient, run_id: str, ckpt_step: int, history: dict, events: list | None = None) -> None:
    """A kill between writing a checkpoint and flushing its steps' metrics leaves the store behind the
    checkpoint: log those steps from the checkpoint's own history, so no step is skipped or doubled."""
    from mlflow.entities import Metric

    logged = tracking.retry(mlclient.get_metric_history, run_id, C.G_LOSS)
    last = max((m.step for m in logged), default=0)
    if last >= ckpt_step:
        return
    ts = int(time.time() * 1000)
    batch = [
        Metric(key, float(values[step - 1]), ts, step)
        for step in range(last + 1, ckpt_step + 1)
        for key, values in history.items()
        if len(values) >= step
    ]
    batch += [Metric(key, float(value), ts, int(step)) for key, step, value in events or [] if last < step <= ckpt_step]
    for i in range(0, len(batch), 1000):
        tracking.retry(mlclient.log_batch, run_id, metrics=batch[i : i + 1000])
