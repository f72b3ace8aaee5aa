"""The examples run, a few steps each, and what they log is explainable; key maps on foreign runs."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gantrack import GantrackError
from gantrack.analysis import explain, load_runs

from conftest import cli_in_process

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NARROW = ["--ngf", "16", "--ndf", "16"]  # the own loop at half its default width: what is tested is not learning


def test_dcgan_own_loop_explains_every_factor_its_order_allows(store):
    run_id, _ = example("dcgan_own_loop").main(
        ["--steps", "60", *NARROW, "--tracking-uri", store, "--experiment", "own"]
    )
    rs = load_runs("own", tracking_uri=store, progress=False)
    snaps = rs.metrics[(rs.metrics["run_id"] == run_id) & (rs.metrics["key"] == "div/duplicates")]
    assert snaps["step"].tolist() == [50]  # --diversity-every's default
    ex = explain(rs, run_id, n_boot=100, min_length=16)
    f = ex["factors"].set_index("factor")
    assert f.loc["sampling", "estimate"] == pytest.approx(1.0, abs=1e-6)  # G scores D's own batch
    assert np.isfinite(f.loc[["link", "context", "timing"], "estimate"].astype(float)).all()
    assert f.loc["residual", "estimate"] == pytest.approx(1.0, rel=1e-5)
    s = ex["summary"].iloc[0]  # the law came from the loop's per-sample artifact
    assert s["law_verdict"] != "unavailable" and "per-sample" not in s["law_reason"]


def test_dcgan_own_loop_is_the_same_training_without_probes(store, capsys):
    loop = example("dcgan_own_loop")
    capsys.readouterr()
    loop.main(["--steps", "51", *NARROW, "--tracking-uri", store])
    with_probes = capsys.readouterr().out
    loop.main(["--steps", "51", *NARROW, "--no-probes"])
    without = capsys.readouterr().out
    losses = [line for line in with_probes.splitlines() if line.startswith("[")]
    assert len(losses) == 2 and losses == [line for line in without.splitlines() if line.startswith("[")]


def test_lightning_callback_logs_a_g_first_run(store):
    pytest.importorskip("lightning")
    run_id = example("lightning_gan").main(["--steps", "30", "--tracking-uri", store, "--experiment", "pl"])
    rs = load_runs("pl", tracking_uri=store, progress=False)
    assert rs.runs["status"].tolist() == ["FINISHED"]
    assert rs.runs["tags.gantrack.update_order"].iloc[0] == "g-first"
    f = explain(rs, run_id, n_boot=100, min_length=16)["factors"].set_index("factor")["estimate"]
    assert f["timing"] == 1.0 and f["residual"] == pytest.approx(1.0, rel=1e-5)
    assert len(rs.per_sample(run_id)["steps"]) == 30


def test_foreign_runs_are_explained_through_a_key_map(store, tmp_path):
    ids, rep = example("foreign_runs").main(
        ["--steps", "120", "--tracking-uri", store, "--experiment", "foreign", "--out", str(tmp_path / "rep")]
    )
    assert len(rep.summary) == 2 and (rep.summary["reason"] == "").all()
    md = rep.markdown.read_text()
    assert "do not log gantrack's probe cells" in md and "LoopProbes" in md
    s = rep.summary.iloc[0]
    assert np.isfinite(s["ratio"]) and s["p_bar_source"] == "implied by d_fake"
    assert np.isnan(s["link"])
    from mlflow import MlflowClient

    client = MlflowClient(store)
    assert [f.path for f in client.list_artifacts(ids[0], "samples")] == ["samples/final.png"]  # G's scatter


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "gantrack.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    example("foreign_runs").train_without_gantrack(80, 1, "foreign", uri)  # (run id, G)
    return uri, folder


def test_report_cli_with_keys_on_plain_mlflow_runs(foreign):
    uri, folder = foreign
    r = cli(
        "report",
        "--experiment",
        "foreign",
        "--tracking-uri",
        uri,
        "--key",
        "loss/d_fake=errD_fake",
        "--key",
        "loss/g=errG",
        "--no-mlflow",
        "--quiet",
        "--out",
        str(folder / "r"),
        cwd=folder,
    )
    assert r.returncode == 0, r.stderr
    assert "cannot be measured" in (folder / "r" / "report.md").read_text()


@pytest.mark.parametrize(
    "keys, message",
    [
        (["--key", "loss/d_fake=nope", "--key", "loss/g=errG"], "no run logged 'nope'"),
        (["--key", "loss/d_fake=errG", "--key", "loss/g=errG"], "both map to 'errG'"),
        (["--key", "loss/g=errG"], "leaves loss/d_fake unmapped"),
        (["--key", "loss/whatever=errG", "--key", "loss/d_fake=errD_fake"], "not a gantrack metric"),
        (["--key", "loss/d_fake"], "expects CONTRACT_KEY=YOUR_KEY"),
        (["--keymap", "nonesuch"], "unknown key map"),
    ],
)
def test_bad_key_maps_are_one_line_exit_2(foreign, keys, message, capsys, monkeypatch):
    uri, folder = foreign
    monkeypatch.chdir(folder)
    args = ["report", "--experiment", "foreign", "--tracking-uri", uri, "--no-mlflow", "--quiet", *keys]
    code, out, err = cli_in_process(args, capsys, monkeypatch)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_a_bad_key_map_through_a_real_process_is_one_line_exit_2(foreign):
    uri, folder = foreign
    r = cli(
        "report", "--experiment", "foreign", "--tracking-uri", uri, "--no-mlflow", "--quiet", "--key", "x", cwd=folder
    )
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "expects CONTRACT_KEY=YOUR_KEY" in lines[0], r.stderr


def test_keymaps_are_listed():
    r = cli("keymaps", cwd=".")
    assert r.returncode == 0 and "pytorch-dcgan" in r.stdout and "--key loss/d_fake=errD_fake" in r.stdout


def test_load_runs_key_map_errors_name_the_runs(foreign):
    uri, _ = foreign
    with pytest.raises(GantrackError, match="ring-s1|run"):
        load_runs("foreign", tracking_uri=uri, key_map={"loss/g": "errG"}, progress=False)


def test_wgan_gp_example_with_critic_steps_logs_its_penalty_and_explains(store):
    run_id, _ = example("wgan_gp_ring").main(
        ["--steps", "40", "--diversity-every", "20", "--tracking-uri", store, "--experiment", "wgan"]
    )
    rs = load_runs("wgan", tracking_uri=store, progress=False)
    gp = rs.metrics[(rs.metrics["run_id"] == run_id) & (rs.metrics["key"] == "loss/gp")]
    assert sorted(gp["step"]) == list(range(1, 41))
    cov = rs.metrics[(rs.metrics["run_id"] == run_id) & (rs.metrics["key"] == "div/coverage")]
    assert sorted(cov["step"]) == [20, 40] and cov["value"].between(0, 1).all()  # G against the ring's points
    f = explain(rs, run_id, n_boot=50, min_length=16)["factors"].set_index("factor")["estimate"]
    assert f["link"] == pytest.approx(1.0, rel=1e-6)  # WGAN: g = -d_fake
    assert f["residual"] == pytest.approx(1.0, rel=1e-6)


def test_conditional_dcgan_example_probes_a_d_of_two_inputs(store):
    run_id, _ = example("conditional_dcgan").main(["--steps", "40", "--tracking-uri", store, "--experiment", "cond"])
    rs = load_runs("cond", tracking_uri=store, progress=False)
    f = explain(rs, run_id, n_boot=50, min_length=16)["factors"].set_index("factor")["estimate"]
    assert np.isfinite(f[["link", "context", "timing", "sampling"]].astype(float)).all()
    assert f["residual"] == pytest.approx(1.0, rel=1e-5)
