"""Report figures, drawn from tidy frames (computing happens in oscillation/explain, not here)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .. import contract as C

COLORS = {C.D_REAL: "tab:blue", C.D_FAKE: "tab:orange", C.G_LOSS: "tab:green"}


def png_bytes(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    fig.clear()
    return buf.getvalue()


def run_panels(
    wide: pd.DataFrame,
    spectrum: pd.DataFrame,
    curves: pd.DataFrame,
    title: str,
    implied: tuple | None,
    family: str = "nsgan",
) -> Figure:
    """Six panels for one run: book-style losses and accuracies, implied probabilities (a critic's
    Wasserstein estimate for WGAN-GP, where there is no probability space), and the PSD, ACF and transfer
    gain that ``explain`` computed (``curves``, ``spectrum``); the burn-in is shaded."""
    fig = Figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3)
    steps = wide.index.to_numpy()
    first = curves["first_step"].iloc[0] if len(curves) else steps.min()
    ax = axes[0, 0]
    for key, label in ((C.D_REAL, "d_real (d1)"), (C.D_FAKE, "d_fake (d2)"), (C.G_LOSS, "g")):
        if key in wide:
            ax.plot(steps, wide[key], lw=0.7, label=label, color=COLORS[key])
    ax.axvspan(steps.min(), first, color="0.9", zorder=0, label="burn-in")
    ax.set(title="losses (book style)", xlabel="step")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for key in (C.ACC_REAL, C.ACC_FAKE):
        if key in wide:
            ax.plot(steps, wide[key], lw=0.7, label=key)
    ax.set(title="discriminator accuracy", xlabel="step", ylim=(-0.05, 1.05))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax = axes[0, 2]
    if implied is not None:
        s, p_hat, q_hat = implied
        ax.plot(s, p_hat, lw=0.7, color=COLORS[C.D_FAKE], label="p̂ = 1 - exp(-d_fake)")
        ax.plot(s, q_hat, lw=0.7, color=COLORS[C.G_LOSS], label="q̂ = exp(-g)")
        ax.legend(fontsize=7)
        ax.set(title="implied D(G(z))", xlabel="step")
    elif family == "wgan-gp" and {C.D_REAL, C.D_FAKE} <= set(wide):
        # the critic's estimate of the Wasserstein distance: mean C(x) - mean C(G(z)) = -d_real - d_fake
        ax.plot(steps, -wide[C.D_REAL] - wide[C.D_FAKE], lw=0.7, color="k", label="W estimate")
        if C.GP_LOSS in wide:
            ax.plot(steps, wide[C.GP_LOSS], lw=0.7, color="tab:red", label="gradient penalty")
        ax.legend(fontsize=7)
        ax.set(title="critic: Wasserstein estimate", xlabel="step")
    elif family == "hinge" and C.MARGIN_FAKE in wide:
        for key, label in ((C.MARGIN_FAKE, "fakes: 1 + C > 0"), (C.MARGIN_REAL, "reals: 1 - C > 0")):
            if key in wide:
                ax.plot(steps, wide[key], lw=0.7, label=label)
        ax.legend(fontsize=7)
        ax.set(title="hinge: share inside the margin (the losses move)", xlabel="step", ylim=(-0.05, 1.05))
    else:
        ax.text(0.5, 0.5, f"{family}: no probability space", ha="center", va="center", transform=ax.transAxes)
        ax.set(title="implied D(G(z))", xlabel="step")
    ax_psd, ax_acf = axes[1, 0], axes[1, 1]
    for key, c in curves.groupby("key", sort=False):
        psd, acf_ = c[c["kind"] == "psd"], c[c["kind"] == "acf"]
        ax_psd.semilogy(psd["x"], psd["y"], lw=0.8, color=COLORS.get(key), label=key)
        ax_acf.plot(acf_["x"], acf_["y"], lw=0.8, color=COLORS.get(key), label=key)
    ax_psd.set(title="Welch PSD (detrended, after burn-in)", xlabel="cycles / step")
    ax_psd.legend(fontsize=7)
    ax_acf.axhline(0, color="k", lw=0.5)
    ax_acf.set(title="autocorrelation", xlabel="lag (steps)")
    ax_acf.legend(fontsize=7)
    ax = axes[1, 2]
    sp = spectrum.iloc[1:]
    ax.semilogy(sp["frequency"], sp["transfer_gain"], lw=0.8, label="|CSD| / PSD(d_fake)")
    if np.isfinite(sp["predicted_gain"].iloc[0]):
        ax.axhline(sp["predicted_gain"].iloc[0], color="k", ls="--", lw=0.8, label="law (link)")
    ax2 = ax.twinx()
    ax2.plot(sp["frequency"], sp["coherence"], color="tab:gray", lw=0.6, alpha=0.7)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("coherence", fontsize=8)
    ax.set(title="transfer gain of g on d_fake", xlabel="cycles / step")
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def answer_figure(wide: pd.DataFrame, implied_curves: tuple | None, title: str, family: str = "nsgan") -> Figure:
    """The question in one figure: d_fake and g as the book plots them, beside the same two curves
    mapped back to the D(G(z)) they imply (p̂ from d_fake, q̂ from g) where the family has one."""
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 2)
    steps = wide.index.to_numpy()
    d_label, g_label = C.CURVE_LABELS.get(family, ("d_fake", "g"))
    for key, label in ((C.D_FAKE, f"d_fake = {d_label}"), (C.G_LOSS, f"g = {g_label}")):
        if key in wide:
            axes[0].plot(steps, wide[key], lw=0.8, color=COLORS[key], label=label)
    axes[0].set(title="losses, as the book plots them", xlabel="step")
    axes[0].legend(fontsize=8)
    if implied_curves is not None:
        s, p_hat, q_hat = implied_curves
        axes[1].plot(s, p_hat, lw=0.8, color=COLORS[C.D_FAKE], label="p̂ from d_fake (D's batch, before its update)")
        axes[1].plot(s, q_hat, lw=0.8, color=COLORS[C.G_LOSS], label="q̂ from g (G's batch, after)")
        axes[1].set_ylim(0, 1)
        axes[1].legend(fontsize=8)
        axes[1].set(title="the same curves in probability space", xlabel="step", ylabel="implied D(G(z))")
    else:
        axes[1].text(0.5, 0.5, f"{family}: D's output is no probability", ha="center", va="center")
        axes[1].set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def predicted_vs_measured(summary: pd.DataFrame) -> Figure:
    """The law (and the simple (1-p̄)/p̄ baseline) against the measured link factor, one point per run."""
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    s = summary.dropna(subset=["link"])
    yerr = [s["link"] - s["link_lo"], s["link_hi"] - s["link"]]
    for col, marker, name in (
        ("predicted_link_simple", "x", "simple law (1-p̄)/p̄"),
        ("predicted_link", "o", "law (per-sample scores)"),
    ):
        if col in s and s[col].notna().any():
            ax.errorbar(s[col], s["link"], yerr=yerr, fmt=marker, ms=6, lw=0.6, capsize=2, label=name)
    vals = np.r_[
        s["link_lo"],
        s["link_hi"],
        s.get("predicted_link", pd.Series(dtype=float)),
        s.get("predicted_link_simple", pd.Series(dtype=float)),
    ].astype(float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lim = [min(0.5, vals.min() / 1.5) if len(vals) else 0.5, max(2.0, vals.max() * 1.5) if len(vals) else 2.0]
    ax.plot(lim, lim, "k--", lw=0.8, label="measured = predicted")
    ax.fill_between(lim, [v / 1.15 for v in lim], [v * 1.15 for v in lim], color="gray", alpha=0.15, label="±15 %")
    ax.set_xscale("log")  # gains span orders of magnitude once D(G(z)) saturates
    ax.set_yscale("log")
    ax.set(
        xlim=lim,
        ylim=lim,
        xlabel="predicted link",
        ylabel="measured link factor (95% CI)",
        title="link: predicted vs measured",
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def factor_bars(factors: pd.DataFrame) -> Figure:
    """Decomposition factors per run (tidy: run label, factor, estimate)."""
    f = factors[factors["factor"].isin(["link", "context", "timing", "sampling"])].dropna(subset=["estimate"])
    fig = Figure(figsize=(min(14, max(6, 0.5 * f["label"].nunique() + 4)), 4))
    ax = fig.subplots()
    if f.empty:  # runs without probe cells (another loop's): nothing to split
        ax.text(
            0.5,
            0.5,
            "no probe cells logged: the factors cannot be measured",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    sns.barplot(data=f, x="label", y="estimate", hue="factor", ax=ax)
    ax.axhline(1, color="k", lw=0.6)
    ax.set_yscale("log")  # factors multiply: equal distances above and below 1 mean equal effects
    ax.set(xlabel="", ylabel="std ratio (log scale)", title="std(g)/std(d_fake) = link × context × timing × sampling")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
