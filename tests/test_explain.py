"""The d_fake-vs-g decomposition on runs whose answers are known."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gantrack import Config, preset
from gantrack.analysis import explain
from gantrack.harness import build_gan, gan_step
from gantrack.probes import PerSampleRecorder, read_per_sample


def long_frame(rows, run_id="r"):
    df = pd.DataFrame(rows)
    df["step"] = np.arange(1, len(df) + 1)
    m = df.melt(id_vars="step", var_name="key", value_name="value")
    m["run_id"], m["timestamp"] = run_id, 0
    return m


def simulate(cfg, steps, per_sample=False):
    """Train ``steps`` steps in memory: the long metrics frame (and the per-sample probe arrays)."""
    gan = build_gan(cfg)
    rec = PerSampleRecorder(steps)
    rows = []
    for step in range(1, steps + 1):
        rows.append(gan_step(gan))
        if gan.cells is not None:
            rec.add(step, gan.cells)
    frame = long_frame(rows)
    return (frame, read_per_sample(rec.save(Path(tempfile.mkdtemp()) / "ps.npz"))) if per_sample else frame


def test_dirac_gan_link_factor_is_one_within_its_ci():
    frame, ps = simulate(preset("dirac").replace(steps=1500), 1500, per_sample=True)
    ex = explain(frame, family="nsgan", per_sample=ps)
    s = ex["summary"].iloc[0]
    assert s["link_lo"] <= 1.0 <= s["link_hi"]
    assert s["predicted_link_simple"] == pytest.approx(1.0, abs=0.02)  # p̄ ≈ 0.5 at the equilibrium
    # every sample is theta (spread 0): the links along the path of the common shift are the measurement
    assert s["predicted_link_path"] == pytest.approx(s["link"], rel=1e-6)
    assert abs(s["link_error"]) < 0.05 and s["law_verdict"] == "holds"
    assert s["residual"] == pytest.approx(1.0, abs=1e-9)
    assert abs(s["g_period"] - np.pi / np.arccos(1 - 0.05**2 / 2)) / s["g_period"] < 0.05


@pytest.mark.parametrize("loss", ["minimax", "wgan-gp"])
def test_mirror_families_have_link_exactly_one(loss):
    cfg = Config(width=0.0625, batch_size=16, loss=loss, sample_every=0)
    ex = explain(simulate(cfg, 120), family=loss, n_boot=200)
    link = ex["factors"].set_index("factor").loc["link"]
    assert link["estimate"] == pytest.approx(1.0, abs=1e-6)
    assert link["lo"] <= 1.0 + 1e-6 and link["hi"] >= 1.0 - 1e-6
    assert ex["summary"]["predicted_link_simple"].iloc[0] == pytest.approx(1.0)


def test_factors_telescope_to_the_measured_ratio_on_a_dcgan_run():
    ex = explain(simulate(Config(width=0.0625, batch_size=16, sample_every=0), 120), n_boot=200)
    assert ex["factors"]["factor"].tolist() == ["link", "context", "timing", "sampling", "residual"]
    f = ex["factors"].set_index("factor")["estimate"]
    ratio = ex["summary"]["ratio"].iloc[0]
    assert f["link"] * f["context"] * f["timing"] * f["sampling"] == pytest.approx(ratio, rel=1e-9)
    assert f["residual"] == pytest.approx(1.0, rel=1e-9)
    assert f["context"] == pytest.approx(1.0, rel=1e-5)  # book schedule: D's step is the G step's context
    assert np.isfinite(ex["summary"][["ratio_lo", "ratio_hi", "implied_ratio", "coherence_mean"]].to_numpy(float)).all()
    assert set(ex["spectrum"].columns) >= {"frequency", "coherence", "transfer_gain", "predicted_gain"}


def test_gain_law_on_series_with_a_known_operating_point():
    """Common logit shifts around p = 0.3: the link factor must be (1-p)/p = 2.33 and the law must hold."""
    rng = np.random.default_rng(0)
    n = 3000
    logit = np.log(0.3 / 0.7) + 0.05 * np.convolve(rng.standard_normal(n + 9), np.ones(10) / 10, "valid")
    p = 1 / (1 + np.exp(-logit))
    d_fake, g = -np.log(1 - p), -np.log(p)
    rows = {
        "loss/d_fake": d_fake,
        "loss/g": g,
        "probe/dbatch_before/p": p,
        "probe/dbatch_before/d_fake": d_fake,
        "probe/dbatch_before/g": g,
        "probe/dbatch_after/g": g,
        "probe/gbatch_after/g": g,
    }
    s = explain(long_frame(rows), family="nsgan")["summary"].iloc[0]
    assert s["predicted_link_simple"] == pytest.approx(7 / 3, rel=0.01)
    assert s["link"] == pytest.approx(7 / 3, rel=0.02)
    assert s["law_verdict"] == "unavailable" and "per-sample" in s["law_reason"]
    assert s["implied_ratio"] == pytest.approx(1.0, rel=1e-6)  # q̂ = p̂ here: one curve in probability space


def test_missing_probes_are_named_and_the_rest_computed():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(500).cumsum() * 0.01 + 1
    ex = explain(long_frame({"loss/d_fake": x, "loss/g": 2 * x + 0.01 * rng.standard_normal(500)}))
    f = ex["factors"].set_index("factor")
    assert np.isfinite(ex["summary"]["ratio"].iloc[0])
    assert np.isnan(f.loc["link", "estimate"]) and "probe/dbatch_before/g" in f.loc["link", "reason"]
    assert "probe/dbatch_after/g" in ex["summary"]["missing_probes"].iloc[0]


def test_explain_experiment_one_row_per_run_with_reasons():
    from gantrack.analysis import RunSet, explain_experiment

    good = simulate(preset("dirac").replace(steps=600), 600)
    good["run_id"] = "good"
    bad = good[good["key"] == "loss/d_fake"].assign(run_id="no-g")
    runs = pd.DataFrame(
        {
            "run_id": ["good", "no-g"],
            "tags.gantrack.loss": ["nsgan", "nsgan"],
            "tags.gantrack.scenario": ["dirac", "dirac"],
        }
    )
    out = explain_experiment(RunSet(runs, pd.concat([good, bad], ignore_index=True)), progress=False, n_boot=100)
    assert out["run_id"].tolist() == ["good", "no-g"]
    assert out.loc[0, "reason"] == "" and np.isfinite(out.loc[0, "ratio"])
    assert "loss/g" in out.loc[1, "reason"]
    assert (out["scenario"] == "dirac").all()
