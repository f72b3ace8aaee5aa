"""Why does g swing while d_fake looks calm? A per-run decomposition with confidence intervals.

DESIGN.md §1: both losses are functions of D(G(z)), but measured through different links, by
different discriminators (D is updated in between), on different batches. The harness's 2×2
probes evaluate both batches under both discriminators, so the ratio of standard deviations
telescopes into factors, each a ratio of two probe series that differ in one thing only:

    std(g) / std(d_fake)
      = link      std(dbatch_before/g) / std(dbatch_before/d_fake)   same batch, same D, g- vs d-link
      × timing    std(dbatch_after/g)  / std(dbatch_before/g)        same batch, D before vs after its update
      × sampling  std(gbatch_after/g)  / std(dbatch_after/g)         same D, D's batch vs G's batch
      × residual  (1 when loss/g and loss/d_fake are the probe cells; otherwise a logging mismatch)

``share`` is each factor's part of log(total ratio). The gain law predicts the link factor
from the operating point p̄ = mean D(G(z)) on D's batch: |g'(p̄)| / |d_fake'(p̄)| ((1-p)/p for the
book's loss, 1 for minimax and WGAN). For logit shifts common to the batch the law is exact with p̄
the batch mean; per-sample noise and the curvature of the links (Jensen) make it approximate.

CIs: the circular block bootstrap of ``oscillation`` (block length from g's dominant period),
resampling all probe series jointly (same indices), percentile intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import GantrackError
from ..losses import family as loss_family
from .oscillation import Options, block_indices, pair_spectrum, period_and_block, prepare

D_FAKE, G = "loss/d_fake", "loss/g"
CELLS = {"dbatch_before/d_fake": "probe/dbatch_before/d_fake", "dbatch_before/g": "probe/dbatch_before/g",
         "dbatch_after/g": "probe/dbatch_after/g", "gbatch_after/g": "probe/gbatch_after/g"}
P_KEY = "probe/dbatch_before/p"
FACTORS = {  # factor: (numerator series, denominator series)
    "total": (G, D_FAKE),
    "link": ("dbatch_before/g", "dbatch_before/d_fake"),
    "timing": ("dbatch_after/g", "dbatch_before/g"),
    "sampling": ("gbatch_after/g", "dbatch_after/g"),
}


def _family_of(runs: pd.DataFrame | None, run_id: str, default: str | None) -> str:
    if default:
        return default
    if runs is not None and "tags.gantrack.loss" in runs.columns:
        row = runs.loc[runs["run_id"] == run_id, "tags.gantrack.loss"]
        if len(row) and isinstance(row.iloc[0], str):
            return row.iloc[0]
    return "nsgan"


def _gain(fam_name: str, p: np.ndarray) -> np.ndarray:
    fam = loss_family(fam_name)
    with np.errstate(all="ignore"):
        return fam.gain(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()


def _implied(fam_name: str, d_fake: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fam = loss_family(fam_name)
    with np.errstate(all="ignore"):
        return (fam.inv_d_fake(torch.as_tensor(d_fake, dtype=torch.float64)).numpy(),
                fam.inv_g(torch.as_tensor(g, dtype=torch.float64)).numpy())


def _ratio_std(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return num.std(axis=-1, ddof=1) / den.std(axis=-1, ddof=1)


def explain(metrics: pd.DataFrame, run_id: str | None = None, runs: pd.DataFrame | None = None,
            family: str | None = None, **options) -> dict[str, pd.DataFrame]:
    """Tidy tables for one run: ``factors`` (factor, estimate, lo, hi, share, predicted),
    ``summary`` (one row), ``spectrum`` (coherence and transfer gain of g on d_fake by frequency).

    ``metrics``: the long frame of ``load_runs`` (or a ``RunSet``); ``run_id`` may be omitted when
    the frame holds one run; ``family``: the loss family (default: the run's ``gantrack.loss`` tag,
    else nsgan). ``options``: as for ``oscillation`` (burn_in, n_boot, ci, seed, nperseg, ...).
    """
    if hasattr(metrics, "metrics"):
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
    with np.errstate(all="ignore"):
        return _explain(metrics, run_id, runs, family, opt)


def _explain(metrics, run_id, runs, family, opt) -> dict[str, pd.DataFrame]:
    fam_name = _family_of(runs, run_id, family)
    fam = loss_family(fam_name)
    sub = metrics[metrics["run_id"].astype(str) == run_id]
    keys = [D_FAKE, G, P_KEY, *CELLS.values()]
    series, failed = prepare(sub, keys, opt)
    by = {s.key: s for s in series}
    missing = {f["key"]: f["reason"] for f in failed}
    if D_FAKE not in by or G not in by:
        bad = D_FAKE if D_FAKE not in by else G
        raise GantrackError(f"run {run_id}: {bad} cannot be analysed ({missing.get(bad, 'missing')})")

    # align every available series on the steps they share
    avail = [k for k in keys if k in by]
    common = by[D_FAKE].steps
    for k in avail:
        common = np.intersect1d(common, by[k].steps)
    if len(common) < opt.min_length:
        raise GantrackError(f"run {run_id}: only {len(common)} steps shared by d_fake and g")
    raw = {k: by[k].raw[np.searchsorted(by[k].steps, common)] for k in avail}
    data = {D_FAKE: raw[D_FAKE], G: raw[G]}
    data.update({name: raw[key] for name, key in CELLS.items() if key in raw})
    n, spacing = len(common), by[G].spacing

    g_detr = by[G].x[np.searchsorted(by[G].steps, common)]
    period, b = period_and_block(g_detr, spacing, opt.nperseg)
    idx = block_indices(n, b, opt.n_boot, np.random.default_rng(opt.seed))
    alpha = (1 - opt.ci) / 2

    rows = []
    total = _ratio_std(data[G], data[D_FAKE])
    for name, (num, den) in FACTORS.items():
        if num in data and den in data:
            est = float(_ratio_std(data[num], data[den]))
            boot = _ratio_std(data[num][idx], data[den][idx])
            rows.append({"factor": name, "estimate": est, "lo": np.nanquantile(boot, alpha),
                         "hi": np.nanquantile(boot, 1 - alpha), "reason": ""})
        else:
            lacking = ", ".join(CELLS[k] for k in (num, den) if k not in data)
            rows.append({"factor": name, "estimate": np.nan, "lo": np.nan, "hi": np.nan,
                         "reason": f"run lacks {lacking}"})
    factors = pd.DataFrame(rows)
    est = dict(zip(factors["factor"], factors["estimate"]))
    product = est["link"] * est["timing"] * est["sampling"]
    factors = pd.concat([factors, pd.DataFrame([{"factor": "residual", "estimate": total / product,
                                                 "lo": np.nan, "hi": np.nan,
                                                 "reason": "" if np.isfinite(product) else "needs all probe cells"}])],
                        ignore_index=True)
    with np.errstate(all="ignore"):
        log_total = np.log(total)
        factors["share"] = np.where(factors["factor"] == "total", 1.0,
                                    np.log(factors["estimate"]) / log_total if abs(log_total) > 1e-3 else np.nan)

    # the gain law at the operating point (mean D output on D's fake batch)
    if P_KEY in raw:
        p = raw[P_KEY]
        p_bar = float(p.mean())
        predicted = float(_gain(fam_name, np.array([p_bar]))[0])
        pred_boot = _gain(fam_name, p[idx].mean(axis=1))
        pred_lo, pred_hi = np.nanquantile(pred_boot, alpha), np.nanquantile(pred_boot, 1 - alpha)
        # the links applied to the path p̄_t (the operating point moves; the spread within a batch is ignored)
        fam_t = torch.as_tensor(p, dtype=torch.float64)
        predicted_path = float(_ratio_std(fam.g(fam_t).numpy(), fam.d_fake(fam_t).numpy()))
    else:
        p_bar = predicted = pred_lo = pred_hi = predicted_path = np.nan
    factors["predicted"] = np.where(factors["factor"] == "link", predicted, np.nan)
    link = factors.set_index("factor").loc["link"]
    holds = bool(link["lo"] <= predicted <= link["hi"]) if np.isfinite(predicted) and np.isfinite(link["lo"]) else None

    # implied probability: both curves mapped back to the D output they imply
    p_hat, q_hat = _implied(fam_name, data[D_FAKE], data[G])
    imp_ratio = float(_ratio_std(q_hat, p_hat))
    imp_boot = _ratio_std(q_hat[idx], p_hat[idx])

    # frequency view: coherence and transfer gain of g relative to d_fake
    spec = pair_spectrum(by[D_FAKE].x[np.searchsorted(by[D_FAKE].steps, common)], g_detr, spacing, opt.nperseg)
    spec["predicted_gain"] = predicted
    coherent = spec["coherence"].iloc[1:] > 0.5
    summary = pd.DataFrame([{
        "run_id": run_id, "family": fam_name, "n": n, "block_length": b * spacing,
        "ratio": float(total), "ratio_lo": est_ci(factors, "total", "lo"), "ratio_hi": est_ci(factors, "total", "hi"),
        "link": est["link"], "link_lo": est_ci(factors, "link", "lo"), "link_hi": est_ci(factors, "link", "hi"),
        "timing": est["timing"], "timing_lo": est_ci(factors, "timing", "lo"),
        "timing_hi": est_ci(factors, "timing", "hi"),
        "sampling": est["sampling"], "sampling_lo": est_ci(factors, "sampling", "lo"),
        "sampling_hi": est_ci(factors, "sampling", "hi"),
        "residual": float(total / product) if np.isfinite(product) else np.nan,
        "p_bar": p_bar, "predicted_link": predicted, "predicted_link_lo": pred_lo, "predicted_link_hi": pred_hi,
        "predicted_link_path": predicted_path,
        "gain_law_holds": holds,
        "corr": float(np.corrcoef(data[D_FAKE], data[G])[0, 1]),
        "implied_p_mean": float(np.nanmean(p_hat)), "implied_q_mean": float(np.nanmean(q_hat)),
        "implied_p_std": float(np.nanstd(p_hat, ddof=1)), "implied_q_std": float(np.nanstd(q_hat, ddof=1)),
        "implied_ratio": imp_ratio, "implied_ratio_lo": np.nanquantile(imp_boot, alpha),
        "implied_ratio_hi": np.nanquantile(imp_boot, 1 - alpha),
        "coherence_mean": float(spec["coherence"].iloc[1:].mean()),
        "coherent_fraction": float(coherent.mean()),
        "transfer_gain_coherent": float(spec["transfer_gain"].iloc[1:][coherent].median()) if coherent.any() else np.nan,
        "g_period": period * spacing,
        "missing_probes": ", ".join(v for v in CELLS.values() if v not in raw),
    }])
    spec.insert(0, "run_id", run_id)
    factors.insert(0, "run_id", run_id)
    return {"factors": factors, "summary": summary, "spectrum": spec}


def est_ci(factors: pd.DataFrame, name: str, col: str) -> float:
    return float(factors.loc[factors["factor"] == name, col].iloc[0])


def explain_experiment(runset, family: str | None = None, progress: bool = True, **options) -> pd.DataFrame:
    """One summary row per run of a ``RunSet`` (runs lacking d_fake/g get a ``reason`` instead)."""
    from tqdm import tqdm

    rows = []
    ids = runset.runs["run_id"].tolist() if len(runset.runs) else []
    for run_id in tqdm(ids, disable=not progress or len(ids) < 5, desc="explaining", unit="run"):
        try:
            rows.append(explain(runset.metrics, run_id, runset.runs, family, **options)["summary"].assign(reason=""))
        except GantrackError as e:
            rows.append(pd.DataFrame([{"run_id": run_id, "reason": str(e)}]))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["run_id", "reason"])
    meta = [c for c in ("name", "tags.gantrack.scenario", "tags.gantrack.loss", "tags.gantrack.seed")
            if c in runset.runs.columns]
    info = runset.runs[["run_id", *meta]].rename(columns={"tags.gantrack.scenario": "scenario",
                                                         "tags.gantrack.loss": "loss", "tags.gantrack.seed": "seed"})
    return info.merge(out, on="run_id", how="right")
