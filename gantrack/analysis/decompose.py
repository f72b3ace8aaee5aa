"""Why does g swing while d_fake looks calm? A per-run decomposition with confidence intervals.

docs/design.md §1: both losses are functions of D(G(z)), but measured through different links, by
different discriminators (D is updated in between), in different BatchNorm contexts and on
different batches. The harness's probe cells (``contract.CELLS``) evaluate the batches under both
discriminators and contexts, so the ratio of standard deviations telescopes into factors, each a
ratio of two probe series that differ in one thing only (``contract.FACTORS``):

    std(g) / std(d_fake)
      = link      std(dbatch_before/g)      / std(dbatch_before/d_fake)   g- vs d-link
      × context   std(dbatch_before_gctx/g) / std(dbatch_before/g)        D step's vs G step's BatchNorm context
      × timing    std(dbatch_after/g)       / std(dbatch_before_gctx/g)   D before vs after its update
      × sampling  std(gbatch_after/g)       / std(dbatch_after/g)         D's batch vs G's batch
      × residual  (1 when loss/g and loss/d_fake are the probe cells; otherwise a logging mismatch)

``share`` is each factor's part of log(total ratio). Runs logged before the context cell existed
get ``context`` missing and a ``timing`` that includes it (said in ``reason``).

The link is predicted two ways (``summary``): ``predicted_link_simple`` = |g'(p̄)| / |d_fake'(p̄)|
at the operating point p̄ = mean D(G(z)) ((1-p̄)/p̄ for the book's loss) — exact only for logit
moves common to the whole batch — and ``predicted_link``, the law of ``law.py`` from the per-sample
probes (common shift, change of spread, their correlation). ``link_error`` = predicted/measured − 1
with a block-bootstrap interval; ``law_verdict`` is "holds" when that interval lies inside ±15 %,
"fails" when it lies outside, "undecided" when it straddles the line (too wide to tell).

CIs: circular block bootstrap (block length from g's dominant period, ≥ 3 periods), all series
resampled jointly (same indices), percentile intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .. import contract as C
from ..errors import GantrackError
from ..losses import family as loss_family
from . import law
from .columns import returns_section
from .measures import (
    Options,
    acf,
    block_indices,
    pair_spectrum,
    percentile_interval,
    period_and_block,
    prepare,
    series_rng,
    welch_psd,
)

TOLERANCE = 0.15  # |predicted/measured - 1| a law must stay within to "hold"
SLOW_PERIOD = 16.0  # steps: the slow/fast band split of the frequency-resolved law
WINDOWS = 4  # stretches of the run with their own operating point in the law
SERIES_KEYS = tuple(sorted({C.D_FAKE, C.G_LOSS} | {C.probe_key(c, s) for c in C.CELLS for s in C.CELL_STATS}))


def _with_ci(name: str, what: str) -> dict[str, str]:
    return {name: what, f"{name}_lo": f"lower bound of {name}'s CI", f"{name}_hi": f"upper bound of {name}'s CI"}


FACTOR_COLUMNS = {
    "run_id": "the run",
    "factor": "link, context, timing, sampling or residual (their product is ratio)",
    "estimate": "the factor: a ratio of two probe series' standard deviations (contract.FACTORS)",
    "lo": "lower bound of the block-bootstrap CI",
    "hi": "upper bound of the block-bootstrap CI",
    "reason": "why the factor is 1 by construction, missing or qualified (empty otherwise)",
    "share": "log(estimate) / log(ratio): the factor's part of the ratio",
    "predicted": "link row: the per-sample law's prediction",
    "predicted_simple": "link row: the simple law |g'(p̄)| / |d_fake'(p̄)| ((1-p̄)/p̄ for nsgan)",
}
SUMMARY_COLUMNS = {
    "run_id": "the run",
    "family": "loss family (tag gantrack.loss, or the family= argument)",
    "n": "steps analysed: after burn-in, shared by every series",
    "block_length": "block-bootstrap block length (steps; ≥ 3 periods of g)",
    **_with_ci("ratio", "std(loss/g) / std(loss/d_fake): the question's number"),
    **_with_ci("link", "std(g) / std(d_fake) on D's fake batch under D before its update: the links alone"),
    **_with_ci("context", "D step's vs G step's BatchNorm context, same D, same batch"),
    **_with_ci("timing", "D before vs after its update, same batch, G step's context"),
    **_with_ci("sampling", "D's fake batch vs G's batch, same D"),
    "residual": "ratio / (link × context × timing × sampling): 1 unless the logged curves are not the cells",
    "p_bar": "operating point: mean D(G(z)) on D's fake batch (probes) or implied by d_fake",
    "p_bar_source": "'probes' or 'implied by d_fake'",
    "update_order": "tag gantrack.update_order (which factors exist)",
    "predicted_link_simple": "the simple law at p̄: |g'(p̄)| / |d_fake'(p̄)|",
    "predicted_link": "the per-sample law's link (law.py: five numbers per quarter of the run)",
    "predicted_ratio": "the same law applied to D's batch and G's batch: the whole ratio",
    **_with_ci("link_error", "predicted_link / link - 1"),
    **_with_ci("ratio_error", "predicted_ratio / ratio - 1"),
    "law_operating_points": "D output at each quarter's mean score",
    "law_shift_sds": "sd of the common shift in each quarter",
    "law_spread_sds": "sd of the spread's swing in each quarter",
    "law_corr_shift_spread": "mean correlation of shift and spread over the quarters",
    "predicted_link_shift_only": "the law with the spread held still: what the common shift carries",
    "predicted_link_spread_only": "the law with the shift held still: what the spread carries",
    "predicted_link_path": "diagnostic: the links applied to each step's own mean and spread",
    **_with_ci("link_path_error", "predicted_link_path / link - 1"),
    "predicted_link_linear": "first order: the gain at the average operating point, one window",
    "link_linear_error": "predicted_link_linear / link - 1",
    "law_shift_skew": "skewness of the common shift over the run",
    "link_slow": "link in the slow band (periods > 16 steps, zero-phase Butterworth)",
    "predicted_link_slow": "the law's link in the slow band",
    "link_fast": "link in the fast band (periods ≤ 16 steps)",
    "predicted_link_fast": "the law's link in the fast band",
    "law_verdict": "holds (link_error's CI inside ±15 %), fails (outside), undecided (straddles), unavailable",
    "law_reason": "why the law misses, cannot decide, or is unavailable (empty when it holds)",
    "p_dbatch_before": "mean D output of the cell dbatch_before",
    "p_dbatch_before_gctx": "mean D output of the cell dbatch_before_gctx",
    "p_dbatch_after": "mean D output of the cell dbatch_after",
    "p_gbatch_after": "mean D output of the cell gbatch_after",
    "corr": "correlation of loss/d_fake and loss/g",
    "implied_p_mean": "mean of p̂, the D output d_fake implies (1 - exp(-d_fake) for nsgan)",
    "implied_q_mean": "mean of q̂, the D output g implies (exp(-g) for nsgan)",
    "implied_p_std": "std of p̂",
    "implied_q_std": "std of q̂",
    **_with_ci("implied_ratio", "std(q̂) / std(p̂): the ratio in probability space"),
    "coherence_mean": "mean coherence of d_fake and g over the non-zero frequencies",
    "coherent_fraction": "share of frequencies with coherence > 0.5",
    "transfer_gain_coherent": "median |CSD| / PSD(d_fake) where coherent: the gain frequency by frequency",
    "g_period": "dominant period of g (steps; whether or not significant)",
    "missing_probes": "probe keys the run lacks (comma-separated)",
}


def _tag_of(runs: pd.DataFrame | None, run_id: str, tag: str, default: str) -> str:
    col = f"tags.{tag}"
    if runs is not None and col in runs.columns:
        row = runs.loc[runs["run_id"] == run_id, col]
        if len(row) and isinstance(row.iloc[0], str):
            return row.iloc[0]
    return default


def _family_of(runs: pd.DataFrame | None, run_id: str, default: str | None) -> str:
    return default or _tag_of(runs, run_id, C.TAG_LOSS, "nsgan")


def _gain(fam_name: str, p: np.ndarray) -> np.ndarray:
    fam = loss_family(fam_name)
    with np.errstate(all="ignore"):
        return fam.gain(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def implied(fam_name: str, d_fake: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The D outputs that the batch losses imply (p̂ from d_fake, q̂ from g; see ``losses``)."""
    fam = loss_family(fam_name)
    with np.errstate(all="ignore"):
        return (
            fam.inv_d_fake(torch.tensor(np.asarray(d_fake, dtype=np.float64))).numpy(),
            fam.inv_g(torch.tensor(np.asarray(g, dtype=np.float64))).numpy(),
        )


