"""``diagnose(runset)``: which failure mode each run is in, since which step, on what evidence.

The rules are ``gantrack.diagnosis.decide`` — the same function the harness and ``LoopProbes`` run while
training — applied to what each stored run logged. A run from another tool (key-mapped, imported) is
diagnosed from what it has; ``missing`` lists what would decide more. A run that cannot be read (no
metrics, a corrupt series) gets ``undecided`` with the reason in its row; the other runs go on.

Columns (``COLUMNS``): run_id, run_name, scenario (the preset's name, if gantrack trained it), verdict
(``contract.VERDICTS``), subtype, onset_step, onset_resolution (steps: 1 from per-step curves, the
snapshot spacing from diversity), evidence and missing ("; "-joined), period_g (the dominant period of
g after burn-in, steps, with ``peak_p``, the red-noise test's p-value: the mode-collapse signature the
tutorial describes, reported, not used to decide), and online (the verdict the run's own detector tagged,
``gantrack.diagnosis``, for comparison).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import contract as C
from ..diagnosis import Detector, Diagnosis, decide
from ..errors import first_line
from .frames import dedupe

COLUMNS = [
    "run_id",
    "run_name",
    "scenario",
    "verdict",
    "subtype",
    "onset_step",
    "onset_resolution",
    "evidence",
    "missing",
    "period_g",
    "peak_p",
    "online",
]


def diagnose(runset, run_ids=None, period: bool = True) -> pd.DataFrame:
    """One row per run of ``runset`` (or of ``run_ids``) with the columns above. ``period``: measure
    g's dominant period too (the spectral peak test: about 0.1 s a run)."""
    metrics = dedupe(runset.metrics)
    by_run = dict(tuple(metrics.groupby("run_id", observed=True)))
    rows = []
    for _, run in runset.runs.iterrows():
        rid = run["run_id"]
        if (run_ids is not None and rid not in run_ids) or _tag(run, C.TAG_KIND) in ("report", "sweep"):
            continue  # a report's or a sweep's own run holds results, not training curves
        row = {
            "run_id": rid,
            "run_name": run.get("name", "") if isinstance(run.get("name", ""), str) else "",
            "scenario": _tag(run, C.TAG_SCENARIO),
            "online": _tag(run, C.TAG_DIAGNOSIS),
        }
        try:
            d, extra = diagnose_run(by_run.get(rid), _tag(run, C.TAG_LOSS), run.get("status", ""), period)
        except Exception as e:  # a corrupt series: this run's row says why, the others go on
            d, extra = Diagnosis("undecided", evidence=[f"cannot read this run: {first_line(e, 200)}"]), {}
        row.update(
            verdict=d.verdict,
            subtype=d.subtype,
            onset_step=d.onset_step,
            onset_resolution=d.onset_resolution,
            evidence="; ".join(d.evidence),
            missing="; ".join(d.missing),
            **extra,
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["onset_step"] = out["onset_step"].astype("Int64")
    out["onset_resolution"] = out["onset_resolution"].astype("Int64")
    return out


def _tag(run, name) -> str:
    v = run.get(f"tags.{name}")
    return v if isinstance(v, str) else ""


def diagnose_run(sub: pd.DataFrame | None, loss: str, status: str = "", period: bool = True):
    """``decide`` on one run's long metrics frame; returns (Diagnosis, extra columns)."""
    extra = {"period_g": np.nan, "peak_p": np.nan}
    if sub is None or sub.empty:
        what = f"{status} run" if status else "run"
        return Diagnosis("undecided", evidence=[f"{what} has no metrics"], missing=["loss/*"]), extra
    assumed = []
    if not loss:
        loss = "nsgan"
        assumed = ["loss family assumed nsgan (no gantrack.loss tag)"]
    keys = set(sub["key"].astype(str).unique())
    per_step = [k for k in Detector.KEYS if k in keys]
    losses = sub[sub["key"].isin([k for k in C.LOSS_COMPONENTS if k in keys])]
    steps = np.sort(losses["step"].unique()) if not losses.empty else np.array([], dtype=np.int64)
    wide = sub[sub["key"].isin(per_step)].pivot(index="step", columns="key", values="value").reindex(steps)
    wide.columns = wide.columns.astype(str)
    series = {k: wide[k].to_numpy(dtype=float) for k in wide.columns}
    snapshots = {}
    for k in C.DIVERSITY_KEYS:
        if k in (C.DIV_BATCH_BINS, C.DIV_BATCH_BINS_NULL):
            continue  # per-step evidence, not snapshots
        s = sub[sub["key"] == k]
        if not s.empty:
            snapshots[k] = (s["step"].to_numpy(), s["value"].to_numpy(dtype=float))
    bad = losses[~np.isfinite(losses["value"].to_numpy(dtype=float))]
    nonfinite = None
    if not bad.empty:
        first = int(bad["step"].min())
        nonfinite = (first, sorted(bad.loc[bad["step"] == first, "key"].astype(str).unique()))
    final = status != "RUNNING"
    d = decide(steps, series, snapshots, loss, final=final, nonfinite=nonfinite)
    d.evidence = assumed + d.evidence
    if period and C.G_LOSS in series and d.verdict != "diverged":
        from .measures import oscillation

        osc = oscillation(sub[sub["key"] == C.G_LOSS], keys=[C.G_LOSS], n_boot=50)
        if len(osc) and not osc["reason"].iloc[0]:
            extra = {"period_g": float(osc["dominant_period"].iloc[0]), "peak_p": float(osc["peak_p"].iloc[0])}
        if C.DIV_BATCH_BINS in keys:
            d.evidence.append(_batch_bins(sub))
    return d, extra


def _batch_bins(sub: pd.DataFrame) -> str:
    """How many kinds of sample G's training batches spread over, and whether that follows g: the
    coherence of div/batch_bins with g at g's dominant frequency (G cycling through a few kinds of
    sample at g's period gives a high one)."""
    from .measures import oscillation_pairs

    bins = sub[sub["key"] == C.DIV_BATCH_BINS]
    late = bins[bins["step"] > bins["step"].median()]["value"].mean()
    null = sub[sub["key"] == C.DIV_BATCH_BINS_NULL]["value"]
    ref = f" (real batches: {null.iloc[0]:.1f})" if len(null) else ""
    text = f"G's batch spreads over {late:.1f} effective bins in the second half{ref}"
    pair = oscillation_pairs(sub, pairs=[(C.G_LOSS, C.DIV_BATCH_BINS)], n_boot=50)
    if len(pair) and not pair["reason"].iloc[0] and np.isfinite(pair["coherence_at_peak"].iloc[0]):
        text += (
            f", coherence with g at g's dominant frequency {pair['coherence_at_peak'].iloc[0]:.2f} "
            f"(mean over frequencies {pair['coherence_mean'].iloc[0]:.2f})"
        )
    return text


SIGNATURE_COLUMNS = {
    "run_id": "the run",
    "scenario": "the preset's name (gantrack.scenario), or the verdict for runs of other tools",
    "verdict": "diagnose's verdict",
    "onset_step": "diagnose's onset",
    "acc": "mean D accuracy over the second half (the mean of acc/real and acc/fake)",
    "d_real": "mean loss/d_real over the second half",
    "d_fake": "mean loss/d_fake over the second half",
    "g": "mean loss/g over the second half",
    "duplicates": "div/duplicates at the last snapshot",
    "coverage": "div/coverage at the last snapshot over its real-vs-real ceiling",
    "batch_bins": "mean div/batch_bins over the second half (effective bins of G's batches)",
    "batch_bins_real": "div/batch_bins_null: the same for real batches",
    "context_gap": "second-half p of D's fakes alone (G's context) minus in D's own batch (probe cells)",
    "period_g": "g's dominant period (steps), with peak_p its red-noise p-value",
    "peak_p": "",
}


def signatures(runset, diagnosis: pd.DataFrame) -> pd.DataFrame:
    """Each run's failure signature in numbers (``SIGNATURE_COLUMNS``), to set the scenarios against the
    stable run: the levels over the second half, the diversity at the last snapshot, the G batches' bins,
    the BatchNorm context gap, g's period. NaN where a run does not log what a column needs."""
    metrics = dedupe(runset.metrics)
    by_run = dict(tuple(metrics.groupby("run_id", observed=True)))
    rows = []
    for _, d in diagnosis.iterrows():
        sub = by_run.get(d["run_id"])
        row = {c: np.nan for c in SIGNATURE_COLUMNS}
        row.update(run_id=d["run_id"], scenario=d["scenario"] or d["verdict"], verdict=d["verdict"])
        row.update(onset_step=d["onset_step"], period_g=d["period_g"], peak_p=d["peak_p"])
        if sub is not None and not sub.empty:
            row.update(_levels(sub))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(SIGNATURE_COLUMNS))


