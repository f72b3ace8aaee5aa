"""The structure the features stand on: one run owner, one step-statistics module, one computation per
report, a complete contract, no import cycle, documented columns."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from gantrack import Config, GantrackError, LoopProbes, train
from gantrack import contract as C
from gantrack.analysis import build_report, explain, load_runs, oscillation, oscillation_pairs
from gantrack.harness import build_gan, gan_step

PACKAGE = Path(__file__).parent.parent / "gantrack"


# --- one step-statistics module -------------------------------------------------------------------


def _book_step_through_loop_probes(gan, probes: LoopProbes) -> dict:
    """The harness's book step written as a user's loop (the same draws from the same stream)."""
    cfg, fam, D, G = gan.cfg, gan.fam, gan.D, gan.G
    real = gan.sample_real(cfg.half_batch)
    with torch.no_grad():
        G.eval()
        fake = G(gan.latent(cfg.half_batch))
        G.train()
    score_real = D(real)
    gan.opt_d.zero_grad(set_to_none=True)
    fam.d_real(fam.output(score_real)).mean().backward()
    gan.opt_d.step()
    score_fake = D(fake)
    probes.d_step(fake, score_fake, score_real)  # before the fake update, after the real one
    gan.opt_d.zero_grad(set_to_none=True)
    fam.d_fake(fam.output(score_fake)).mean().backward()
    gan.opt_d.step()
    x = G(gan.latent(cfg.batch_size))
    D.requires_grad_(False)
    from gantrack.stepstats import bn_stats_frozen

    with bn_stats_frozen(D):  # Keras 2.2.4: D's BatchNorm on the batch's statistics, running stats kept
        score_gen = D(x)
    probes.g_step(x, score_gen)
    gan.opt_g.zero_grad(set_to_none=True)
    fam.g(fam.output(score_gen)).mean().backward()
    gan.opt_g.step()
    D.requires_grad_(True)
    return probes.end_step()


def test_harness_and_loop_probes_emit_identical_metric_dicts(tmp_path):
    """Same models, same batches: the harness's step and a hand-written loop with LoopProbes log the same
    contract values, bit for bit (both go through stepstats.step_values)."""
    cfg = Config(width=0.0625, batch_size=16, seed=5, sample_every=0, grad_norms=False, fast_path=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        harness = build_gan(cfg)
        mine = build_gan(cfg)
        probes = LoopProbes(mine.D, loss="nsgan", order="d-first", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
        with probes:
            for _ in range(3):
                want = gan_step(harness)
                got = _book_step_through_loop_probes(mine, probes)
                assert set(got) == set(C.contract_keys()) - {C.GP_LOSS}
                assert got == {k: want[k] for k in got}
    finally:
        torch.set_num_threads(threads)


# --- one run owner ---------------------------------------------------------------------------------


def test_loop_probes_runs_end_like_harness_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    D = torch.nn.Sequential(torch.nn.Linear(2, 1))
    probes = LoopProbes(
        D, order="d-first-same-batch", experiment="own", tracking_uri=uri, params={"note": "x" * 7000, "lr": 0.1}
    )
    with probes:
        x = torch.randn(4, 2)
        probes.d_step(x, D(x), D(x))
        probes.g_step(x, D(x))
        probes.end_step()
    harness = train(Config(width=0.0625, batch_size=8, steps=2, sample_every=0, experiment="h"), uri, quiet=True)
    client = MlflowClient(uri)
    for run in (client.get_run(probes.run_id), client.get_run(harness)):
        assert run.info.status == "FINISHED" and run.info.end_time
        assert run.data.tags[C.TAG_STATUS] == "finished"
    assert len(client.get_run(probes.run_id).data.params["note"]) == 6000  # cut to MLflow's limit
    # the same object again: refused before a second run exists
    n = len(client.search_runs([client.get_experiment_by_name("own").experiment_id]))
    with pytest.raises(GantrackError, match="already has run"):
        with probes:
            pass
    assert len(client.search_runs([client.get_experiment_by_name("own").experiment_id])) == n
    assert probes.closed


def test_a_run_that_cannot_be_created_is_one_line_for_loop_probes_too(tmp_path):
    """A store that refuses new runs (a trigger aborts every insert into MLflow's runs table, as a
    read-only role would): LoopProbes says so in one line, as the harness does."""
    import sqlite3

    db = tmp_path / "m.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("gantrack")
    with sqlite3.connect(db) as con:
        con.execute("CREATE TRIGGER refuse BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'no new runs'); END")
    for start in (
        lambda: LoopProbes(torch.nn.Linear(2, 1), tracking_uri=f"sqlite:///{db}").start(),
        lambda: train(Config(width=0.0625, batch_size=8, steps=2, experiment="gantrack"), f"sqlite:///{db}", True),
    ):
        with pytest.raises(GantrackError, match="cannot create a run") as e:
            start()
        assert "\n" not in str(e.value) and "no new runs" in str(e.value)


def test_a_failed_loop_run_ends_failed_with_its_reason_and_status(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    D = torch.nn.Linear(2, 1)
    probes = LoopProbes(D, tracking_uri=uri)
    with pytest.raises(ZeroDivisionError):
        with probes:
            raise ZeroDivisionError("division by zero")
    run = MlflowClient(uri).get_run(probes.run_id)
    assert run.info.status == "FAILED" and run.info.end_time
    assert run.data.tags[C.TAG_FAILURE].startswith("ZeroDivisionError")
    assert run.data.tags[C.TAG_STATUS] == "failed"


# --- one computation per report, published where the runs live ------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("structure")
    uri = f"sqlite:///{folder / 'a.db'}"
    base = Config(width=0.0625, batch_size=16, steps=60, sample_every=0, experiment="s")
    ids = [train(base.replace(seed=s), uri, quiet=True) for s in (1, 1, 2)]  # two runs share scenario and seed
    D = torch.nn.Sequential(torch.nn.Linear(2, 1))
    probes = LoopProbes(
        D, order="d-first-same-batch", experiment="s", tracking_uri=uri, run_name="<script>alert(1)</script>"
    )
    g = torch.Generator().manual_seed(0)
    with probes:
        for _ in range(60):
            x = torch.randn(8, 2, generator=g)
            probes.d_step(x, D(x), D(x) + 1)
            probes.g_step(x, D(x))
            probes.end_step()
    return uri, folder, ids, probes.run_id


def test_build_report_without_a_uri_publishes_to_the_runsets_store(store, tmp_path, monkeypatch):
    uri, _, ids, _ = store
    rs = load_runs("s", tracking_uri=uri, progress=False)
    monkeypatch.chdir(tmp_path)  # a default ./mlflow.db here would be the wrong store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rep = build_report("s", runset=rs, out_dir=tmp_path / "out", progress=False, workers=1, n_boot=50)
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    assert client.get_run(rep.report_run_id).data.tags[C.TAG_KIND] == "report"
    row = rep.summary.set_index("run_id").loc[ids[0]]
    metrics = client.get_run(ids[0]).data.metrics
    assert metrics["explain/ratio"] == pytest.approx(row["ratio"])  # one name for the ratio, everywhere
    assert metrics["explain/link"] == pytest.approx(row["link"])
    osc = rep.oscillation.set_index(["run_id", "key"]).loc[(ids[0], C.G_LOSS)]
    assert metrics["osc/loss/g/std"] == pytest.approx(osc["std"])


def test_the_report_consumes_one_computation(store, tmp_path):
    """The oscillation table and the explanation come from the same prepared series: g's std in the one
    equals the std of g over the steps the other analysed."""
    uri, *_ = store
    rep = build_report("s", tracking_uri=uri, out_dir=tmp_path, progress=False, log_to_mlflow=False, n_boot=50)
    a = rep.analysis
    for rid, result in a.runs.items():
        n = a.summary.set_index("run_id").loc[rid, "n"]
        osc = a.oscillation.set_index(["run_id", "key"]).loc[(rid, C.G_LOSS)]
        assert osc["n"] == n and len(result.implied) == n


def test_report_defects_a_reader_saw_are_fixed(store, tmp_path):
    uri, _, ids, loop_run = store
    rep = build_report(
        "s",
        tracking_uri=uri,
        out_dir=tmp_path,
        progress=False,
        log_to_mlflow=False,
        burn_in=0.2,
        n_boot=60,
        extra_sections=[("Checks", "| statistic | agrees |\n|---|---|\n| mean g | **no** |\n\n1 of 1 checked.")],
    )
    md, page = rep.markdown.read_text(), rep.html.read_text()
    # run-supplied HTML is text in both files
    assert "<script>" not in md and "<script>" not in page and "&lt;script>" in md
    # runs that share scenario and seed get distinct labels, and their run names are shown
    labels = rep.summary.set_index("run_id")["label"]
    assert labels[ids[0]] != labels[ids[1]] and labels.is_unique
    assert rep.summary.set_index("run_id").loc[ids[0], "name"] in md
    # Markdown inside a check table renders in HTML; the sentence after it stays a paragraph
    assert "<td><b>no</b></td>" in page and "**no**" not in page and "<p>1 of 1 checked.</p>" in page
    # the Method paragraph says what was used
    assert "20 % burn-in" in md and "60 resamples" in md and "10 % burn-in" not in md
    # the law is defined once, not in every scenario paragraph
    assert md.count("five numbers: the operating point") <= 1


def test_cancel_is_said_only_of_factors_that_cancel():
    from gantrack.analysis.findings import _factor_sentence

    g = pd.DataFrame({"link": [3.15], "sampling": [0.66], "context": [1.0], "timing": [1.0], "family": ["nsgan"]})
    g["p_bar"], g["p_dbatch_before"], g["p_dbatch_before_gctx"] = 0.24, 0.24, 0.24
    text = _factor_sentence(g, 2.1)
    assert "largely cancel" not in text and "net ×2.08" in text
    g["sampling"] = 0.33
    assert "largely cancel" in _factor_sentence(g, 1.04)


def test_the_ui_hint_is_shell_quoted():
    from gantrack.analysis.report import ui_hint

    hint = ui_hint("sqlite:////tmp/my runs/m.db", "it's mine")
    assert "--tracking-uri 'sqlite:////tmp/my runs/m.db'" in hint
    assert "--experiment 'it'\"'\"'s mine'" in hint


# --- documented columns ------------------------------------------------------------------------------


def test_returned_columns_are_the_documented_ones(store):
    measures = importlib.import_module("gantrack.analysis.measures")
    decompose = importlib.import_module("gantrack.analysis.decompose")
    uri, _, ids, _ = store
    rs = load_runs("s", tracking_uri=uri, progress=False)
    assert list(oscillation(rs.metrics, n_boot=20)) == list(measures.COLUMNS)
    assert list(oscillation_pairs(rs.metrics, n_boot=20)) == list(measures.PAIR_COLUMNS)
    ex = explain(rs, ids[0], n_boot=20)
    assert list(ex["summary"]) == list(decompose.SUMMARY_COLUMNS)
    assert list(ex["factors"]) == list(decompose.FACTOR_COLUMNS)
    for fn, columns in (
        (oscillation, measures.COLUMNS),
        (oscillation_pairs, measures.PAIR_COLUMNS),
        (explain, decompose.SUMMARY_COLUMNS),
    ):
        documented = re.findall(r"^ {8}(\w+) ", fn.__doc__, flags=re.M)
        assert documented == list(columns), fn.__name__


# --- the contract -------------------------------------------------------------------------------------


def test_every_key_and_tag_the_runs_carry_is_declared(store):
    uri, *_ = store
    build_report("s", tracking_uri=uri, out_dir=Path(uri[10:]).parent / "r", progress=False, n_boot=20, workers=1)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("s")
    declared_keys = set(C.per_step_keys()) | set(C.snapshot_keys())
    for run in client.search_runs([exp.experiment_id]):
        tags = {t for t in run.data.tags if t.startswith("gantrack.")}
        assert tags <= set(C.tag_names()), tags - set(C.tag_names())
        for key in run.data.metrics:
            prefix = key.split("/", 1)[0]
            assert key in declared_keys or prefix in (C.OSC_PREFIX, C.EXPLAIN_PREFIX), key
    assert exp.tags[C.EXPERIMENT_KIND_TAG] == C.EXPERIMENT_KIND


def _string_constants(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_module_types_a_tag_or_metric_key_by_hand():
    """Tag names and metric keys are written once, in contract.py, and imported from there."""
    tag = re.compile(r"^(gantrack|mlflow)\.[a-z_]+(\.[a-zA-Z_]+)*$")
    key = re.compile(r"^(loss|acc|prob|probe|grad|weights|sweep|osc|explain)/[a-z_/]*$")
    modules = {p.stem for p in PACKAGE.rglob("*.py")}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "contract.py":
            continue
        for line, text in _string_constants(path):
            module_path = tag.match(text) and (
                (text.split(".", 1)[0] == "gantrack" and text.split(".")[1] in modules)
                or (text.split(".", 1)[0] == "mlflow" and importlib.util.find_spec(text) is not None)  # a logger's name
            )
            if (tag.match(text) and not module_path and text != "mlflow.db") or key.match(text):
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {text!r}")
    assert not found, found


def _imports(path: Path, name: str, modules: dict) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m in modules and m != name}


def test_no_import_cycle_between_modules():
    """Function-level imports included; a package's own ``__init__`` (which re-exports) is left out."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    inits = {"gantrack", "gantrack.analysis"}
    graph = {m: _imports(p, m, modules) - inits for m, p in modules.items() if m not in inits}

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reaches(nxt, goal, seen):
                    return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles


def test_the_analysis_names_are_its_functions_after_every_submodule_loaded():
    import gantrack.analysis as analysis

    for module in ("measures", "decompose", "report", "publish", "runs"):
        importlib.import_module(f"gantrack.analysis.{module}")
    for name in analysis.__all__:
        assert not isinstance(getattr(analysis, name), type(np)), name
