"""The link law: predict std(g)/std(d_fake) from how D's scores move, not from g and d_fake.

Write D's raw scores on a probe batch at step t as ℓ_ti = μ_t + s_t·z_ti (μ_t the batch mean,
s_t the batch standard deviation, z standardised). Both batch losses are means of per-sample
functions of ℓ — d_fake_t = mean_i f(ℓ_ti), g_t = mean_i h(ℓ_ti) (for the book's loss f = softplus,
h = softplus(-·)) — so to first order in the step-to-step moves δμ_t and δs_t (the delta method):

    δd_fake_t ≈ a_μ δμ_t + a_s δs_t        a_μ = mean_i f'(ℓ_i),  a_s = mean_i f'(ℓ_i) z_i
    δg_t      ≈ b_μ δμ_t + b_s δs_t        b_μ = mean_i h'(ℓ_i),  b_s = mean_i h'(ℓ_i) z_i

with the coefficients averaged over steps (the operating point). Hence

    var(d_fake) ≈ a_μ² V_μ + a_s² V_s + 2 a_μ a_s C        var(g) ≈ b_μ² V_μ + b_s² V_s + 2 b_μ b_s C

where V_μ, V_s are the variances of the common logit shift and of the spread across steps and C
their covariance. The predicted link is sqrt(var(g)/var(d_fake)) on D's batch (cell
``dbatch_before``); the predicted total ratio takes var(g) from G's batch as G saw it
(``gbatch_after``). For the book's loss a_μ = p̄ and b_μ = -(1 - p̄), so a pure common shift gives
(1 - p̄)/p̄ — the simple law — exactly; and a_s = b_s (= cov(p_i, z_i)), so a change of spread moves
d_fake and g the *same* way: when D grows more confident (μ down) while its scores fan out (s up),
the two moves add in g and cancel in d_fake, and the link exceeds (1 - p̄)/p̄.

The named quantities are p̄ (operating point), a_s (spread sensitivity), V_μ, V_s and corr(μ, s);
none contains g or d_fake. ``gaussian`` is a diagnostic, not the law: the links applied exactly to a
Gaussian of mean μ_t and sd s_t (Gauss-Hermite, 32 nodes) — where it matches and the linear law does
not, the operating point moves too far for a first-order law.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import signal

from ..losses import LossFamily


def per_sample_losses(fam: LossFamily, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-sample d_fake, g and their derivatives with respect to the raw score (float64, autograd)."""
    t = torch.as_tensor(np.asarray(scores, dtype=np.float64)).requires_grad_(True)
    out = fam.output(t)
    d, g = fam.d_fake(out), fam.g(out)
    (dd,) = torch.autograd.grad(d.sum(), t, retain_graph=True)
    (dg,) = torch.autograd.grad(g.sum(), t)
    return d.detach().numpy(), g.detach().numpy(), dd.numpy(), dg.numpy()


