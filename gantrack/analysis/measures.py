"""Oscillation measures of metric series: level, spectrum, autocorrelation, pairs, bootstrap CIs.

Input: the long metrics frame of ``load_runs`` (run_id, key, step, timestamp, value).
Output: tidy frames, one row per (run_id, key) or per (run_id, x, y).

Preprocessing (``prepare``), with its defaults:

- the latest row per (run, key, step) is kept (MLflow stores re-logged steps as extra rows);
- ``burn_in=0.1``: the first 10 % of the steps are dropped (an int drops that many steps);
- steps are put on a regular grid whose spacing is the gcd of the step differences
  (a run logged every k steps is analysed in steps, not samples); non-finite values count as
  missing. Missing grid points are filled by linear interpolation **only** when they are at most
  ``max_missing=0.05`` of the grid — their number is reported in ``n_filled``; beyond that the
  series gets NaN measures and a ``reason``;
- ``detrend="linear"`` (or ``"constant"``, ``"none"``) before spectra and autocorrelation;
  ``highpass`` (cycles/step, e.g. 0.01) adds a zero-phase 4th-order Butterworth high-pass.
  Level measures (mean, std, cv, skew, kurtosis) use the values before detrending;
  ``std_detrended`` is the spread the spectral measures see.
- series shorter than ``min_length=32`` points, constant, or with no finite value get NaN measures
  and a ``reason``: never a silent number.

Estimators (each also documented at its function):

- Welch PSD (``scipy.signal.welch``): Hann window, ``nperseg=min(256, n)``, 50 % overlap,
  per-segment mean removal, one-sided density in (units²)/(cycles/step).
  ``total_power`` integrates it (≈ the detrended variance). The dominant frequency is the PSD's
  largest local maximum among the bins with at least ``MIN_CYCLES = 2`` cycles in the window (a slower
  "peak", or the falling edge of a trend's power, is not an oscillation), refined by a parabola through
  the log-PSD of its neighbours on a 4× zero-padded grid. ``peak_ratio`` divides that peak by a
  red-noise background: AR(1) red noise plus white noise, fitted to the PSD over the searched bins by
  Whittle's likelihood (docs/design.md §2: a raw argmax on drifting series picks the lowest bin; a
  background from the lag-1 autocorrelation alone is too flat for a random walk and has no white floor).
  ``peak_p`` tests the largest such ratio over the searched local maxima by a parametric bootstrap (a
  Monte Carlo test, as for red-noise spectra of climate series: Schulz & Mudelsee 2002): ``n_null=199``
  series of the fitted background, the same length and the same detrending, each refitted and normalised
  alike; p = (1 + #{null maxima ≥ observed}) / (1 + n_null), so its floor is 0.005. The max over bins
  makes the search's multiplicity part of the null (no Bonferroni), and the refit in every simulation
  carries the estimation and detrending biases: the test holds its level on AR(1), white-noise and
  random-walk backgrounds (``tests/test_oscillation.py`` counts rejections over many seeds).
  An AR(2) Yule-Walker fit gives ``ar2_period`` and the damping radius ``ar2_radius`` when its
  roots are complex. Band shares: low f < 0.05, mid 0.05 ≤ f < 0.25, high f ≥ 0.25 cycles/step
  (periods > 20, 4-20, < 4 steps: the last holds the D/G ping-pong of period ≈ 2).
  ``spectral_entropy`` is the Shannon entropy of the normalised PSD (DC excluded) over
  log(bins): 1 for a flat spectrum; ``spectral_flatness`` is geometric over arithmetic mean.
- ACF: the biased estimator (statsmodels ``acf(adjusted=False)``, here vectorised with an FFT);
  ``acf_first_zero`` the first lag with ACF ≤ 0; ``iat`` the integrated autocorrelation time by
  Geyer's initial monotone sequence (ArviZ's ESS core on the unsplit chain, within 1 % of ArviZ 0.23.4:
  tests/data/iat_reference.json; ArviZ's public ``ess`` also splits the chain), which measures zero-frequency power: an
  oscillating series can have ``iat`` < 1. ``ljungbox_p``: Ljung-Box Q at ``min(20, n // 5)``
  lags (it tests any autocorrelation, not oscillation, and rejects on any long drifting series).
- CIs: circular block bootstrap (Politis & Romano 1992; for the dominant period too, each resample's
  peak found as above), percentile 95 % intervals from
  ``n_boot=500`` resamples with a fixed ``seed``; block length
  ``max(ceil(n^(1/3)), ceil(3 × dominant period))`` capped at n // 4, so blocks span several
  periods; pairs are resampled jointly (same indices for both series).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import signal, stats

from .. import contract as C
from ..errors import GantrackError
from .columns import document
from .runs import dedupe

BANDS = (("low", 0.0, 0.05), ("mid", 0.05, 0.25), ("high", 0.25, 0.5000001))
MIN_CYCLES = 2  # a spectral peak needs this many cycles in the window to count as an oscillation
COLUMNS = {
    "run_id": "the run",
    "key": "the metric key",
    "n": "points analysed (after burn-in, on the regular grid)",
    "spacing": "grid spacing in steps (gcd of the logged step differences)",
    "n_filled": "grid points filled by linear interpolation",
    "mean": "mean of the raw values",
    "std": "standard deviation of the raw values (ddof=1)",
    "std_detrended": "standard deviation after detrending (what the spectral measures see)",
    "cv": "std / |mean|",
    "skew": "sample skewness of the raw values (scipy.stats.skew, biased)",
    "kurtosis": "excess kurtosis of the raw values (scipy.stats.kurtosis, Fisher, biased)",
    "total_power": "integral of the Welch PSD (≈ detrended variance)",
    "dominant_frequency": "the PSD's largest bin with ≥ 2 cycles in the window, parabola-refined (cycles/step)",
    "dominant_period": "1 / dominant_frequency (steps)",
    "period_lo": "lower bound of dominant_period's block-bootstrap CI (NaN if under half the resamples have a peak)",
    "period_hi": "upper bound of dominant_period's CI",
    "peak_ratio": "PSD at the peak over the red-noise background (AR(1) spectrum fitted to the PSD)",
    "peak_p": "Monte Carlo p-value of the largest ratio over the searched bins against AR(1) red noise",
    "ar2_period": "period of an AR(2) Yule-Walker fit when its roots are complex (steps)",
    "ar2_radius": "damping radius of that AR(2) fit (1 = undamped)",
    "power_low": "share of power at f < 0.05 cycles/step (periods > 20 steps)",
    "power_mid": "share of power at 0.05 ≤ f < 0.25 (periods 4-20 steps)",
    "power_high": "share of power at f ≥ 0.25 (periods < 4 steps: the D/G ping-pong)",
    "spectral_entropy": "Shannon entropy of the normalised PSD over log(bins) (1 = flat)",
    "spectral_flatness": "geometric over arithmetic mean of the PSD",
    "acf_lag1": "lag-1 autocorrelation (biased estimator)",
    "acf_first_zero": "first lag with ACF ≤ 0, up to max_lag (steps)",
    "iat": "integrated autocorrelation time, Geyer's initial monotone sequence",
    "ljungbox_p": "Ljung-Box p-value at min(20, n // 5) lags",
    "block_length": "block-bootstrap block length (steps)",
    "mean_lo": "lower bound of the mean's CI",
    "mean_hi": "upper bound of the mean's CI",
    "std_lo": "lower bound of the std's CI",
    "std_hi": "upper bound of the std's CI",
    "reason": "why the series could not be analysed (empty when it was)",
}
MEASURES = [c for c in COLUMNS if c not in ("run_id", "key", "reason")]


@dataclass
class Options:
    """Preprocessing and estimator settings (see the module docstring for what each does)."""

    burn_in: float = 0.1
    detrend: str = "linear"
    highpass: float | None = None
    max_missing: float = 0.05
    min_length: int = 32
    nperseg: int = 256
    max_lag: int = 50
    n_boot: int = 500
    ci: float = 0.95
    seed: int = 0
    n_null: int = 199  # AR(1) simulations behind each peak_p

    @classmethod
    def of(cls, **kw) -> Options:
        unknown = set(kw) - set(cls.__dataclass_fields__)
        if unknown:
            raise GantrackError(f"unknown oscillation option(s): {', '.join(sorted(unknown))}")
        opt = cls(**kw)
        if opt.detrend not in ("linear", "constant", "none"):
            raise GantrackError(f"detrend must be linear, constant or none, got {opt.detrend!r}")
        if not (0 <= opt.burn_in):
            raise GantrackError(f"burn_in must be >= 0, got {opt.burn_in}")
        if opt.highpass is not None and not (0 < opt.highpass < 0.5):
            raise GantrackError(f"highpass must be in (0, 0.5) cycles/step, got {opt.highpass}")
        if opt.min_length < 8 or opt.nperseg < 8 or opt.n_boot < 10 or not 0 < opt.ci < 1 or opt.n_null < 19:
            raise GantrackError("min_length and nperseg must be >= 8, n_boot >= 10, n_null >= 19, ci in (0, 1)")
        return opt


# --- preprocessing ------------------------------------------------------------------------------


@dataclass
class Series:
    """One prepared series: raw values on a regular grid, detrended copy, and bookkeeping."""

    run_id: str
    key: str
    steps: np.ndarray
    raw: np.ndarray
    x: np.ndarray  # detrended (and high-passed) values
    spacing: int
    n_filled: int


def burn_in_step(steps: np.ndarray, burn_in: float) -> float:
    """First step kept: ``burn_in`` ≥ 1 is a number of steps, < 1 a fraction of the logged span."""
    if burn_in >= 1:
        return steps.min() + int(burn_in)
    return steps.min() + burn_in * (steps.max() - steps.min())


def _grid(run_id, key, steps: np.ndarray, values: np.ndarray, opt: Options) -> tuple[Series | None, str]:
    finite = np.isfinite(values) & (np.abs(values) < 1e308)  # MLflow stores ±inf as ±1.797e308
    if not finite.any():
        return None, "no finite values"
    keep = steps >= burn_in_step(steps, opt.burn_in)
    steps, values, finite = steps[keep], values[keep], finite[keep]
    if finite.sum() < opt.min_length:
        return None, f"too short: {int(finite.sum())} finite points after burn-in (need {opt.min_length})"
    diffs = np.diff(steps)
    spacing = int(np.gcd.reduce(diffs)) if len(diffs) else 1
    grid = np.arange(steps[0], steps[-1] + 1, spacing)
    have = np.isin(grid, steps[finite])
    n_missing = int((~have).sum())
    if n_missing > opt.max_missing * len(grid):
        return None, f"too many missing steps: {n_missing} of {len(grid)} (max_missing={opt.max_missing})"
    raw = np.interp(grid, steps[finite], values[finite]) if n_missing else values[finite].astype(float)
    if np.ptp(raw) == 0:
        return None, "constant series"
    # the fourth moment (kurtosis) of |x| ~ 1e77 overflows float64: no honest variance, kurtosis or spectrum
    # (no loss of a run still learning is anywhere near; MLflow's ±inf is ±1.8e308)
    if np.abs(raw).max() > 1e75:
        return None, "values too large to analyse (|x| > 1e75)"
    if opt.detrend == "none":
        x = raw.copy()
    else:
        x = signal.detrend(raw, type=opt.detrend)
    if opt.highpass:
        sos = signal.butter(4, opt.highpass, btype="highpass", fs=1.0 / spacing, output="sos")
        x = signal.sosfiltfilt(sos, x)
    if x.std() <= 1e-12 * (np.abs(raw).mean() + raw.std()):
        return None, f"no variation left after detrend={opt.detrend!r} (a pure trend)"
    return Series(str(run_id), str(key), grid, raw, x, spacing, n_missing), ""


def prepare(metrics: pd.DataFrame, keys=None, opt: Options | None = None) -> tuple[list[Series], list[dict]]:
    """Prepared series and, for those that cannot be analysed, rows with their ``reason``."""
    opt = opt or Options()
    _check_frame(metrics)
    m = dedupe(metrics)
    if keys is not None:
        keys = [keys] if isinstance(keys, str) else list(keys)
        m = m[m["key"].isin(keys)]
    out, failed = [], []
    for (run_id, key), g in m.groupby(["run_id", "key"], sort=True, observed=True):
        s, reason = _grid(run_id, key, g["step"].to_numpy(), g["value"].to_numpy(dtype=float), opt)
        if s is None:
            failed.append({"run_id": str(run_id), "key": str(key), "reason": reason})
        else:
            out.append(s)
    if keys is not None:  # a key missing from some runs is reported for those runs
        present = set(zip(m["run_id"].astype(str), m["key"].astype(str)))
        for run_id in metrics["run_id"].astype(str).unique():
            for key in keys:
                if (run_id, key) not in present:
                    failed.append({"run_id": run_id, "key": key, "reason": "key not logged in this run"})
    return out, failed


def _check_frame(metrics) -> None:
    if not isinstance(metrics, pd.DataFrame):
        raise GantrackError(
            f"expected the long metrics DataFrame (run_id, key, step, value), got {type(metrics).__name__}"
        )
    missing = {"run_id", "key", "step", "value"} - set(metrics.columns)
    if missing:
        raise GantrackError(f"metrics frame lacks column(s): {', '.join(sorted(missing))}")
    if "timestamp" not in metrics.columns:
        raise GantrackError("metrics frame lacks column: timestamp")


# --- estimators (vectorised over rows of a 2-D array) ------------------------------------------


def acf(x: np.ndarray, nlags: int) -> np.ndarray:
    """Biased sample autocorrelation along the last axis (= statsmodels ``acf(adjusted=False)``)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    x = x - x.mean(axis=-1, keepdims=True)
    nfft = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, nfft, axis=-1)
    r = np.fft.irfft(f * np.conj(f), nfft, axis=-1)[..., : nlags + 1]
    return r / r[..., :1]


