"""Property-based tests: hostile input to config parsing, CLI overrides, sweeps and the analysis entry
points is either handled or rejected with a GantrackError (one line) — never another exception."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gantrack.analysis import explain, oscillation, oscillation_pairs
from gantrack.analysis.report import figure_path
from gantrack.config import Config, load_toml, parse_set, resolve
from gantrack.errors import GantrackError
from gantrack.sweep import expand_grid, parse_grid

FIELDS = list(Config.__dataclass_fields__)
MANY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
values = st.one_of(
    st.text(max_size=20),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)


def _ok_or_clear(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except GantrackError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(e)
        return None


@MANY
@given(st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), values, max_size=6))
def test_config_overrides(overrides):
    cfg = _ok_or_clear(lambda: resolve("stable", overrides=overrides))
    if cfg is not None:
        assert isinstance(cfg, Config) and cfg.batch_size >= 2 and cfg.lr > 0


@MANY
@given(st.lists(st.text(max_size=30), max_size=5), st.sampled_from([None, "stable", "dirac", "bogus", ""]))
def test_cli_set_strings(items, preset_name):
    _ok_or_clear(lambda: resolve(preset_name or None, overrides=parse_set(items)))


@MANY
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_toml_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    data = _ok_or_clear(load_toml, path)
    if data is not None:
        _ok_or_clear(lambda: resolve(None, None, {}, file_values=data))


@MANY
@given(st.lists(st.text(max_size=25), max_size=4))
def test_sweep_grids(items):
    grid = _ok_or_clear(parse_grid, items)
    if grid is not None:
        _ok_or_clear(expand_grid, Config(experiment="x"), {k: v[:3] for k, v in list(grid.items())[:3]})


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def metric_frames(draw):
    n_runs = draw(st.integers(1, 3))
    rows = []
    for r in range(n_runs):
        for key in draw(
            st.lists(
                st.sampled_from(["loss/d_fake", "loss/g", "probe/dbatch_before/p", "x"]),
                min_size=1,
                max_size=4,
                unique=True,
            )
        ):
            n = draw(st.integers(0, 120))
            kind = draw(st.sampled_from(["noise", "const", "hostile", "sine"]))
            if kind == "hostile":
                vals = draw(st.lists(finite_or_not, min_size=n, max_size=n))
            elif kind == "const":
                vals = [draw(finite_or_not)] * n
            else:
                rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
                t = np.arange(n)
                vals = (np.sin(t / 3.0) if kind == "sine" else 0) + rng.standard_normal(n)
            steps = draw(st.sampled_from(["range", "shuffled", "dupes", "gappy", "negative"]))
            s = np.arange(n)
            if steps == "shuffled":
                s = np.random.default_rng(1).permutation(n)
            elif steps == "dupes":
                s = s // 2
            elif steps == "gappy":
                s = s * draw(st.integers(1, 7)) + (s > n // 2) * draw(st.integers(0, 500))
            elif steps == "negative":
                s = s - 50
            rows.append(
                pd.DataFrame(
                    {"run_id": f"run{r}", "key": key, "step": s, "timestamp": 0, "value": np.asarray(vals, dtype=float)}
                )
            )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["run_id", "key", "step", "timestamp", "value"])
    )


@MANY
@given(metric_frames())
def test_oscillation_entry_points(frame):
    out = _ok_or_clear(oscillation, frame, n_boot=20)
    if out is not None:
        good = out[out["reason"] == ""]
        assert np.isfinite(good[["mean", "std", "total_power"]].to_numpy(float)).all()
        assert (out.loc[out["reason"] != "", "std"].isna()).all()
    pairs = _ok_or_clear(oscillation_pairs, frame, n_boot=20)
    if pairs is not None:
        assert len(pairs) == frame["run_id"].nunique()
    for run_id in frame["run_id"].unique()[:1]:
        ex = _ok_or_clear(explain, frame, run_id, n_boot=20)
        if ex is not None:
            assert set(ex) == {"factors", "summary", "spectrum", "curves", "implied"}


@MANY
@given(st.text(min_size=1, max_size=80))
def test_run_ids_cannot_escape_the_report_folder(tmp_path_factory, run_id):
    folder = tmp_path_factory.mktemp("figs")
    path = figure_path(folder, run_id)
    assert path.resolve().parent == folder.resolve() and path.name.startswith("run_")
    assert figure_path(folder, run_id + "x") != path


@MANY
@given(
    st.integers(8, 60),
    st.integers(1, 9),
    st.sampled_from(["normal", "nan", "inf", "constant", "huge", "short"]),
)
def test_explain_with_hostile_per_sample_probes(n, batch, kind):
    rng = np.random.default_rng(n * 10 + batch)
    scores = rng.normal(-1, 1, (n, batch))
    if kind == "nan":
        scores[n // 2, 0] = np.nan
    elif kind == "inf":
        scores[0, :] = -np.inf
    elif kind == "constant":
        scores[:] = 0.3
    elif kind == "huge":
        scores *= 1e6
    steps = np.arange(1, n + 1 - (5 if kind == "short" else 0))
    frame = pd.DataFrame(
        {
            "run_id": "r",
            "key": np.repeat(["loss/d_fake", "loss/g", "probe/dbatch_before/d_fake", "probe/dbatch_before/g"], n),
            "step": np.tile(np.arange(1, n + 1), 4),
            "timestamp": 0,
            "value": rng.random(4 * n),
        }
    )
    ps = {"steps": steps, "dbatch_before": scores[: len(steps)], "gbatch_after": scores[: len(steps)]}
    ex = _ok_or_clear(explain, frame, "r", per_sample=ps, n_boot=20, min_length=8)
    if ex is not None:
        s = ex["summary"].iloc[0]
        assert s["law_verdict"] in ("holds", "fails", "undecided", "unavailable")
        if s["law_verdict"] == "unavailable":
            assert s["law_reason"]
        else:
            assert np.isfinite(s["predicted_link"])
