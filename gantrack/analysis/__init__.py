"""Analysis: MLflow runs → tidy frames → oscillation measures → explanations and reports."""

from .runs import RunSet, dedupe, load_runs

__all__ = ["RunSet", "dedupe", "load_runs"]
