"""Analysis: MLflow runs → tidy frames → oscillation measures → explanations and reports.

- ``load_runs(experiment=..., filter=..., run_ids=..., tracking_uri=...)`` → ``RunSet`` (.runs, .metrics)
- ``oscillation(metrics, keys=None, **options)`` → one row per (run_id, key)
- ``oscillation_pairs(metrics, pairs=[("loss/d_fake", "loss/g")])`` → one row per (run_id, x, y)
- ``explain(metrics_or_runset, run_id)`` → {"factors", "summary", "spectrum"} tidy frames
- ``explain_experiment(runset)`` → one row per run
- ``build_report(experiment, ...)`` → HTML + Markdown report, results logged back to MLflow
"""

from .explain import explain, explain_experiment
from .oscillation import oscillation, oscillation_pairs
from .publish import log_oscillation
from .report import build_report
from .runs import RunSet, dedupe, load_runs

__all__ = [
    "RunSet",
    "dedupe",
    "load_runs",
    "oscillation",
    "oscillation_pairs",
    "log_oscillation",
    "explain",
    "explain_experiment",
    "build_report",
]