def moments(fam: LossFamily, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per step: μ (mean score), s (sd, ddof 0), and the sensitivities a_μ, a_s (d_fake), b_μ, b_s (g)."""
    scores = np.asarray(scores, dtype=np.float64)
    mu = scores.mean(axis=1)
    s = scores.std(axis=1)
    z = (scores - mu[:, None]) / np.where(s > 0, s, 1.0)[:, None]
    _, _, dd, dg = per_sample_losses(fam, scores)
    return {
        "mu": mu,
        "s": s,
        "a_mu": dd.mean(axis=1),
        "a_s": (dd * z).mean(axis=1),
        "b_mu": dg.mean(axis=1),
        "b_s": (dg * z).mean(axis=1),
        "p": fam.output(torch.as_tensor(scores)).numpy().mean(axis=1),
    }


def _cov(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Covariance along the last axis (ddof 1), vectorised over leading (bootstrap) axes."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    return (xc * yc).sum(axis=-1) / (x.shape[-1] - 1)


def predicted_var(c_mu, c_s, mu, s) -> np.ndarray:
    """c_μ² V_μ + c_s² V_s + 2 c_μ c_s C (arrays: coefficients (...), series (..., n))."""
    return c_mu**2 * _cov(mu, mu) + c_s**2 * _cov(s, s) + 2 * c_mu * c_s * _cov(mu, s)


def law_terms(m_d: dict, m_g: dict, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The law's named quantities and predictions from the moments of the d_fake cell (``m_d``) and
    of the g cell (``m_g``; the same dict for the link). ``idx``: (n_boot, n) bootstrap indices."""
    take = (lambda a: a[idx]) if idx is not None else (lambda a: a)
    d = {k: take(v) for k, v in m_d.items()}
    g = {k: take(v) for k, v in m_g.items()}
    a_mu, a_s = d["a_mu"].mean(axis=-1), d["a_s"].mean(axis=-1)
    b_mu, b_s = g["b_mu"].mean(axis=-1), g["b_s"].mean(axis=-1)
    var_d = predicted_var(a_mu, a_s, d["mu"], d["s"])
    var_g = predicted_var(b_mu, b_s, g["mu"], g["s"])
    v_mu, v_s = _cov(g["mu"], g["mu"]), _cov(g["s"], g["s"])
    with np.errstate(all="ignore"):
        corr = _cov(g["mu"], g["s"]) / np.sqrt(v_mu * v_s)
        return {
            "predicted": np.sqrt(var_g / var_d),
            "p_bar": g["p"].mean(axis=-1),
            "a_mu": a_mu,
            "a_s": a_s,
            "b_mu": b_mu,
            "b_s": b_s,
            "sd_mu": np.sqrt(v_mu),
            "sd_s": np.sqrt(v_s),
            "corr_mu_s": corr,
            # what carries g's predicted variance: the common shift, the spread, their covariance
            "g_share_shift": b_mu**2 * v_mu / var_g,
            "g_share_spread": b_s**2 * v_s / var_g,
            "g_share_cov": 2 * b_mu * b_s * _cov(g["mu"], g["s"]) / var_g,
        }


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def gaussian_losses(fam: LossFamily, mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batch d_fake and g if each step's scores were Gaussian N(μ_t, s_t²) (Gauss-Hermite quadrature)."""
    x = torch.as_tensor(mu[:, None] + s[:, None] * _NODES[None, :])
    out = fam.output(x)
    return (fam.d_fake(out).numpy() @ _WEIGHTS, fam.g(out).numpy() @ _WEIGHTS)


def band_split(x: np.ndarray, period: float = 16.0, spacing: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(slow, fast): a 4th-order Butterworth low-pass at ``period`` steps, zero-phase (sosfiltfilt);
    fast = x − slow. Works along the last axis."""
    cutoff = 1.0 / period
    nyquist = 0.5 / spacing
    if cutoff >= nyquist:
        return x - x.mean(axis=-1, keepdims=True), np.zeros_like(x)
    sos = signal.butter(4, cutoff, btype="lowpass", fs=1.0 / spacing, output="sos")
    # scipy's default padding (3 × (2 sections + 1)) needs a longer series than a short run may have
    slow = signal.sosfiltfilt(sos, x, axis=-1, padlen=min(3 * (2 * len(sos) + 1), x.shape[-1] - 1))
    return slow, x - slow


_U, _UW = np.polynomial.hermite_e.hermegauss(16)
_UW = _UW / _UW.sum()


def moment_law(fam: LossFamily, mean_mu, mean_s, sd_mu, sd_s, corr, with_means: bool = False) -> tuple:
    """std(d_fake) and std(g) from five numbers: the operating point (mean score μ̄ and mean spread s̄),
    how far the common shift swings (sd_μ), how far the spread swings (sd_s) and their correlation.

    The shift and the spread are taken as jointly Gaussian across steps and each batch's scores as
    Gaussian within the step; the links are applied exactly (Gauss-Hermite: 16 × 16 nodes across
    steps, 32 within a batch), so the moving operating point — where the gain (1-p)/p changes along
    the swing — is part of the law, not a correction to it. Inputs broadcast (bootstrap replicates).
    """
    shape = np.broadcast(mean_mu, mean_s, sd_mu, sd_s, corr).shape
    mm, ms, su, ss, rho = (
        np.broadcast_to(np.asarray(a, dtype=np.float64), shape)[..., None, None]
        for a in (mean_mu, mean_s, sd_mu, sd_s, corr)
    )
    rho = np.nan_to_num(np.clip(rho, -1.0, 1.0))
    u1, u2 = _U[:, None], _U[None, :]
    mu = mm + su * u1
    s = np.maximum(ms + ss * (rho * u1 + np.sqrt(1 - rho**2) * u2), 0.0)
    x = torch.as_tensor(mu[..., None] + s[..., None] * _NODES)
    out = fam.output(x)
    d = fam.d_fake(out).numpy() @ _WEIGHTS  # batch means given (μ, s)
    g = fam.g(out).numpy() @ _WEIGHTS
    w = _UW[:, None] * _UW[None, :]

    def mean_std(v):
        m = (v * w).sum(axis=(-2, -1))
        return m, np.sqrt(np.maximum(((v - m[..., None, None]) ** 2 * w).sum(axis=(-2, -1)), 0.0))

    (md, sdd), (mg, sdg) = mean_std(d), mean_std(g)
    return (sdd, sdg, md, mg) if with_means else (sdd, sdg)


def window_numbers(
    mu: np.ndarray,
    s: np.ndarray,
    windows: int,
    idx: np.ndarray | None = None,
    swing: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[tuple]:
    """Per window of the run (``windows`` equal spans of steps): its share of the steps and its five
    numbers (mean score, mean spread, sd of the shift, sd of the spread, their correlation).

    ``swing``: other series (e.g. one frequency band of μ and s) whose within-window spread stands for
    the swings, the window means still coming from ``mu`` and ``s``. With bootstrap ``idx`` each
    resampled step keeps the window it came from."""
    n = mu.shape[-1]
    wid = np.minimum((np.arange(n) * windows) // n, windows - 1)
    sw_mu, sw_s = swing if swing is not None else (mu, s)
    if idx is not None:
        mu, s, sw_mu, sw_s, wid = mu[idx], s[idx], sw_mu[idx], sw_s[idx], wid[idx]
    out = []
    for w in range(windows):
        mask = (wid == w).astype(np.float64)
        cnt = mask.sum(axis=-1)
        with np.errstate(all="ignore"):
            m_mu, m_s = (mu * mask).sum(axis=-1) / cnt, (s * mask).sum(axis=-1) / cnt
            dmu = (sw_mu - ((sw_mu * mask).sum(axis=-1) / cnt)[..., None]) * mask
            ds = (sw_s - ((sw_s * mask).sum(axis=-1) / cnt)[..., None]) * mask
            v_mu, v_s = (dmu**2).sum(axis=-1) / cnt, (ds**2).sum(axis=-1) / cnt
            corr = np.nan_to_num((dmu * ds).sum(axis=-1) / cnt / np.sqrt(v_mu * v_s))
            out.append(
                (
                    cnt / n,
                    np.nan_to_num(m_mu),
                    np.nan_to_num(m_s),
                    np.sqrt(np.nan_to_num(v_mu)),
                    np.sqrt(np.nan_to_num(v_s)),
                    corr,
                )
            )
    return out


def windowed_law(
    fam: LossFamily,
    mu: np.ndarray,
    s: np.ndarray,
    windows: int = 4,
    idx: np.ndarray | None = None,
    swing: tuple[np.ndarray, np.ndarray] | None = None,
    between: bool = True,
    only: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """std(d_fake), std(g) from ``windows`` sets of five numbers: the run as stationary stretches.

    Within a window the shift and the spread swing as in ``moment_law``; across windows the operating
    point may move (a run that settles, a collapse). The total variance is the windows' mean variance
    plus, with ``between``, the variance of their means (the law of total variance), weighted by their
    shares of steps. ``only="shift"`` / ``"spread"``: the counterfactual with the other not swinging.
    """
    parts = window_numbers(mu, s, windows, idx, swing)
    stats = []
    for share, m_mu, m_s, sd_mu, sd_s, corr in parts:
        if only == "shift":
            sd_s = np.zeros_like(sd_s)
        elif only == "spread":
            sd_mu = np.zeros_like(sd_mu)
        stats.append((share, *moment_law(fam, m_mu, m_s, sd_mu, sd_s, corr, with_means=True)))
    res = []
    for k in (0, 1):  # d_fake, g
        mean = sum(share * st[2 + k] for share, *st in stats)
        var = sum(share * (st[k] ** 2 + (between * (st[2 + k] - mean)) ** 2) for share, *st in stats)
        res.append(np.sqrt(var))
    return res[0], res[1]
