"""Sample grids: G's output on a fixed latent batch, drawn from a random stream of its own (the
training stream is untouched), as a 5×5 image grid or, for the toys, a scatter against the data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import data, figures

GRID = 25  # samples of a diversity snapshot shown as an image grid (5 x 5, as the harness's grids)


class SampleGrid:
    """The fixed latent batch of a run and the picture of what G makes of it."""

    def __init__(self, gan, n: int = 25):
        g = torch.Generator().manual_seed(gan.cfg.seed + 1_000_003)
        self.z = torch.randn(n if gan.real is not None else 500, gan.cfg.latent_dim, generator=g)
        self.reference = None if gan.real is not None else data.TOYS[gan.cfg.dataset](500, g).numpy()

    def save(self, gan, step: int, folder: Path) -> Path:
        """The picture as a PNG file in ``folder`` (the run's ``samples/`` artifacts)."""
        x = self._generate(gan)
        path = folder / f"samples_step{step:06d}.png"
        if self.reference is None:
            figures.imsave(path, 1 - self._tiles(x), cmap="gray", vmin=0, vmax=1)
        else:
            fig = figures.scatter_samples(self.reference, x, f"step {step}")
            fig.savefig(path, dpi=80)
            figures.close(fig)
        return path

    def image(self, gan, saved: Path) -> np.ndarray:
        """The picture as uint8 pixels for ``mlflow.log_image``: the image grid (black digits on white, as
        the book draws them), or for the toys the scatter ``save`` wrote to ``saved``, read back rather than
        drawn twice (drawing it costs more than a toy's step)."""
        if self.reference is not None:
            from PIL import Image

            with Image.open(saved) as picture:
                return np.asarray(picture.convert("RGB"))
        return np.round(255 * (1 - self._tiles(self._generate(gan)))).astype(np.uint8)

    def _generate(self, gan) -> np.ndarray:
        with torch.no_grad():
            gan.G.eval()
            x = gan.g(self.z.to(gan.device)).cpu().numpy()
            gan.G.train()
        return x

    @staticmethod
    def _tiles(x: np.ndarray) -> np.ndarray:
        return tiles(x)


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
    """A diversity snapshot as uint8 pixels for ``mlflow.log_image``: its first ``GRID`` images as a grid,
    or, for samples of one or two coordinates (the toys, a user's 2-D data), all of them scattered over up
    to 500 of ``reference``'s points; None for anything else."""
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
