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
    ax.scatter(real[:, 0], real[:, 1], s=4, c="tab:blue", label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=4, c="tab:red", label="generated")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    """Release a figure's drawing state (pyplot never held it)."""
    fig.clear()
