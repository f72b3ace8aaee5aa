"""Report and MLflow UI, checked the way a person sees them: in headless Chromium."""

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
from mlflow.tracking import MlflowClient

from gantrack import Config, train
from gantrack.analysis import build_report, load_runs

from conftest import free_port, spawn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")


def dump_dom(url: str, budget_ms: int = 20000) -> str:
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={tempfile.mkdtemp(prefix='gantrack-chromium-')}",  # its own profile
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    ids = [
        train(
            Config(width=0.0625, batch_size=16, steps=80, sample_every=0, experiment="rep", seed=s, loss=loss),
            tracking_uri=uri,
            quiet=True,
        )
        for s, loss in ((1, "nsgan"), (2, "nsgan"), (1, "minimax"))
    ]
    rep = build_report("rep", tracking_uri=uri, out_dir=folder / "report", progress=False, n_boot=200)
    return uri, ids, rep, folder


def test_report_files_tables_and_mlflow_results(experiment):
    uri, ids, rep, folder = experiment
    md = rep.markdown.read_text()
    assert "Why does g swing" in md and "| run |" in md
    assert md.index("figures/answer.png") < md.index("## Across runs")  # the answer comes first
    assert "The law against the measurements" in md and "verdict (±15 %)" in md
    assert len(rep.summary) == 3 and (rep.summary["reason"] == "").all()
    for rid in ids:
        assert (folder / "report" / "figures" / f"run_{rid}.png").stat().st_size > 10_000
        assert rid in md
    # the answer is written from these numbers: the measured ratio of the nsgan runs appears in it
    ratio = rep.summary[rep.summary["family"] == "nsgan"]["ratio"].median()
    assert f"{ratio:.2f}" in md
    client = MlflowClient(uri)
    run = client.get_run(ids[0])
    assert {"explain/ratio", "explain/link", "osc/loss/g/dominant_period"} <= set(run.data.metrics)
    assert "gantrack analysis" in run.data.tags["mlflow.note.content"]
    # the diagnosis: a table, each run's section opens with its verdict, the tag, the description's start
    assert "## Diagnosis: which failure mode each run is in" in md and md.count("**Diagnosis: ") == 3
    assert run.data.tags["gantrack.diagnosis"] in ("stable", "undecided", "mode-collapse", "convergence-failure")
    assert run.data.tags["mlflow.note.content"].startswith("**Diagnosis: " + run.data.tags["gantrack.diagnosis"])
    assert [a.path for a in client.list_artifacts(ids[0], "gantrack_analysis")] == [
        f"gantrack_analysis/run_{ids[0]}.png"
    ]
    report_run = client.get_run(rep.report_run_id)
    assert report_run.data.tags["gantrack.kind"] == "report"
    assert {"report.html", "report.md", "figures"} <= {a.path for a in client.list_artifacts(rep.report_run_id)}
    # a second report ignores the report run and logs a new one
    again = build_report("rep", tracking_uri=uri, out_dir=folder / "report2", progress=False, n_boot=100)
    assert len(again.summary) == 3
    assert len(load_runs("rep", tracking_uri=uri, progress=False).runs) == 5


@needs_chromium
def test_report_renders_in_chromium_with_every_figure_loaded(experiment):
    _, _, rep, folder = experiment
    site = rep.html.parent
    (site / "check.html").write_text(
        "<html><body><pre id='result'>pending</pre><iframe id='f' src='report.html' width=1280 height=800></iframe>"
        "<script>document.getElementById('f').onload=function(){var d=this.contentDocument;"
        "var imgs=[].slice.call(d.images);var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0});"
        "var w=d.documentElement.scrollWidth-d.documentElement.clientWidth;"
        "document.getElementById('result').textContent='images '+ok.length+'/'+imgs.length+' h2 '+"
        "d.getElementsByTagName('h2').length+' overflow '+w;};</script></body></html>"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = dump_dom(f"http://127.0.0.1:{server.server_address[1]}/check.html", 10000)
    finally:
        server.shutdown()
    m = re.search(r"images (\d+)/(\d+) h2 (\d+) overflow (-?\d+)", dom)
    assert m, dom[:500]
    loaded, total, h2, overflow = map(int, m.groups())
    assert total == 3 + 3 and loaded == total  # one per run + the answer + predicted-vs-measured + factor bars
    assert h2 >= 3
    assert overflow <= 0  # no horizontal scroll at 1280 px: wide tables scroll inside their own box


@needs_chromium
def test_gantrack_ui_shows_runs_and_gantrack_metrics(experiment):
    uri, ids, _, _ = experiment
    port = free_port()
    proc = spawn(
        [sys.executable, "-m", "gantrack.cli", "ui", "--tracking-uri", uri, "--port", str(port), "--experiment", "rep"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # printed once the server answers
        assert line.startswith("MLflow UI: http://127.0.0.1:"), line
        url = line.split()[2]
        exp_id = MlflowClient(uri).get_experiment_by_name("rep").experiment_id
        assert url == f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        dom = dump_dom(url)
        names = {MlflowClient(uri).get_run(r).info.run_name for r in ids}
        assert all(n in dom for n in names), dom[:300]
        text = re.sub(r"<[^>]+>", " ", dom)
        # the Model training view, not the GenAI one a fresh browser gets without the parameter
        assert "Judges" not in text and "Evaluation runs" not in text, text[:500]
        assert "Judges" in re.sub(r"<[^>]+>", " ", dump_dom(url.split("?")[0]))  # the check can fail
        page = dump_dom(f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{ids[0]}")
        for key in ("loss/g", "loss/d_fake", "explain/ratio", "osc/loss/g"):
            assert key in page, key
        assert "Diagnosis: " in page  # the description, first thing on the run's page
    finally:
        proc.terminate()  # SIGTERM to gantrack alone: it stops its server (tests/test_processes.py checks how)
        proc.wait(timeout=60)
