"""Sample grids: G's output on a fixed latent batch, drawn from a random stream of its own (the
training stream is untouched), as a 5×5 image grid or, for the toys, a scatter against the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import data, figures

GRID = 25  # images shown as one grid (5 x 5: the harness's fixed batch, the first of a diversity snapshot)


class SampleGrid:
    """The fixed latent batch of a run and the picture of what G makes of it."""

    def __init__(self, gan, n: int = 25):
        g = torch.Generator().manual_seed(gan.cfg.seed + 1_000_003)
        self.z = torch.randn(n if gan.real is not None else 500, gan.cfg.latent_dim, generator=g)
        self.reference = None if gan.real is not None else data.TOYS[gan.cfg.dataset](500, g).numpy()

    def save(self, gan, step: int, folder: Path) -> tuple[Path, np.ndarray]:
        """What G makes of the fixed batch, drawn once (``snapshot_image``: a 5×5 grid, or for the toys a
        scatter against the data) as uint8 pixels, and written as a PNG file in ``folder`` (the run's
        ``samples/`` artifacts); returns the path and the pixels (for ``mlflow.log_image``)."""
        from PIL import Image

        pixels = snapshot_image(self._generate(gan), self.reference, step)
        path = folder / f"samples_step{step:06d}.png"
        Image.fromarray(pixels).save(path)
        return path, pixels

    def _generate(self, gan) -> np.ndarray:
        with torch.no_grad():
            gan.G.eval()
            x = gan.g(self.z.to(gan.device)).cpu().numpy()
            gan.G.train()
        return x


def tiles(x: np.ndarray) -> np.ndarray:
    """Images (n, C, H, W) in [-1, 1] (G's tanh output) as one square grid in [0, 1]: (rows, cols) for one
    channel (1 = ink, drawn dark), (rows, cols, 3) for three; empty places are blank (no ink, or white)."""
    n, c, h, w = x.shape
    side = int(math.ceil(math.sqrt(n)))
    grid = np.full((side * side, c, h, w), 0.0 if c == 1 else 1.0, dtype=np.float32)
    grid[:n] = np.clip((x + 1) / 2, 0, 1)
    out = grid.reshape(side, side, c, h, w).transpose(0, 3, 1, 4, 2).reshape(side * h, side * w, c)
    return out[..., 0] if c == 1 else out


def snapshot_image(x, reference: np.ndarray | None = None, step: int | None = None) -> np.ndarray | None:
    """G's samples (a diversity snapshot, the harness's fixed batch) as uint8 pixels for ``mlflow.log_image``
    and the ``samples/`` files: the first ``GRID`` images as a grid, or, for samples of one or two
    coordinates (the toys, a user's 2-D data), all of them scattered over up to 500 of ``reference``'s
    points; None for anything else."""
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        return image_grid(x[:GRID])
    if x.ndim != 2 or x.shape[1] not in (1, 2):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    real = np.zeros((0, x.shape[1]), np.float32) if reference is None else np.asarray(reference)[:500]
    fig = figures.scatter_samples(real, x, "" if step is None else f"step {step}")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    figures.close(fig)
    return pixels


def image_grid(x) -> np.ndarray | None:
    """A snapshot's first samples as uint8 pixels for ``mlflow.log_image`` (dark strokes on white for one
    channel, as the book draws the digits); None when the samples are not (n, 1 or 3, H, W) images."""
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or min(x.shape[2:]) < 4:
        return None
    t = tiles(x)
    return np.round(255 * (1 - t if x.shape[1] == 1 else t)).astype(np.uint8)
