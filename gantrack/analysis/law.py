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
    dd, = torch.autograd.grad(d.sum(), t, retain_graph=True)
    dg, = torch.autograd.grad(g.sum(), t)
    return d.detach().numpy(), g.detach().numpy(), dd.numpy(), dg.numpy()


def moments(fam: LossFamily, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per step: μ (mean score), s (sd, ddof 0), and the sensitivities a_μ, a_s (d_fake), b_μ, b_s (g)."""
    scores = np.asarray(scores, dtype=np.float64)
    mu = scores.mean(axis=1)
    s = scores.std(axis=1)
    z = (scores - mu[:, None]) / np.where(s > 0, s, 1.0)[:, None]
    _, _, dd, dg = per_sample_losses(fam, scores)
    return {"mu": mu, "s": s, "a_mu": dd.mean(axis=1), "a_s": (dd * z).mean(axis=1),
            "b_mu": dg.mean(axis=1), "b_s": (dg * z).mean(axis=1), "p": fam.output(torch.as_tensor(scores)).numpy().mean(axis=1)}


def _cov(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Covariance along the last axis (ddof 1), vectorised over leading (bootstrap) axes."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    return (xc * yc).sum(axis=-1) / (x.shape[-1] - 1)


def predicted_var(c_mu, c_s, mu, s) -> np.ndarray:
    """c_μ² V_μ + c_s² V_s + 2 c_μ c_s C (arrays: coefficients (...), series (..., n))."""
    return c_mu ** 2 * _cov(mu, mu) + c_s ** 2 * _cov(s, s) + 2 * c_mu * c_s * _cov(mu, s)


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
        return {"predicted": np.sqrt(var_g / var_d), "p_bar": g["p"].mean(axis=-1), "a_mu": a_mu, "a_s": a_s,
                "b_mu": b_mu, "b_s": b_s, "sd_mu": np.sqrt(v_mu), "sd_s": np.sqrt(v_s), "corr_mu_s": corr,
                # what carries g's predicted variance: the common shift, the spread, their covariance
                "g_share_shift": b_mu ** 2 * v_mu / var_g, "g_share_spread": b_s ** 2 * v_s / var_g,
                "g_share_cov": 2 * b_mu * b_s * _cov(g["mu"], g["s"]) / var_g}


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
    slow = signal.sosfiltfilt(sos, x, axis=-1)
    return slow, x - slow
