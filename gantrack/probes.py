"""The per-sample probe artifact: every probe cell's raw D scores, every step.

Format (``contract.PER_SAMPLE_ARTIFACT``, one ``.npz``): ``steps`` (int64, n) and, per cell, a
float32 array (n, batch) of D's raw scores — logits for the BCE families (apply the sigmoid for
D(G(z))), critic values otherwise. float32 rather than float16: float16 keeps 3 significant digits,
so a logit near -9 (p ≈ 1e-4, where g = -log p is steepest) would be off by ~0.4 % in p and the
batch means recomputed from it would no longer match the logged scalars to the precision the
analysis checks. float32 costs 4 bytes × (3 × 64 + 2 × 128) = 1.8 KB a step at the book's batch
sizes (~0.8 MB for a 450-step run before compression), small beside the run's other artifacts.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from .contract import CELLS
from .errors import GantrackError, first_line


class PerSampleRecorder:
    """Collects each step's cells (tensors of raw scores) into preallocated float32 arrays."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.cells: dict[str, np.ndarray] = {}
        self.n = 0

    def add(self, step: int, cells: dict[str, torch.Tensor]) -> None:
        if self.n >= self.capacity:  # a resumed run may log a few more steps than first planned
            self._grow(max(16, self.capacity))
        for name, score in cells.items():
            if score.ndim != 1 or score.dtype != torch.float32 or score.requires_grad or score.device.type != "cpu":
                score = score.detach().reshape(-1).to(torch.float32).cpu()
            values = score.numpy()  # the probes' cells are CPU float32 vectors already: no copy on the way
            if name not in self.cells:
                self.cells[name] = np.zeros((self.capacity, len(values)), dtype=np.float32)
            self.cells[name][self.n] = values
        self.steps[self.n] = step
        self.n += 1

    def _grow(self, extra: int) -> None:
        self.capacity += extra
        self.steps = np.concatenate([self.steps, np.zeros(extra, dtype=np.int64)])
        self.cells = {
            k: np.concatenate([v, np.zeros((extra, v.shape[1]), dtype=np.float32)]) for k, v in self.cells.items()
        }

    def state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps (tensors, so ``torch.load(weights_only=True)`` reads it back)."""
        out = {"steps": torch.from_numpy(self.steps[: self.n].copy())}
        out.update({k: torch.from_numpy(v[: self.n].copy()) for k, v in self.cells.items()})
        return out

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], capacity: int) -> PerSampleRecorder:
        rec = cls(max(capacity, len(state.get("steps", ()))))
        n = len(state.get("steps", ()))
        rec.steps[:n] = state["steps"].numpy() if n else []
        for k, v in state.items():
            if k != "steps":
                rec.cells[k] = np.zeros((rec.capacity, v.shape[1]), dtype=np.float32)
                rec.cells[k][:n] = v.numpy()
        rec.n = n
        return rec

    def save(self, path: Path) -> Path:
        arrays = {"steps": self.steps[: self.n]}
        arrays.update({k: v[: self.n] for k, v in self.cells.items()})
        np.savez_compressed(path, **arrays)
        return path


def read_per_sample(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """The artifact's arrays: ``steps`` and one (n, batch) float32 array per cell.

    Raises ``GantrackError`` with a one-line reason when the file is truncated, corrupt or not
    this format (no pickles are ever loaded: ``allow_pickle=False``).
    """
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        with np.load(data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise GantrackError(
            f"per-sample artifact is unreadable ({type(e).__name__}: {first_line(e) if str(e) else 'truncated'})"
        ) from None
    steps = arrays.get("steps")
    if steps is None or steps.ndim != 1:
        raise GantrackError("per-sample artifact has no steps array")
    for name, v in arrays.items():
        if name == "steps":
            continue
        if name not in CELLS:
            raise GantrackError(f"per-sample artifact has an unknown cell {name!r}")
        if v.ndim != 2 or len(v) != len(steps):
            raise GantrackError(f"per-sample artifact: cell {name} has shape {v.shape}, expected ({len(steps)}, batch)")
    return arrays