def _levels(sub: pd.DataFrame) -> dict:
    def late(key):
        s = sub[sub["key"] == key]
        return s[s["step"] > s["step"].median()]["value"] if len(s) else pd.Series(dtype=float)

    def last(key):
        s = sub[sub["key"] == key].sort_values("step")
        return float(s["value"].iloc[-1]) if len(s) else np.nan

    halves = {k: late(k) for k in (C.D_REAL, C.D_FAKE, C.G_LOSS, C.ACC_REAL, C.ACC_FAKE, C.DIV_BATCH_BINS)}
    out = {k[5:]: halves[k].mean() for k in (C.D_REAL, C.D_FAKE, C.G_LOSS) if len(halves[k])}
    accs = [halves[k].mean() for k in (C.ACC_REAL, C.ACC_FAKE) if len(halves[k])]
    if accs:
        out["acc"] = float(np.mean(accs))
    out["duplicates"] = last(C.DIV_DUPLICATES)
    ceiling = last(C.DIV_COVERAGE_CEILING)
    out["coverage"] = last(C.DIV_COVERAGE) / ceiling if ceiling and np.isfinite(ceiling) else np.nan
    if len(halves[C.DIV_BATCH_BINS]):
        out["batch_bins"] = halves[C.DIV_BATCH_BINS].mean()
    out["batch_bins_real"] = last(C.DIV_BATCH_BINS_NULL)
    a, b = late(C.probe_key("dbatch_before_gctx", "p")), late(C.probe_key("dbatch_before", "p"))
    if len(a) and len(b):
        out["context_gap"] = a.mean() - b.mean()
    return out


def signature_table(sig: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario (stable first): each signature's median over its runs, with the range."""
    from .text import fmt

    order = sorted(sig["scenario"].unique(), key=lambda s: (s != "stable", s))
    rows = []
    for scenario in order:
        g = sig[sig["scenario"] == scenario]
        row = {
            "scenario": scenario,
            "runs": len(g),
            "verdicts": ", ".join(f"{v} {n}" for v, n in g["verdict"].value_counts().items()),
        }
        for col, digits in (
            ("onset_step", 0),
            ("acc", 2),
            ("d_real", 2),
            ("d_fake", 2),
            ("g", 2),
            ("duplicates", 2),
            ("coverage", 2),
            ("batch_bins", 1),
            ("batch_bins_real", 1),
            ("context_gap", 2),
            ("period_g", 1),
        ):
            v = pd.to_numeric(g[col], errors="coerce").dropna()
            if v.empty:
                row[col] = "—"
            elif len(v) == 1:
                row[col] = fmt(v.iloc[0], digits)
            else:
                row[col] = f"{fmt(v.median(), digits)} [{fmt(v.min(), digits)}, {fmt(v.max(), digits)}]"
        rows.append(row)
    return pd.DataFrame(rows)
