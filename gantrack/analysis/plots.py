"""Report figures, drawn from tidy frames (computing happens in oscillation/explain, not here)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .oscillation import acf, welch_psd  # noqa: E402

COLORS = {"loss/d_real": "tab:blue", "loss/d_fake": "tab:orange", "loss/g": "tab:green"}


def png_bytes(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def run_panels(wide: pd.DataFrame, spectrum: pd.DataFrame, title: str, implied: tuple | None,
               burn_in_step: float) -> plt.Figure:
    """Six panels for one run: book-style losses and accuracies, implied probabilities,
    PSD and ACF of d_fake vs g, and g's transfer gain on d_fake against the gain law."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    steps = wide.index.to_numpy()
    ax = axes[0, 0]
    for key, label in (("loss/d_real", "d_real (d1)"), ("loss/d_fake", "d_fake (d2)"), ("loss/g", "g")):
        if key in wide:
            ax.plot(steps, wide[key], lw=0.7, label=label, color=COLORS[key])
    ax.set(title="losses (book style)", xlabel="step")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for key in ("acc/real", "acc/fake"):
        if key in wide:
            ax.plot(steps, wide[key], lw=0.7, label=key)
    ax.set(title="discriminator accuracy", xlabel="step", ylim=(-0.05, 1.05))
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    if implied is not None:
        s, p_hat, q_hat = implied
        ax.plot(s, p_hat, lw=0.7, color=COLORS["loss/d_fake"], label="p̂ = 1 - exp(-d_fake)")
        ax.plot(s, q_hat, lw=0.7, color=COLORS["loss/g"], label="q̂ = exp(-g)")
        ax.legend(fontsize=7)
    ax.set(title="implied D(G(z))", xlabel="step")
    post = wide[wide.index >= burn_in_step]
    ax_psd, ax_acf = axes[1, 0], axes[1, 1]
    for key in ("loss/d_fake", "loss/g"):
        if key not in post or post[key].notna().sum() < 16:
            continue
        x = post[key].interpolate(limit_direction="both").to_numpy()
        x = x - np.polyval(np.polyfit(np.arange(len(x)), x, 1), np.arange(len(x)))
        f, p = welch_psd(x, 1, min(256, len(x)))
        ax_psd.semilogy(f[1:], p[1:], lw=0.8, color=COLORS[key], label=key)
        lags = min(50, len(x) - 1)
        ax_acf.plot(np.arange(lags + 1), acf(x, lags), lw=0.8, color=COLORS[key], label=key)
    ax_psd.set(title="Welch PSD (detrended)", xlabel="cycles / step")
    ax_psd.legend(fontsize=7)
    ax_acf.axhline(0, color="k", lw=0.5)
    ax_acf.set(title="autocorrelation", xlabel="lag (steps)")
    ax_acf.legend(fontsize=7)
    ax = axes[1, 2]
    sp = spectrum.iloc[1:]
    ax.semilogy(sp["frequency"], sp["transfer_gain"], lw=0.8, label="|CSD| / PSD(d_fake)")
    if np.isfinite(sp["predicted_gain"].iloc[0]):
        ax.axhline(sp["predicted_gain"].iloc[0], color="k", ls="--", lw=0.8, label="gain law")
    ax2 = ax.twinx()
    ax2.plot(sp["frequency"], sp["coherence"], color="tab:gray", lw=0.6, alpha=0.7)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("coherence", fontsize=8)
    ax.set(title="transfer gain of g on d_fake", xlabel="cycles / step")
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predicted_vs_measured(summary: pd.DataFrame) -> plt.Figure:
    """Gain-law prediction against the measured link factor, one point per run, with CIs."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    s = summary.dropna(subset=["link", "predicted_link"])
    hue = s["loss"] if "loss" in s else None
    sns.scatterplot(data=s, x="predicted_link", y="link", hue=hue, style=s.get("scenario"), ax=ax, s=50)
    ax.errorbar(s["predicted_link"], s["link"], yerr=[s["link"] - s["link_lo"], s["link_hi"] - s["link"]],
                fmt="none", ecolor="gray", lw=0.8, zorder=0)
    vals = np.r_[s["link_lo"], s["link_hi"], s["predicted_link"]]
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lim = [min(0.5, vals.min() / 1.5) if len(vals) else 0.5, max(2.0, vals.max() * 1.5) if len(vals) else 2.0]
    ax.plot(lim, lim, "k--", lw=0.8, label="measured = predicted")
    ax.set_xscale("log")  # gains span orders of magnitude once D(G(z)) saturates
    ax.set_yscale("log")
    ax.set(xlim=lim, ylim=lim, xlabel="predicted link gain |g'(p̄)| / |d_fake'(p̄)|",
           ylabel="measured link factor (95% CI)", title="gain law: predicted vs measured")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def factor_bars(factors: pd.DataFrame) -> plt.Figure:
    """Decomposition factors per run (tidy: run label, factor, estimate, lo, hi)."""
    f = factors[factors["factor"].isin(["total", "link", "timing", "sampling"])].copy()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * f["label"].nunique() + 4), 4))
    sns.barplot(data=f, x="label", y="estimate", hue="factor", ax=ax)
    ax.axhline(1, color="k", lw=0.6)
    ax.set_yscale("log")  # factors multiply: equal distances above and below 1 mean equal effects
    ax.set(xlabel="", ylabel="std ratio (log scale)", title="std(g)/std(d_fake) = link × timing × sampling")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
