"""Analysis results back to MLflow, so the UI shows them: the one module that writes them.

Everything goes to the store the runs were read from, each write retried like every other writer
(``tracking.retry``). Each quantity keeps the name it has in the frames: a run's ``explain/<column>``
is the summary column of that name (``explain.SUMMARY_COLUMNS``; ``explain/ratio`` is ``ratio``,
std(g)/std(d_fake)), and ``osc/<key>/<measure>`` the ``oscillation`` column for that key. The report
itself becomes a run tagged ``gantrack.kind = report``. Estimators never write; they return frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import contract as C
from ..tracking import retry
from .text import ci, fmt, pct

EXPLAIN_METRICS = [
    "ratio",
    "ratio_lo",
    "ratio_hi",
    "link",
    "link_lo",
    "link_hi",
    "context",
    "timing",
    "sampling",
    "residual",
    "p_bar",
    "predicted_link",
    "predicted_link_simple",
    "predicted_ratio",
    "link_error",
    "link_error_lo",
    "link_error_hi",
    "implied_ratio",
    "coherence_mean",
    "corr",
    "g_period",
]
OSC_MEASURES = (
    "mean",
    "std",
    "dominant_period",
    "total_power",
    "spectral_entropy",
    "acf_first_zero",
    "iat",
    "ljungbox_p",
    "power_high",
    "peak_ratio",
)
NOTE_MARK = "\n\n**gantrack analysis**"


def _send(mlclient, run_id: str, metrics: list) -> None:
    for i in range(0, len(metrics), 1000):  # MLflow's most metrics per request
        retry(mlclient.log_batch, run_id, metrics=metrics[i : i + 1000])


def log_oscillation(
    results: pd.DataFrame, tracking_uri: str | None = None, prefix: str = C.OSC_PREFIX, measures=OSC_MEASURES
) -> int:
    """Log each row's measures to its run as ``osc/<key>/<measure>`` (finite values only); returns the count."""
    from mlflow.entities import Metric

    from ..tracking import client, resolve_tracking_uri

    mlclient = client(resolve_tracking_uri(tracking_uri))
    ts, n = int(time.time() * 1000), 0
    for run_id, g in results.groupby("run_id"):
        batch = [
            Metric(f"{prefix}/{row.key}/{m}", float(getattr(row, m)), ts, 0)
            for row in g.itertuples()
            for m in measures
            if np.isfinite(getattr(row, m))
        ]
        _send(mlclient, str(run_id), batch)
        n += len(batch)
    return n


def _note(r) -> str:
    return (
        f"{NOTE_MARK}: ratio std(g)/std(d_fake) = {ci(r, 'ratio')}; link {ci(r, 'link')} "
        f"(law {fmt(r.get('predicted_link'))}, error {pct(r.get('link_error', np.nan))}, "
        f"{r.get('law_verdict', 'unavailable')}; simple law {fmt(r.get('predicted_link_simple'))} at "
        f"p̄ = {fmt(r['p_bar'], 3)}), context {fmt(r.get('context'))}, timing {fmt(r['timing'])}, "
        f"sampling {fmt(r['sampling'])}."
    )


def _publish_diagnosis(mlclient, diagnosis) -> None:
    """Each run's verdict as the tag ``gantrack.diagnosis`` (the runs table filters on it) and at the
    start of its description. A verdict its own detector already wrote is rewritten only if it changed."""
    from ..diagnosis import Diagnosis, describe

    if diagnosis is None:
        return
    for _, r in diagnosis.iterrows():
        rid = str(r["run_id"])
        tags = retry(mlclient.get_run, rid).data.tags
        d = Diagnosis(r["verdict"], r["subtype"], None if pd.isna(r["onset_step"]) else int(r["onset_step"]))
        note = describe(d, tags.get(C.TAG_NOTE, ""))
        if tags.get(C.TAG_DIAGNOSIS) != d.verdict or tags.get(C.TAG_NOTE) != note:
            retry(mlclient.set_tag, rid, C.TAG_DIAGNOSIS, d.verdict)
            retry(mlclient.set_tag, rid, C.TAG_NOTE, note)


def publish_report(analysis, tracking_uri: str, run_pngs: dict, out: Path) -> str:
    """``explain/*`` and ``osc/*`` metrics, a figure and a description line on each run of ``analysis``
    in the store at ``tracking_uri`` (the one its runs came from); the report as a run. Returns its id."""
    from mlflow.entities import Metric

    from ..tracking import client, close_orphan, get_or_create_experiment, orphan_reason

    mlclient = client(tracking_uri)
    ts = int(time.time() * 1000)
    osc = analysis.oscillation
    log_oscillation(osc[osc["reason"] == ""], tracking_uri)
    summary = analysis.summary
    for _, r in summary[summary["reason"] == ""].iterrows():
        rid = str(r["run_id"])
        batch = [
            Metric(f"{C.EXPLAIN_PREFIX}/{m}", float(r[m]), ts, 0)
            for m in EXPLAIN_METRICS
            if m in r and pd.notna(r[m]) and np.isfinite(float(r[m]))
        ]
        _send(mlclient, rid, batch)
        if rid in run_pngs:
            retry(mlclient.log_artifact, rid, str(run_pngs[rid]), "gantrack_analysis")
        note = retry(mlclient.get_run, rid).data.tags.get(C.TAG_NOTE, "").split(NOTE_MARK)[0]
        retry(mlclient.set_tag, rid, C.TAG_NOTE, note + _note(r))
    _publish_diagnosis(mlclient, analysis.diagnosis)
    for rid in summary.loc[summary["reason"].str.startswith("not finished"), "run_id"]:
        stored = retry(mlclient.get_run, str(rid))  # the next gantrack command that sees an orphan closes it
        if why := orphan_reason(stored):
            close_orphan(mlclient, stored, why + "; closed by gantrack report")
    exp_id = get_or_create_experiment(mlclient, analysis.experiment)
    run = retry(
        mlclient.create_run,
        exp_id,
        run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            C.TAG_KIND: "report",
            C.TAG_NOTE: f"gantrack comparative report over {len(summary)} runs: see the report.html artifact.",
        },
    )
    rid = run.info.run_id
    retry(mlclient.log_artifact, rid, str(out / "report.html"))
    retry(mlclient.log_artifact, rid, str(out / "report.md"))
    retry(mlclient.log_artifacts, rid, str(out / "figures"), "figures")
    retry(mlclient.set_terminated, rid)
    return rid
