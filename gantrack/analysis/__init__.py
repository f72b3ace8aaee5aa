"""Analysis: MLflow runs → tidy frames → oscillation measures → explanations and reports.

- ``load_runs(experiment=..., filter=..., run_ids=..., tracking_uri=...)`` → ``RunSet`` (.runs, .metrics)
- ``oscillation(metrics, keys=None, **options)`` → one row per (run_id, key)
- ``oscillation_pairs(metrics, pairs=[("loss/d_fake", "loss/g")])`` → one row per (run_id, x, y)
- ``explain(metrics_or_runset, run_id)`` → {"summary", "factors", "spectrum", "curves", "implied"} tidy frames
- ``explain_experiment(runset)`` → one row per run
- ``diagnose(runset)`` → one row per run: verdict, subtype, onset_step, evidence, missing (``failure_modes``)
- ``analyse(runset)`` → ``Analysis`` (everything a report shows, computed once)
- ``build_report(experiment, ...)`` → HTML + Markdown report, results logged back to MLflow
- ``Options``: the preprocessing and estimator settings every estimator takes as keyword options

Submodules load when first used: reading runs (``load_runs``) imports neither torch nor seaborn.
Modules: ``runs`` (reading), ``measures`` (oscillation measures), ``decompose`` (the factors),
``law`` (the per-sample law), ``failure_modes`` (the diagnosis of stored runs), ``findings``
(sentences), ``document`` (rendering), ``report`` (orchestration), ``publish`` (writing back),
``plots`` (figures).
"""

from importlib import import_module

_WHERE = {
    "RunSet": "runs",
    "dedupe": "runs",
    "load_runs": "runs",
    "Options": "measures",
    "oscillation": "measures",
    "oscillation_pairs": "measures",
    "log_oscillation": "publish",
    "explain": "decompose",
    "explain_experiment": "decompose",
    "analyse": "report",
    "Analysis": "report",
    "build_report": "report",
    "diagnose": "failure_modes",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'gantrack.analysis' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
