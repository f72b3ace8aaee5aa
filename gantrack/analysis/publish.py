"""Analysis results back to MLflow, so the UI shows them: the one module that writes them.

``log_oscillation`` puts ``osc/<key>/<measure>`` on each run; ``publish_report`` adds ``explain/*``
metrics, the run's figure (``gantrack_analysis/``) and a line in its description, and logs the report
itself as a run tagged ``gantrack.kind = report``. Estimators never write; they return frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import contract as C
from .text import ci, fmt, pct

EXPLAIN_METRICS = [
    "ratio",
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
NOTE_TAG = "mlflow.note.content"
NOTE_MARK = "\n\n**gantrack analysis**"


def log_oscillation(
    results: pd.DataFrame,
    tracking_uri: str | None = None,
    prefix: str = "osc",
    measures=(
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
    ),
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
        for i in range(0, len(batch), 1000):
            mlclient.log_batch(str(run_id), metrics=batch[i : i + 1000])
        n += len(batch)
    return n


def _note(r) -> str:
    return (
        f"{NOTE_MARK}: std(g)/std(d_fake) = {ci(r, 'ratio')}; link {ci(r, 'link')} "
        f"(law {fmt(r.get('predicted_link'))}, error {pct(r.get('link_error', np.nan))}, "
        f"{r.get('law_verdict', 'unavailable')}; simple law {fmt(r.get('predicted_link_simple'))} at "
        f"p̄ = {fmt(r['p_bar'], 3)}), context {fmt(r.get('context'))}, timing {fmt(r['timing'])}, "
        f"sampling {fmt(r['sampling'])}."
    )


def publish_report(experiment, tracking_uri, summary, osc, run_pngs, out: Path) -> str:
    """explain/* and osc/* metrics, a figure and a description line on each run; the report as a run."""
    from mlflow.entities import Metric

    from ..tracking import client, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    mlclient = client(uri)
    ts = int(time.time() * 1000)
    log_oscillation(osc[osc["reason"] == ""], uri)
    for _, r in summary[summary["reason"] == ""].iterrows():
        rid = str(r["run_id"])
        batch = [
            Metric(f"explain/{m}", float(r[m]), ts, 0)
            for m in EXPLAIN_METRICS
            if m in r and pd.notna(r[m]) and np.isfinite(float(r[m]))
        ]
        mlclient.log_batch(rid, metrics=batch)
        if rid in run_pngs:
            mlclient.log_artifact(rid, str(run_pngs[rid]), "gantrack_analysis")
        note = mlclient.get_run(rid).data.tags.get(NOTE_TAG, "").split(NOTE_MARK)[0]
        mlclient.set_tag(rid, NOTE_TAG, note + _note(r))
    exp_id = get_or_create_experiment(mlclient, experiment)
    run = mlclient.create_run(
        exp_id,
        run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            C.TAG_KIND: "report",
            NOTE_TAG: f"gantrack comparative report over {len(summary)} runs: see the report.html artifact.",
        },
    )
    mlclient.log_artifact(run.info.run_id, str(out / "report.html"))
    mlclient.log_artifact(run.info.run_id, str(out / "report.md"))
    mlclient.log_artifacts(run.info.run_id, str(out / "figures"), "figures")
    mlclient.set_terminated(run.info.run_id)
    return run.info.run_id
