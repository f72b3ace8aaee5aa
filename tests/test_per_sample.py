"""The per-sample probe artifact: written by the harness, read back through MLflow, bad files named."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from gantrack import Config, GantrackError, train
from gantrack.analysis import explain, load_runs
from gantrack.contract import CELLS, PER_SAMPLE_ARTIFACT
from gantrack.probes import read_per_sample


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ps")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    kw = dict(width=0.0625, batch_size=16, steps=60, sample_every=0, experiment="ps")
    with_ps = train(Config(**kw), tracking_uri=uri, quiet=True)
    without = train(Config(per_sample_probes=False, seed=2, **kw), tracking_uri=uri, quiet=True)
    corrupt = train(Config(seed=3, **kw), tracking_uri=uri, quiet=True)
    # a truncated copy of a good artifact replaces the third run's
    good = MlflowClient(uri).download_artifacts(with_ps, PER_SAMPLE_ARTIFACT, str(folder))
    bad = folder / "bad" / "per_sample.npz"
    bad.parent.mkdir()
    bad.write_bytes(open(good, "rb").read()[:500])
    MlflowClient(uri).log_artifact(corrupt, str(bad), "probes")
    return uri, with_ps, without, corrupt


def test_artifact_holds_every_cell_every_step_as_float32(runs):
    uri, with_ps, _, _ = runs
    rs = load_runs("ps", tracking_uri=uri, progress=False)
    ps = rs.per_sample(with_ps)
    assert ps["steps"].tolist() == list(range(1, 61))
    assert set(ps) == {"steps", *CELLS}
    for cell in CELLS:
        assert ps[cell].dtype == np.float32 and ps[cell].shape == (60, 8 if cell.startswith("dbatch") else 16)
    # the logged batch means are the per-sample values' means (float32 round trip)
    wide = rs.wide(run_id=with_ps)
    p = 1 / (1 + np.exp(-ps["gbatch_after"].astype(np.float64)))
    np.testing.assert_allclose(p.mean(axis=1), wide["probe/gbatch_after/p"].to_numpy(), rtol=1e-5)


def test_explain_uses_the_artifact_and_names_what_is_missing_or_broken(runs):
    uri, with_ps, without, corrupt = runs
    rs = load_runs("ps", tracking_uri=uri, progress=False)
    ok = explain(rs, with_ps, n_boot=100, min_length=16)["summary"].iloc[0]
    # the law was computed from the artifact (its numbers are pinned in test_pins)
    assert ok["law_verdict"] != "unavailable" and np.isfinite(ok["predicted_link"])
    assert ok["link_error"] == pytest.approx(ok["predicted_link"] / ok["link"] - 1, rel=1e-9)
    none = explain(rs, without, n_boot=100, min_length=16)["summary"].iloc[0]
    assert none["law_verdict"] == "unavailable" and "no per-sample probes" in none["law_reason"]
    assert np.isfinite(none["link"]) and np.isfinite(none["predicted_link_simple"])  # the rest still computed
    broken = explain(rs, corrupt, n_boot=100, min_length=16)["summary"].iloc[0]
    assert broken["law_verdict"] == "unavailable" and "unreadable" in broken["law_reason"]
    assert "\n" not in broken["law_reason"]


@pytest.mark.parametrize("payload", [b"", b"not a zip", b"PK\x03\x04truncated"])
def test_bad_bytes_are_one_line_errors(payload):
    with pytest.raises(GantrackError, match="unreadable") as e:
        read_per_sample(payload)
    assert "\n" not in str(e.value)


def test_shape_mismatch_is_named(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, steps=np.arange(3), dbatch_before=np.zeros((2, 4), np.float32))
    with pytest.raises(GantrackError, match="dbatch_before has shape"):
        read_per_sample(path)
