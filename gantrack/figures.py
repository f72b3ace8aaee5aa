"""Figures drawn during and after training (book-style curves, sample grids).

Plotting only: callers pass arrays, these functions return matplotlib figures. They build
``matplotlib.figure.Figure`` objects directly, never through pyplot: no display is needed, nothing is
registered with pyplot's figure manager, and the process's backend (a notebook's inline plots) is
left as it was.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from . import contract as C


def book_plots(steps: np.ndarray, curves: dict[str, np.ndarray]):
    """Chapter 10's plot_history: losses d1/d2/g on top, accuracies below."""
    fig = Figure(figsize=(8, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for key, label in ((C.D_REAL, "d-real"), (C.D_FAKE, "d-fake"), (C.G_LOSS, "gen")):
        if key in curves:
            ax1.plot(steps, curves[key], label=label, lw=0.8)
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in ((C.ACC_REAL, "acc-real"), (C.ACC_FAKE, "acc-fake")):
        if key in curves:
            ax2.plot(steps, curves[key], label=label, lw=0.8)
    ax2.set_ylabel("accuracy")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    return fig


def scatter_samples(real: np.ndarray, fake: np.ndarray, title: str = ""):
    """Real vs generated points for the 1-D/2-D toys (first two coordinates)."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    if real.shape[1] == 1:
        real = np.c_[real, np.zeros(len(real))]
        fake = np.c_[fake, np.zeros(len(fake))]
    # generated first and translucent, the data on top: where G's points pile onto the data (or spread over
    # it, as WGAN-GP's do early), the modes must still show
    ax.scatter(fake[:, 0], fake[:, 1], s=4, c="tab:red", alpha=0.35, linewidths=0, label="generated", zorder=1)
    ax.scatter(real[:, 0], real[:, 1], s=6, c="tab:blue", label="real", zorder=2)
    for handle in ax.legend().legend_handles:
        handle.set_alpha(1)  # the legend's markers opaque, whatever the points' alpha
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    """Release a figure's drawing state (pyplot never held it)."""
    fig.clear()
