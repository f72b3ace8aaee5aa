"""Figures drawn during and after training (book-style curves, sample grids).

Plotting only: callers pass arrays, these functions return matplotlib figures.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def book_plots(steps: np.ndarray, curves: dict[str, np.ndarray]):
    """Chapter 10's plot_history: losses d1/d2/g on top, accuracies below."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, label in (("loss/d_real", "d-real"), ("loss/d_fake", "d-fake"), ("loss/g", "gen")):
        if key in curves:
            ax1.plot(steps, curves[key], label=label, lw=0.8)
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("acc/real", "acc-real"), ("acc/fake", "acc-fake")):
        if key in curves:
            ax2.plot(steps, curves[key], label=label, lw=0.8)
    ax2.set_ylabel("accuracy")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    return fig


def scatter_samples(real: np.ndarray, fake: np.ndarray, title: str = ""):
    """Real vs generated points for the 1-D/2-D toys (first two coordinates)."""
    fig, ax = plt.subplots(figsize=(4, 4))
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
    plt.close(fig)