def iat_geyer(rho: np.ndarray) -> np.ndarray:
    """Integrated autocorrelation time τ = 1 + 2 Σ ρ_k by Geyer's (1992) initial monotone sequence.

    Pairs Γ_m = ρ_2m + ρ_2m+1 are summed up to the first negative pair, after forcing them to be
    non-increasing; τ = -1 + 2 Σ Γ_m. ``rho`` holds full-length ACFs along the last axis.
    """
    rho = np.atleast_2d(rho)
    m = rho.shape[-1] // 2
    gamma = rho[:, 0 : 2 * m : 2] + rho[:, 1 : 2 * m : 2]
    positive = np.cumprod(gamma > 0, axis=1).astype(bool)
    gamma = np.minimum.accumulate(np.where(positive, gamma, 0.0), axis=1)
    return -1.0 + 2.0 * gamma.sum(axis=1)


def ljung_box(rho: np.ndarray, n: int, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """Ljung-Box Q = n(n+2) Σ_{k≤lags} ρ_k²/(n-k) and its chi-square p-value (statsmodels' formula)."""
    k = np.arange(1, lags + 1)
    q = n * (n + 2) * np.sum(rho[..., 1 : lags + 1] ** 2 / (n - k), axis=-1)
    return q, stats.chi2.sf(q, lags)


def welch_psd(x: np.ndarray, spacing: int = 1, nperseg: int = 256, nfft: int | None = None):
    """Welch PSD along the last axis: Hann, 50 % overlap, per-segment mean removal, density per cycle/step."""
    n = x.shape[-1]
    seg = min(nperseg, n)
    return signal.welch(
        x,
        fs=1.0 / spacing,
        window="hann",
        nperseg=seg,
        noverlap=seg // 2,
        nfft=nfft or seg,
        detrend="constant",
        scaling="density",
        axis=-1,
    )


def searched(freq: np.ndarray, n: int, spacing: int = 1) -> np.ndarray:
    """The bins a peak may sit in: non-zero frequencies with at least ``MIN_CYCLES`` cycles in ``n`` samples."""
    return freq >= MIN_CYCLES / (n * spacing) - 1e-12


def local_maxima(psd: np.ndarray) -> np.ndarray:
    """Bins higher than the bin below and at least the bin above (the last bin: against the one below).
    The falling edge of a trend's low-frequency power is no peak, however high it stands."""
    up = np.zeros_like(psd, dtype=bool)
    up[:, 1:] = psd[:, 1:] > psd[:, :-1]
    down = np.ones_like(psd, dtype=bool)
    down[:, :-1] = psd[:, :-1] >= psd[:, 1:]
    return up & down


def peak_frequency(freq: np.ndarray, psd: np.ndarray, n: int | None = None, spacing: int = 1):
    """Frequency of the largest bin (non-zero; with ``n`` samples, only local maxima with ≥ ``MIN_CYCLES``
    cycles in the window), refined by a parabola through log-PSD neighbours; NaN where none is left."""
    ok = np.broadcast_to(freq > 0, psd.shape).copy()
    if n is not None:
        ok &= searched(freq, n, spacing)[None, :] & local_maxima(psd)
    found = ok.any(axis=1)
    i = np.argmax(np.where(ok, psd, -np.inf), axis=1)  # an index into freq
    lp = np.log(np.maximum(psd, 1e-300))
    rows = np.arange(len(psd))
    left = lp[rows, np.maximum(i - 1, 0)]
    mid = lp[rows, i]
    right = lp[rows, np.minimum(i + 1, psd.shape[1] - 1)]
    denom = left - 2 * mid + right
    interior = (i > 1) & (i < psd.shape[1] - 1) & (denom < 0)
    delta = np.where(interior, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    df = freq[1] - freq[0]
    return np.where(found, freq[i] + delta * df, np.nan), np.where(found, psd[rows, i], np.nan)


def ar2(x: np.ndarray) -> tuple[float, float]:
    """AR(2) by Yule-Walker: (period in samples, damping radius) when the roots are complex, else NaN."""
    from statsmodels.regression.linear_model import yule_walker

    with warnings.catch_warnings():  # statsmodels 0.15 warns about its future return type
        warnings.simplefilter("ignore", FutureWarning)
        (a1, a2), _ = yule_walker(x, order=2, method="mle")[:2]
    if a1 * a1 + 4 * a2 >= 0 or a2 >= 0:
        return math.nan, math.nan
    radius = math.sqrt(-a2)
    cos_w = a1 / (2 * radius)
    if not -1.0 < cos_w < 1.0:  # a real-valued limit: no finite period
        return math.nan, math.nan
    return 2 * math.pi / math.acos(cos_w), radius


def block_indices(n: int, block: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Circular block bootstrap index matrix (n_boot, n): random starts, blocks wrap around."""
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(n_boot, -1)[:, :n]


def percentile_interval(boot: np.ndarray, alpha: float) -> tuple[float, float]:
    """The bootstrap percentile interval (Efron & Tibshirani 1993, ch. 13) of ``boot``'s finite values:
    resamples with no value (NaN: a flat stretch has no correlation, a zero swing no ratio) are left out;
    (NaN, NaN) when none has one."""
    boot = np.asarray(boot, dtype=float)
    if not np.isfinite(boot).any():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(boot, [alpha, 1 - alpha])
    return float(lo), float(hi)


def series_rng(seed: int, *names: str) -> np.random.Generator:
    """The bootstrap's random stream for one series (or pair): from the seed and the series' names,
    so a run's intervals do not depend on which other runs are in the frame, or in what order."""
    import zlib

    return np.random.default_rng([seed, *(zlib.crc32(str(n).encode()) for n in names)])


def block_length(n: int, period: float) -> int:
    """Bootstrap block length: max(n^(1/3), 3 periods), capped at n // 4 (in samples)."""
    b = max(math.ceil(n ** (1 / 3)), math.ceil(3 * period) if np.isfinite(period) else 0)
    return int(max(1, min(b, n // 4)))


def period_and_block(x: np.ndarray, spacing: int, nperseg: int) -> tuple[float, int]:
    """Dominant period of a detrended series (in samples) and the bootstrap block length it implies."""
    seg = min(nperseg, len(x))
    fpk, _ = peak_frequency(*welch_psd(x[None, :], spacing, seg, nfft=4 * seg), n=len(x), spacing=spacing)
    period = 1.0 / fpk[0] / spacing if fpk[0] > 0 else np.nan
    return period, block_length(len(x), period)


R_GRID = np.tanh(np.linspace(np.arctanh(-0.5), np.arctanh(0.999), 60))  # AR(1) coefficients the fit tries
WHITE_GRID = np.concatenate([[0.0], np.geomspace(0.002, 0.98, 23)])  # white-noise shares of the background


def ar1_shape(freq: np.ndarray, r: np.ndarray, spacing: int = 1) -> np.ndarray:
    """The AR(1) spectrum's shape (1 - r²) / (1 - 2r cos ω + r²) per coefficient (rows) and frequency."""
    w = 2 * np.pi * np.asarray(freq) * spacing
    r = np.asarray(r, dtype=float)[:, None]
    return (1 - r**2) / (1 - 2 * r * np.cos(w) + r**2)


def _background_shapes(freq: np.ndarray, spacing: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate backgrounds: AR(1) red noise plus white noise, (1 - s)·ar1/mean(ar1) + s, each of unit mean
    over ``freq``; returns (shapes (M, K), r (M,), white share s (M,))."""
    red = ar1_shape(freq, R_GRID, spacing)
    red /= red.mean(axis=1, keepdims=True)
    shapes = (1 - WHITE_GRID)[:, None, None] * red[None] + WHITE_GRID[:, None, None]
    r, share = np.meshgrid(R_GRID, WHITE_GRID)
    return shapes.reshape(-1, len(freq)), r.reshape(-1), share.reshape(-1)


def red_fit(psd: np.ndarray, freq: np.ndarray, spacing: int = 1):
    """A red-noise background fitted to each row of a PSD over ``freq`` by Whittle's likelihood: AR(1)
    red noise plus white noise (slow drift under batch-to-batch noise, the shape of a GAN's loss curves).
    Returns (background (rows, K), r, white share). Fitting the spectrum where the peak is searched keeps
    the background's slope there; the lag-1 autocorrelation alone is biased low on a random walk and has
    no white floor, so it leaves the low end's rise looking like a peak."""
    shapes, r, share = _background_shapes(freq, spacing)
    scale = psd @ (1.0 / shapes).T / psd.shape[1]  # (rows, M): the Whittle scale of each candidate
    nll = np.log(np.maximum(scale, 1e-300)) + np.log(shapes).mean(axis=1)[None, :]
    best = np.argmin(nll, axis=1)
    return scale[np.arange(len(psd)), best][:, None] * shapes[best], r[best], share[best]


def _max_red_ratio(x: np.ndarray, spacing: int, seg: int, band: np.ndarray):
    """Per row: the largest Welch PSD / fitted red-noise background over the local maxima in ``band``
    (0 where there is none), and the fit."""
    freq, psd = welch_psd(x, spacing, seg)
    background, r, share = red_fit(psd[:, band], freq[band], spacing)
    ratio = np.where(local_maxima(psd)[:, band], psd[:, band] / background, 0.0)
    return ratio.max(axis=1), r, share


def red_noise_p(x: np.ndarray, spacing: int, opt: Options, rng: np.random.Generator) -> float:
    """Monte Carlo p-value of x's largest PSD / red-noise ratio over the bins with ≥ MIN_CYCLES cycles:
    ``opt.n_null`` series of the background fitted to x (AR(1) plus white noise), detrended as x was,
    each refitted and normalised the same way."""
    n = len(x)
    seg = min(opt.nperseg, n)
    freq = np.fft.rfftfreq(seg, d=spacing)
    band = searched(freq, n, spacing) & (freq > 0)
    if band.sum() < 3:
        return np.nan
    observed, r, share = _max_red_ratio(x[None, :], spacing, seg, band)
    r, share = float(r[0]), float(share[0])
    # the fitted mix in the time domain: AR(1) and white parts with the variances their densities imply
    red_density = ar1_shape(freq[band], np.array([r]), spacing)[0].mean()
    e = rng.standard_normal((2, opt.n_null, n))
    e[0, :, 0] /= np.sqrt(1 - r**2)  # a stationary start
    red = signal.lfilter([1.0], [1.0, -r], e[0], axis=1)
    sims = np.sqrt((1 - share) / red_density) * red + np.sqrt(share) * e[1]
    if opt.detrend != "none":
        sims = signal.detrend(sims, type=opt.detrend, axis=1)
    if opt.highpass:
        sos = signal.butter(4, opt.highpass, btype="highpass", fs=1.0 / spacing, output="sos")
        sims = signal.sosfiltfilt(sos, sims, axis=1)
    null = _max_red_ratio(sims, spacing, seg, band)[0]
    return float((1 + np.sum(null >= observed[0])) / (1 + opt.n_null))


def _spectral(xs: np.ndarray, spacing: int, opt: Options) -> dict[str, np.ndarray]:
    seg = min(opt.nperseg, xs.shape[1])
    freq, psd = welch_psd(xs, spacing, seg)
    cyc = freq  # welch with fs = 1/spacing gives cycles per step
    df = freq[1] - freq[0]
    total = psd.sum(axis=1) * df
    out = {"total_power": total}
    pos = psd[:, 1:]
    share = pos / pos.sum(axis=1, keepdims=True)
    for name, lo, hi in BANDS:
        band = (cyc[1:] >= lo) & (cyc[1:] < hi)
        out[f"power_{name}"] = share[:, band].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["spectral_entropy"] = -np.nansum(np.where(share > 0, share * np.log(share), 0), axis=1) / np.log(
            pos.shape[1]
        )
        out["spectral_flatness"] = np.exp(np.mean(np.log(np.maximum(pos, 1e-300)), axis=1)) / pos.mean(axis=1)
    fz, pz = welch_psd(xs, spacing, seg, nfft=4 * seg)
    fpeak, ppeak = peak_frequency(fz, pz, n=xs.shape[1], spacing=spacing)
    out["dominant_frequency"] = fpeak  # cycles per step
    out["dominant_period"] = np.where(fpeak > 0, 1.0 / np.where(fpeak > 0, fpeak, 1), np.nan)
    # AR(1) red-noise background at the peak, scaled to the series' variance (one-sided density)
    band = searched(freq, xs.shape[1], spacing) & (freq > 0)
    if band.sum() >= 3:  # the red-noise background fitted where the peak is searched, read at the peak
        background, _, _ = red_fit(psd[:, band], freq[band], spacing)
        at = np.argmin(np.abs(freq[band][None, :] - np.nan_to_num(fpeak)[:, None]), axis=1)
        out["peak_ratio"] = ppeak / background[np.arange(len(xs)), at]
    else:
        out["peak_ratio"] = np.full(len(xs), np.nan)
    return out


def _measure_group(group: list[Series], opt: Options) -> list[dict]:
    """Measures for series of equal length and spacing, stacked for vectorised spectra/ACF."""
    xs = np.stack([s.x for s in group])
    raws = np.stack([s.raw for s in group])
    n, spacing = xs.shape[1], group[0].spacing
    spec = _spectral(xs, spacing, opt)
    rho = acf(xs, n - 1)
    lb_lags = max(1, min(20, n // 5))
    _, lb_p = ljung_box(rho, n, lb_lags)
    iat = iat_geyer(rho)
    k = min(opt.max_lag, n - 1)
    nonpos = rho[:, 1 : k + 1] <= 0
    first_zero = np.where(nonpos.any(axis=1), nonpos.argmax(axis=1) + 1, np.nan) * spacing
    mean, std = raws.mean(axis=1), raws.std(axis=1, ddof=1)
    alpha = (1 - opt.ci) / 2
    rows = []
    for j, s in enumerate(group):
        period = spec["dominant_period"][j] / spacing  # in samples
        b = block_length(n, period)
        idx = block_indices(n, b, opt.n_boot, series_rng(opt.seed, s.run_id, s.key))
        boot = s.raw[idx]
        bm, bs = boot.mean(axis=1), boot.std(axis=1, ddof=1)
        period_lo, period_hi = _period_interval(s.x[idx], spacing, opt, alpha)
        p2, r2 = ar2(s.x)
        peak_p = red_noise_p(s.x, spacing, opt, series_rng(opt.seed, s.run_id, s.key, "peak"))
        row = {
            "run_id": s.run_id,
            "key": s.key,
            "n": n,
            "spacing": spacing,
            "n_filled": s.n_filled,
            "mean": mean[j],
            "std": std[j],
            "std_detrended": s.x.std(ddof=1),
            "cv": std[j] / abs(mean[j]) if mean[j] != 0 else np.nan,
            "skew": stats.skew(s.raw),
            "kurtosis": stats.kurtosis(s.raw),
            "ar2_period": p2 * spacing,
            "ar2_radius": r2,
            "acf_lag1": rho[j, 1],
            "acf_first_zero": first_zero[j],
            "iat": iat[j],
            "ljungbox_p": lb_p[j],
            "block_length": b * spacing,
            "mean_lo": np.quantile(bm, alpha),
            "mean_hi": np.quantile(bm, 1 - alpha),
            "std_lo": np.quantile(bs, alpha),
            "std_hi": np.quantile(bs, 1 - alpha),
            "peak_p": peak_p,
            "period_lo": period_lo,
            "period_hi": period_hi,
            "reason": "",
        }
        row.update({name: float(v[j]) for name, v in spec.items()})
        rows.append(row)
    return rows


def _period_interval(boot: np.ndarray, spacing: int, opt: Options, alpha: float) -> tuple[float, float]:
    """Percentile interval of the dominant period over block-bootstrap resamples of the detrended series
    (blocks span at least three periods, so each resample keeps whole cycles and the joins add noise, not
    a new period); NaN when fewer than half the resamples have a peak at all."""
    seg = min(opt.nperseg, boot.shape[1])
    fz, pz = welch_psd(boot, spacing, seg, nfft=4 * seg)
    f, _ = peak_frequency(fz, pz, n=boot.shape[1], spacing=spacing)
    periods = 1.0 / f[np.isfinite(f) & (f > 0)]
    if len(periods) < len(boot) / 2:
        return np.nan, np.nan
    return float(np.quantile(periods, alpha)), float(np.quantile(periods, 1 - alpha))


def _groups(series: list[Series]) -> dict[tuple[int, int], list[Series]]:
    groups: dict[tuple[int, int], list[Series]] = {}
    for s in series:
        groups.setdefault((len(s.x), s.spacing), []).append(s)
    return groups


@document(COLUMNS, "DataFrame, one row per (run_id, key), sorted by both:")
def oscillation(metrics: pd.DataFrame, keys=None, **options) -> pd.DataFrame:
    """Level, spectrum, autocorrelation and bootstrap CIs of each (run, key) series.

    ``keys``: a key or list of keys (default: every key in the frame). ``options``: see
    ``Options`` (burn_in=0.1, detrend="linear", highpass=None, max_missing=0.05, min_length=32,
    nperseg=256, max_lag=50, n_boot=500, ci=0.95, seed=0). Series that cannot be analysed get NaN
    measures and a non-empty ``reason``.
    """
    opt = Options.of(**options)
    return measure(*prepare(metrics, keys, opt), opt)


def measure(series: list[Series], failed: list[dict], opt: Options) -> pd.DataFrame:
    """``oscillation``'s frame from series already prepared (``prepare``), so a caller that needs the
    same series for something else (the report's explanation) prepares them once."""
    rows = [r for g in _groups(series).values() for r in _measure_group(g, opt)]
    rows += [{**f, **{m: np.nan for m in MEASURES}} for f in failed]
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("n", "spacing", "n_filled"):
        out[col] = out[col].astype("Int64")
    return out.sort_values(["run_id", "key"], ignore_index=True)


# --- pairs --------------------------------------------------------------------------------------

PAIR_COLUMNS = {
    "run_id": "the run",
    "x": "the first key (default loss/d_fake)",
    "y": "the second key (default loss/g)",
    "n": "common steps analysed",
    "corr": "Pearson correlation of the raw values",
    "corr_lo": "lower bound of corr's CI",
    "corr_hi": "upper bound of corr's CI",
    "std_ratio": "std(y) / std(x) of the raw values",
    "std_ratio_lo": "lower bound of std_ratio's CI (x and y resampled jointly)",
    "std_ratio_hi": "upper bound of std_ratio's CI",
    "power_ratio": "var(y) / var(x) after detrending",
    "best_lag": "lag of the largest |cross-correlation| (steps; positive: y follows x)",
    "ccf_best": "the cross-correlation at best_lag",
    "coherence_mean": "mean magnitude-squared coherence over the non-zero frequencies",
    "coherence_at_peak": "coherence at x's dominant frequency",
    "phase_at_peak_deg": "phase of the cross-spectrum there (negative: y lags x)",
    "peak_frequency": "the frequency bin used for the two above (cycles/step)",
    "block_length": "block-bootstrap block length (steps)",
    "reason": "why the pair could not be analysed (empty when it was)",
}
PAIR_MEASURES = [c for c in PAIR_COLUMNS if c not in ("run_id", "x", "y", "reason")]


def _aligned(sx: Series, sy: Series) -> tuple[np.ndarray, ...]:
    common, ix, iy = np.intersect1d(sx.steps, sy.steps, return_indices=True)
    return common, sx.raw[ix], sy.raw[iy], sx.x[ix], sy.x[iy]


def cross_correlation(x: np.ndarray, y: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """corr(x_t, y_{t+lag}) for lag in [-max_lag, max_lag] (biased, like statsmodels ``ccf(adjusted=False)``).

    A peak at a positive lag means y follows x.
    """
    n = len(x)
    x = (x - x.mean()) / x.std()
    y = (y - y.mean()) / y.std()
    full = signal.correlate(y, x, mode="full", method="fft") / n  # index n-1 is lag 0
    lags = np.arange(-max_lag, max_lag + 1)
    return lags, full[n - 1 + lags]


def pair_spectrum(x: np.ndarray, y: np.ndarray, spacing: int = 1, nperseg: int = 256) -> pd.DataFrame:
    """Coherence, phase and transfer gain |CSD|/PSD_x of y relative to x, by frequency (cycles/step).

    ``scipy.signal.csd`` conjugates x: the phase is negative when y lags x.
    """
    seg = min(nperseg, len(x))
    kw = dict(fs=1.0 / spacing, window="hann", nperseg=seg, noverlap=seg // 2, detrend="constant")
    f, pxy = signal.csd(x, y, **kw)
    _, pxx = signal.welch(x, **kw)
    _, coh = signal.coherence(x, y, **kw)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.abs(pxy) / pxx
    return pd.DataFrame(
        {"frequency": f, "coherence": coh, "phase_deg": np.degrees(np.angle(pxy)), "transfer_gain": gain, "psd_x": pxx}
    )


@document(PAIR_COLUMNS, "DataFrame, one row per (run_id, x, y):")
def oscillation_pairs(metrics: pd.DataFrame, pairs=((C.D_FAKE, C.G_LOSS),), **options) -> pd.DataFrame:
    """Correlation, std and power ratios (y over x) with joint block-bootstrap CIs, the lag of the
    largest |cross-correlation|, coherence, and the phase at x's dominant frequency, per run and pair.
    ``options``: as for ``oscillation``."""
    opt = Options.of(**options)
    pairs = [tuple(p) for p in pairs]
    keys = sorted({k for p in pairs for k in p})
    series, failed = prepare(metrics, keys, opt)
    by = {(s.run_id, s.key): s for s in series}
    reasons = {(f["run_id"], f["key"]): f["reason"] for f in failed}
    alpha = (1 - opt.ci) / 2
    rows = []
    for run_id in sorted(metrics["run_id"].astype(str).unique()):
        for kx, ky in pairs:
            row = {"run_id": run_id, "x": kx, "y": ky, **{m: np.nan for m in PAIR_MEASURES}, "reason": ""}
            sx, sy = by.get((run_id, kx)), by.get((run_id, ky))
            if sx is None or sy is None:
                bad = kx if sx is None else ky
                row["reason"] = f"{bad}: {reasons.get((run_id, bad), 'not analysable')}"
                rows.append(row)
                continue
            _, rx, ry, dx, dy = _aligned(sx, sy)
            n = len(rx)
            if n < opt.min_length:
                row["reason"] = f"only {n} common steps"
                rows.append(row)
                continue
            spec = pair_spectrum(dx, dy, sx.spacing, opt.nperseg)
            period, b = period_and_block(dx, sx.spacing, opt.nperseg)
            f_peak = 1.0 / (period * sx.spacing) if np.isfinite(period) else np.nan  # cycles per step
            at = int(np.argmin(np.abs(spec["frequency"].to_numpy()[1:] - f_peak))) + 1 if np.isfinite(f_peak) else 1
            lags, ccf = cross_correlation(dx, dy, min(opt.max_lag, n - 1))
            best = int(np.argmax(np.abs(ccf)))
            idx = block_indices(n, b, opt.n_boot, series_rng(opt.seed, run_id, kx, ky))
            bx, by_ = rx[idx], ry[idx]
            bsr = by_.std(axis=1, ddof=1) / bx.std(axis=1, ddof=1)
            bxc, byc = bx - bx.mean(axis=1, keepdims=True), by_ - by_.mean(axis=1, keepdims=True)
            # a resample of a flat stretch (a loss pinned at its clip) has no correlation: NaN, which the
            # interval leaves out
            with np.errstate(invalid="ignore", divide="ignore"):
                bcorr = (bxc * byc).sum(axis=1) / np.sqrt((bxc**2).sum(axis=1) * (byc**2).sum(axis=1))
            corr_lo, corr_hi = percentile_interval(bcorr, alpha)
            row.update(
                {
                    "n": n,
                    "corr": np.corrcoef(rx, ry)[0, 1],
                    "corr_lo": corr_lo,
                    "corr_hi": corr_hi,
                    "std_ratio": ry.std(ddof=1) / rx.std(ddof=1),
                    "std_ratio_lo": np.quantile(bsr, alpha),
                    "std_ratio_hi": np.quantile(bsr, 1 - alpha),
                    "power_ratio": dy.var() / dx.var(),
                    "best_lag": int(lags[best]) * sx.spacing,
                    "ccf_best": ccf[best],
                    "coherence_mean": spec["coherence"].iloc[1:].mean(),
                    "coherence_at_peak": spec["coherence"].iloc[at],
                    "phase_at_peak_deg": spec["phase_deg"].iloc[at],
                    "peak_frequency": spec["frequency"].iloc[at],
                    "block_length": b * sx.spacing,
                }
            )
            rows.append(row)
    out = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    return out
