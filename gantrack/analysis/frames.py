"""The long metrics frame every reader returns: columns, dtypes, order, and the helpers that build it.

Columns ``METRIC_COLUMNS``: run_id and key as categoricals (lexically sorted categories), step and
timestamp int64, value float64; rows sorted by (run_id, key, step, timestamp, value).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

METRIC_COLUMNS = ["run_id", "key", "step", "timestamp", "value"]


def dedupe(metrics: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest-timestamped row per (run_id, key, step) (MLflow keeps re-logged steps as extra rows)."""
    m = metrics.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return m[~m.duplicated(["run_id", "key", "step"], keep="last")].reset_index(drop=True)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes and order, so frames from every path compare equal.

    run_id and key become categoricals with lexically sorted categories; rows are ordered by
    (run_id, key, step, timestamp, value) with a lexsort on the codes (no string comparisons).
    """
    run = (
        frame["run_id"]
        if isinstance(frame["run_id"].dtype, pd.CategoricalDtype)
        else pd.Categorical(np.asarray(frame["run_id"], dtype=object).astype(str))
    )
    key = (
        frame["key"]
        if isinstance(frame["key"].dtype, pd.CategoricalDtype)
        else pd.Categorical(np.asarray(frame["key"], dtype=object).astype(str))
    )
    run, key = pd.Categorical(run), pd.Categorical(key)
    run = run.reorder_categories(sorted(run.categories)) if not run.categories.is_monotonic_increasing else run
    key = key.reorder_categories(sorted(key.categories)) if not key.categories.is_monotonic_increasing else key
    step = np.asarray(frame["step"], dtype=np.int64)
    ts = np.asarray(frame["timestamp"], dtype=np.int64)
    value = np.asarray(frame["value"], dtype=np.float64)
    order = _order(run.codes, key.codes, len(key.categories), step, ts, value)
    out = pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(run.codes[order], run.categories.astype(str)),
            "key": pd.Categorical.from_codes(key.codes[order], key.categories.astype(str)),
            "step": step[order],
            "timestamp": ts[order],
            "value": value[order],
        }
    )
    return out


def _order(run_codes, key_codes, n_keys, step, ts, value) -> np.ndarray:
    """Row order by (run, key, step, timestamp, value).

    Fast path: one stable radix argsort of a composite int64 (run, key, step) — correct whenever no
    (run, key, step) repeats; re-logged steps (rare) fall back to a full lexsort.
    """
    n = len(step)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    lo, hi = int(step.min()), int(step.max())
    span = hi - lo + 1
    groups = (int(run_codes.max()) + 1) * max(1, n_keys)
    if span > 0 and groups * span < 2**62:
        composite = (run_codes.astype(np.int64) * max(1, n_keys) + key_codes) * span + (step - lo)
        order = np.argsort(composite, kind="stable")
        if not (np.diff(composite[order]) == 0).any():
            return order
    return np.lexsort((value, ts, step, key_codes, run_codes))


def concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-run parts whose run_id/key are categoricals with different categories."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty()
    run = union_categoricals([pd.Categorical(p["run_id"]) for p in parts], sort_categories=True)
    key = union_categoricals([pd.Categorical(p["key"]) for p in parts], sort_categories=True)
    return normalise(
        pd.DataFrame(
            {
                "run_id": run,
                "key": key,
                "step": np.concatenate([p["step"].to_numpy(np.int64) for p in parts]),
                "timestamp": np.concatenate([p["timestamp"].to_numpy(np.int64) for p in parts]),
                "value": np.concatenate([p["value"].to_numpy(np.float64) for p in parts]),
            }
        )
    )


def part(run_id: str, keys: list[str], codes: np.ndarray, step, timestamp, value) -> pd.DataFrame:
    """One run's rows as a frame with categorical run_id/key (no per-row Python strings)."""
    n = len(codes)
    return pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [run_id]),
            "key": pd.Categorical.from_codes(np.asarray(codes, dtype=np.int32), keys),
            "step": np.asarray(step, dtype=np.int64),
            "timestamp": np.asarray(timestamp, dtype=np.int64),
            "value": np.asarray(value, dtype=np.float64),
        }
    )


def empty() -> pd.DataFrame:
    return normalise(
        pd.DataFrame({c: np.array([], dtype=object if c in ("run_id", "key") else float) for c in METRIC_COLUMNS})
    )