def _ratio_std(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return num.std(axis=-1, ddof=1) / den.std(axis=-1, ddof=1)


def _key(cell_stat: tuple[str, str]) -> str:
    cell, stat = cell_stat
    return stat if cell == "loss" else C.probe_key(cell, stat)


def explain(
    metrics: pd.DataFrame,
    run_id: str | None = None,
    runs: pd.DataFrame | None = None,
    family: str | None = None,
    per_sample: dict | None = None,
    prepared: tuple | None = None,
    **options,
) -> dict[str, pd.DataFrame]:
    """Why does g swing while d_fake looks calm? Tidy tables for one run.

    ``metrics``: the long frame of ``load_runs`` or a ``RunSet`` (whose per-sample probes are then
    read from MLflow); ``run_id`` may be omitted when the frame holds one run; ``family``: the loss
    family (default: the run's ``gantrack.loss`` tag, else nsgan); ``per_sample``: the arrays of
    ``gantrack.probes.read_per_sample`` (default: from the RunSet, if any). ``options``: as for
    ``oscillation`` (burn_in, n_boot, ci, seed, nperseg, ...). ``prepared``: ``measures.prepare``'s
    (series, failed) for this run's ``SERIES_KEYS``, when the caller has prepared them already.

    Returns a dict of DataFrames: ``summary`` (one row, the columns below), ``factors`` (one row per
    factor: ``FACTOR_COLUMNS``), ``spectrum`` (run_id, frequency, coherence, phase_deg, transfer_gain,
    psd_x, predicted_gain), ``curves`` (run_id, key, kind "psd"/"acf", x, y, first_step: what the
    figures draw) and ``implied`` (run_id, step, p_hat, q_hat over the analysed steps).
    """
    runset = None
    if hasattr(metrics, "metrics"):
        runset = metrics
        runs = metrics.runs if runs is None else runs
        metrics = metrics.metrics
    ids = metrics["run_id"].astype(str).unique()
    if run_id is None:
        if len(ids) != 1:
            raise GantrackError(f"the frame holds {len(ids)} runs: pass run_id")
        run_id = ids[0]
    if run_id not in set(ids):
        raise GantrackError(f"run {run_id!r} is not in the metrics frame")
    opt = Options.of(**options)
    per_sample_reason = ""
    if per_sample is None and runset is not None and hasattr(runset, "per_sample"):
        try:
            per_sample = runset.per_sample(run_id)
        except GantrackError as e:
            per_sample_reason = str(e)
    if prepared is None:
        prepared = prepare(metrics[metrics["run_id"].astype(str) == run_id], SERIES_KEYS, opt)
    with np.errstate(all="ignore"):
        return _explain(prepared, run_id, runs, family, opt, per_sample, per_sample_reason)


explain.__doc__ += returns_section("summary, one row:", SUMMARY_COLUMNS)


# --- sections -------------------------------------------------------------------------------------


def _aligned_series(prepared, run_id, opt):
    """Every factor series of the run on the steps they all share (after burn-in)."""
    series, failed = prepared
    by = {s.key: s for s in series if s.run_id == run_id and s.key in SERIES_KEYS}
    missing = {f["key"]: f["reason"] for f in failed if f["run_id"] == run_id}
    for need in (C.D_FAKE, C.G_LOSS):
        if need not in by:
            raise GantrackError(f"run {run_id}: {need} cannot be analysed ({missing.get(need, 'missing')})")
    common = by[C.D_FAKE].steps
    for s in by.values():
        common = np.intersect1d(common, s.steps)
    if len(common) < opt.min_length:
        raise GantrackError(f"run {run_id}: only {len(common)} steps shared by d_fake and g")
    raw = {k: s.raw[np.searchsorted(s.steps, common)] for k, s in by.items()}
    detrended = {k: s.x[np.searchsorted(s.steps, common)] for k, s in by.items() if k in (C.D_FAKE, C.G_LOSS)}
    return common, raw, detrended, by[C.G_LOSS].spacing


def _factor_table(raw: dict, idx: np.ndarray, alpha: float, order: str) -> pd.DataFrame:
    rows = []
    chain = C.factor_chain(order)
    old_grid = C.probe_key("dbatch_before_gctx", "g") not in raw
    for name in ("ratio", "link", "context", "timing", "sampling"):
        if chain[name] is None:  # 1 by construction in this update order
            rows.append(
                {
                    "factor": name,
                    "estimate": 1.0,
                    "lo": 1.0,
                    "hi": 1.0,
                    "reason": f"1 by construction: D is not updated between the two measurements ({order})",
                }
            )
            continue
        num, den = (_key(cs) for cs in chain[name])
        reason = ""
        if name == "timing" and old_grid:  # runs from before the context cell: timing includes context
            den = C.probe_key("dbatch_before", "g")
            reason = "includes BatchNorm context (run lacks probe/dbatch_before_gctx/g)"
        if num in raw and den in raw:
            lo, hi = percentile_interval(_ratio_std(raw[num][idx], raw[den][idx]), alpha)
            rows.append(
                {
                    "factor": name,
                    "estimate": float(_ratio_std(raw[num], raw[den])),
                    "lo": lo,
                    "hi": hi,
                    "reason": reason,
                }
            )
        else:
            lacking = ", ".join(k for k in (num, den) if k not in raw)
            rows.append(
                {
                    "factor": name,
                    "estimate": np.nan,
                    "lo": np.nan,
                    "hi": np.nan,
                    "reason": f"needs probe cells the run lacks ({lacking}): add gantrack.LoopProbes to your loop",
                }
            )
    f = pd.DataFrame(rows).set_index("factor")
    parts = f.loc[["link", "context", "timing", "sampling"], "estimate"]
    product = (
        float(parts.fillna(1.0).prod()) if old_grid and parts.drop("context").notna().all() else float(parts.prod())
    )
    total = f.loc["ratio", "estimate"]
    f.loc["residual"] = {
        "estimate": total / product if np.isfinite(product) else np.nan,
        "lo": np.nan,
        "hi": np.nan,
        "reason": "" if np.isfinite(product) else "needs all probe cells",
    }
    log_total = np.log(total)
    f["share"] = np.log(f["estimate"]) / log_total if abs(log_total) > 1e-3 else np.nan
    return f.reset_index()


def _per_sample_law(fam, per_sample, common, raw, idx, alpha, spacing, g_cell: str = "gbatch_after") -> dict:
    """The law of ``law.py`` beside the measured link and total ratio, with bootstrap errors, per band,
    and the diagnostics that say which assumption breaks where it misses."""
    steps = per_sample["steps"]
    lacking = [c for c in ("dbatch_before", g_cell) if c not in per_sample]
    if lacking:
        return {"law_reason": f"per-sample probes lack {', '.join(lacking)}"}
    keep = np.isin(steps, common)
    if keep.sum() < len(common):  # the law must see the same steps as the measurement
        return {"law_reason": f"per-sample probes cover {int(keep.sum())} of the {len(common)} analysed steps"}
    order = np.argsort(steps[keep])
    scores_d, scores_g = per_sample["dbatch_before"][keep][order], per_sample[g_cell][keep][order]
    bad = int((~np.isfinite(scores_d)).any(axis=1).sum() + (~np.isfinite(scores_g)).any(axis=1).sum())
    if bad:
        return {"law_reason": f"per-sample scores are not finite at {bad} analysed step(s)"}
    m_d, m_g = law.moments(fam, scores_d), law.moments(fam, scores_g)
    d, g = raw[C.probe_key("dbatch_before", "d_fake")], raw[C.probe_key("dbatch_before", "g")]
    total_d, total_g = raw[C.D_FAKE], raw[C.G_LOSS]
    link, ratio = _ratio_std(g, d), _ratio_std(total_g, total_d)
    link_boot, ratio_boot = _ratio_std(g[idx], d[idx]), _ratio_std(total_g[idx], total_d[idx])
    out = {}

    def record(name, pred, pred_boot, meas, meas_boot):
        err = pred_boot / meas_boot - 1
        out[f"predicted_{name}"] = float(pred)
        out[f"{name}_error"] = float(pred / meas - 1)
        out[f"{name}_error_lo"], out[f"{name}_error_hi"] = percentile_interval(err, alpha)

    # the law: five numbers per window and cell (operating point, spread, the swings of both, their
    # correlation); windows let the operating point move between stretches of the run
    sd_d, sg_d = law.windowed_law(fam, m_d["mu"], m_d["s"], WINDOWS)
    _, sg_g = law.windowed_law(fam, m_g["mu"], m_g["s"], WINDOWS)
    bd_d, bg_d = law.windowed_law(fam, m_d["mu"], m_d["s"], WINDOWS, idx)
    _, bg_g = law.windowed_law(fam, m_g["mu"], m_g["s"], WINDOWS, idx)
    record("link", sg_d / sd_d, bg_d / bd_d, link, link_boot)
    record("ratio", sg_g / sd_d, bg_g / bd_d, ratio, ratio_boot)
    windows = law.window_numbers(m_d["mu"], m_d["s"], WINDOWS)
    p_of = fam.output(torch.as_tensor([w[1] for w in windows], dtype=torch.float64)).numpy()
    out["law_operating_points"] = ", ".join(f"{p:.3g}" for p in p_of)  # D output at each window's mean score
    out["law_shift_sds"] = ", ".join(f"{w[3]:.2f}" for w in windows)
    out["law_spread_sds"] = ", ".join(f"{w[4]:.2f}" for w in windows)
    out["law_corr_shift_spread"] = float(np.mean([w[5] for w in windows]))
    # what carries it: the common shift alone (spread not swinging) and the spread alone
    for only in ("shift", "spread"):
        a, b = law.windowed_law(fam, m_d["mu"], m_d["s"], WINDOWS, only=only)
        out[f"predicted_link_{only}_only"] = float(b / a)
    # diagnostics: the step-by-step path of each batch's mean and spread (Gaussian within the batch) ...
    path_d, path_g = law.gaussian_losses(fam, m_d["mu"], m_d["s"])
    record("link_path", _ratio_std(path_g, path_d), _ratio_std(path_g[idx], path_d[idx]), link, link_boot)
    # ... and the first-order version (the gain at the average operating point, no curvature, one window)
    out["predicted_link_linear"] = float(law.law_terms(m_d, m_d)["predicted"])
    out["link_linear_error"] = out["predicted_link_linear"] / float(link) - 1
    mu_c = m_d["mu"] - m_d["mu"].mean()
    out["law_shift_skew"] = float((mu_c**3).mean() / (mu_c**2).mean() ** 1.5) if mu_c.any() else 0.0
    # frequency-resolved: each band's swings around each window's operating point, beside the same
    # measurement in that band (the slow band keeps the drift between windows, the fast one has none)
    for band, pick in (("slow", 0), ("fast", 1)):
        split = {k: law.band_split(v, SLOW_PERIOD, spacing)[pick] for k, v in (("d", d), ("g", g))}
        swing = (
            law.band_split(m_d["mu"], SLOW_PERIOD, spacing)[pick],
            law.band_split(m_d["s"], SLOW_PERIOD, spacing)[pick],
        )
        bsd, bsg = law.windowed_law(fam, m_d["mu"], m_d["s"], WINDOWS, swing=swing, between=pick == 0)
        out[f"link_{band}"] = float(_ratio_std(split["g"], split["d"]))
        out[f"predicted_link_{band}"] = float(bsg / bsd)
    if not (np.isfinite(out["predicted_link"]) and np.isfinite(out["link_error"])):
        return {"law_reason": "the law has nothing to predict: D's scores do not move (or d_fake does not)"}
    lo, hi = out["link_error_lo"], out["link_error_hi"]
    out["law_verdict"] = (
        "holds"
        if -TOLERANCE <= lo and hi <= TOLERANCE
        else "fails"
        if lo > TOLERANCE or hi < -TOLERANCE
        else "undecided"
    )
    out["law_reason"] = "" if out["law_verdict"] == "holds" else _why_not(out, fam.name)
    return out


def _why_not(s: dict, fam_name: str) -> str:
    """Which measured quantity shows why the law misses (or why the data cannot decide)."""
    err, path_err = s["link_error"], s["link_path_error"]
    if abs(path_err) <= TOLERANCE / 2:
        diag = (
            f"the common shift does not swing as a Gaussian within the run's quarters (skew over the run "
            f"{s['law_shift_skew']:+.2f}; operating points {s['law_operating_points']}): rare excursions of "
            f"D(G(z)) carry the variance; the step-by-step path of each batch's mean and spread gives "
            f"{s['predicted_link_path']:.2f} ({100 * path_err:+.0f} %)"
        )
    elif fam_name == "hinge":
        diag = (
            "fakes cross hinge's kink (c = -1), where d_fake stops moving: the scores within a batch are cut "
            f"there, not Gaussian (the step-by-step path misses too, {100 * path_err:+.0f} %)"
        )
    else:
        diag = (
            "the shape of each batch's scores changes, not only its mean and spread (a few confidently "
            f"rejected samples, skew): even the step-by-step path of mean and spread misses by {100 * path_err:+.0f} %"
        )
    if s["law_verdict"] == "undecided":
        wide = (
            f"error {100 * err:+.0f} % with interval [{100 * s['link_error_lo']:+.0f}, "
            f"{100 * s['link_error_hi']:+.0f}] %: too wide to decide at ±{100 * TOLERANCE:.0f} %"
        )
        return wide + (f"; it leans to failing: {diag}" if abs(err) > TOLERANCE else "")
    return diag


def _explain(prepared, run_id, runs, family, opt, per_sample, per_sample_reason) -> dict[str, pd.DataFrame]:
    fam_name = _family_of(runs, run_id, family)
    fam = loss_family(fam_name)
    order = _tag_of(runs, run_id, C.TAG_ORDER, "d-first")
    if order not in C.UPDATE_ORDERS:
        raise GantrackError(f"run {run_id}: unknown update order {order!r} in tag {C.TAG_ORDER}")
    common, raw, detrended, spacing = _aligned_series(prepared, run_id, opt)
    n = len(common)
    period, b = period_and_block(detrended[C.G_LOSS], spacing, opt.nperseg)
    idx = block_indices(n, b, opt.n_boot, series_rng(opt.seed, run_id))
    alpha = (1 - opt.ci) / 2
    factors = _factor_table(raw, idx, alpha, order)
    est = factors.set_index("factor")

    # the simple law at the operating point (mean D output on D's fake batch)
    # (without probes, e.g. another loop's run: the operating point the d_fake curve implies)
    p_key = C.probe_key("dbatch_before", "p")
    p_hat, q_hat = implied(fam_name, raw[C.D_FAKE], raw[C.G_LOSS])
    p_bar = float(raw[p_key].mean()) if p_key in raw else float(np.nanmean(p_hat))
    simple = float(_gain(fam_name, np.array([p_bar]))[0])
    if per_sample is not None:
        lawed = _per_sample_law(fam, per_sample, common, raw, idx, alpha, spacing, C.g_cell(order))
    else:
        lawed = {"law_reason": per_sample_reason or "no per-sample probes (run logged without them, or not a RunSet)"}
    if "predicted_link" not in lawed:
        lawed["law_verdict"] = "unavailable"
    factors["predicted"] = np.where(factors["factor"] == "link", lawed.get("predicted_link", np.nan), np.nan)
    factors["predicted_simple"] = np.where(factors["factor"] == "link", simple, np.nan)
    factors = factors[factors["factor"] != "ratio"].reset_index(drop=True)

    implied_lo, implied_hi = percentile_interval(_ratio_std(q_hat[idx], p_hat[idx]), alpha)
    spec = pair_spectrum(detrended[C.D_FAKE], detrended[C.G_LOSS], spacing, opt.nperseg)
    spec["predicted_gain"] = lawed.get("predicted_link", simple)
    coherent = spec["coherence"].iloc[1:] > 0.5

    def ci(name):
        return {name: est.loc[name, "estimate"], f"{name}_lo": est.loc[name, "lo"], f"{name}_hi": est.loc[name, "hi"]}

    levels = {
        f"p_{cell}": float(raw[C.probe_key(cell, "p")].mean()) if C.probe_key(cell, "p") in raw else np.nan
        for cell in ("dbatch_before", "dbatch_before_gctx", "dbatch_after", "gbatch_after")
    }
    row = {
        "run_id": run_id,
        "family": fam_name,
        "n": n,
        "block_length": b * spacing,
        "ratio": est.loc["ratio", "estimate"],
        "ratio_lo": est.loc["ratio", "lo"],
        "ratio_hi": est.loc["ratio", "hi"],
        **ci("link"),
        **ci("context"),
        **ci("timing"),
        **ci("sampling"),
        "residual": est.loc["residual", "estimate"],
        "p_bar": p_bar,
        "p_bar_source": "probes" if p_key in raw else "implied by d_fake",
        "update_order": order,
        "predicted_link_simple": simple,
        "predicted_link": np.nan,
        "predicted_ratio": np.nan,
        "link_error": np.nan,
        "link_error_lo": np.nan,
        "link_error_hi": np.nan,
        **lawed,
        **levels,
        "corr": float(np.corrcoef(raw[C.D_FAKE], raw[C.G_LOSS])[0, 1]),
        "implied_p_mean": float(np.nanmean(p_hat)),
        "implied_q_mean": float(np.nanmean(q_hat)),
        "implied_p_std": float(np.nanstd(p_hat, ddof=1)),
        "implied_q_std": float(np.nanstd(q_hat, ddof=1)),
        "implied_ratio": float(_ratio_std(q_hat, p_hat)),
        "implied_ratio_lo": implied_lo,
        "implied_ratio_hi": implied_hi,
        "coherence_mean": float(spec["coherence"].iloc[1:].mean()),
        "coherent_fraction": float(coherent.mean()),
        "transfer_gain_coherent": float(spec["transfer_gain"].iloc[1:][coherent].median())
        if coherent.any()
        else np.nan,
        "g_period": period * spacing,
        "missing_probes": ", ".join(
            k for k in sorted({_key(cs) for pair in C.FACTORS.values() for cs in pair}) if k not in raw
        ),
    }
    spec.insert(0, "run_id", run_id)
    factors.insert(0, "run_id", run_id)
    return {
        "factors": factors[list(FACTOR_COLUMNS)],
        "summary": pd.DataFrame([row]).reindex(columns=list(SUMMARY_COLUMNS)),
        "spectrum": spec,
        "curves": _curves(run_id, common, detrended, spacing, opt),
        "implied": pd.DataFrame({"run_id": run_id, "step": common, "p_hat": p_hat, "q_hat": q_hat}),
    }


def _curves(run_id, steps, detrended, spacing, opt) -> pd.DataFrame:
    """What the figures draw, from the series the measures used: Welch PSD and ACF of d_fake and g
    (detrended, after burn-in; ``oscillation``'s estimators and settings). Tidy: run_id, key,
    kind ("psd" over cycles/step, "acf" over lag in steps), x, y; plus the first analysed step."""
    parts = []
    for key in (C.D_FAKE, C.G_LOSS):
        x = detrended[key]
        f, p = welch_psd(x, spacing, opt.nperseg)
        lags = min(opt.max_lag, len(x) - 1)
        parts.append(pd.DataFrame({"key": key, "kind": "psd", "x": f[1:], "y": p[1:]}))
        parts.append(pd.DataFrame({"key": key, "kind": "acf", "x": np.arange(lags + 1) * spacing, "y": acf(x, lags)}))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "run_id", run_id)
    out["first_step"] = steps[0]
    return out


def explain_experiment(runset, family: str | None = None, progress: bool = True, **options) -> pd.DataFrame:
    """One summary row per run of a ``RunSet`` (runs lacking d_fake/g get a ``reason`` instead)."""
    from tqdm import tqdm

    rows = []
    ids = runset.runs["run_id"].tolist() if len(runset.runs) else []
    for run_id in tqdm(ids, disable=not progress or len(ids) < 5, desc="explaining", unit="run"):
        try:
            rows.append(explain(runset, run_id, family=family, **options)["summary"].assign(reason=""))
        except GantrackError as e:
            rows.append(pd.DataFrame([{"run_id": run_id, "reason": str(e)}]))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["run_id", "reason"])
    meta = [
        c
        for c in ("name", f"tags.{C.TAG_SCENARIO}", f"tags.{C.TAG_LOSS}", f"tags.{C.TAG_SEED}")
        if c in runset.runs.columns
    ]
    info = runset.runs[["run_id", *meta]].rename(
        columns={f"tags.{C.TAG_SCENARIO}": "scenario", f"tags.{C.TAG_LOSS}": "loss", f"tags.{C.TAG_SEED}": "seed"}
    )
    return info.merge(out, on="run_id", how="right")
