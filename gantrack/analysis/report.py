"""Comparative report across the runs of an experiment: analyse → render → publish.

- ``analyse(runset, **options)`` computes everything once and returns an ``Analysis``: each run's
  series are prepared once (``measures.prepare``) and feed both the oscillation measures and the
  explanation, so the two see the same steps;
- ``render(analysis, out_dir)`` draws the figures and writes ``report.md`` and ``report.html`` from one
  list of sections (``document``);
- ``publish.publish_report`` logs the results back to the store the runs were read from: ``explain/*``
  and ``osc/*`` metrics, a figure and a description line on each run, and the report as a run tagged
  ``gantrack.kind = report``.

``build_report(experiment, ...)`` does the three in a row.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import contract as C
from ..errors import GantrackError, first_line
from ..losses import family as loss_family
from ..messages import warn
from . import document as D
from . import plots
from .decompose import FACTOR_COLUMNS, SERIES_KEYS, explain
from .findings import _groups, answer, run_labels
from .measures import Options, measure, prepare
from .runs import RunSet, load_runs

META_COLUMNS = {  # run tag → the report's column
    C.TAG_SCENARIO: "scenario",
    C.TAG_LOSS: "loss",
    C.TAG_SEED: "seed",
    C.TAG_SCHEDULE: "schedule",
    C.TAG_ARCH: "arch",
    C.TAG_PRECISION: "precision",
}


@dataclass
class RunResult:
    """What the report draws for one run."""

    wide: pd.DataFrame  # step × key: the losses and accuracies as logged
    spectrum: pd.DataFrame
    curves: pd.DataFrame
    implied: pd.DataFrame  # step, p_hat, q_hat over the analysed steps (BCE families; empty otherwise)
    title: str
    family: str = "nsgan"


@dataclass
class Analysis:
    """Everything the report shows, computed once (``analyse``)."""

    experiment: str
    options: Options
    runset: RunSet  # the training runs analysed (reports and sweep parents left out)
    summary: pd.DataFrame  # one row per run: label, name, tags, explain's summary, reason
    factors: pd.DataFrame  # tidy: run_id, label, factor, estimate, lo, hi, ...
    oscillation: pd.DataFrame  # one row per (run_id, key) of loss/d_real, loss/d_fake, loss/g
    runs: dict[str, RunResult] = field(default_factory=dict)  # by run id, runs that could be explained
    findings: list[str] = field(default_factory=list)
    diagnosis: pd.DataFrame | None = None  # one row per run (failure_modes.diagnose)


@dataclass
class Report:
    html: Path
    markdown: Path
    summary: pd.DataFrame  # one row per run
    factors: pd.DataFrame  # tidy: run, factor, estimate, CI
    oscillation: pd.DataFrame
    report_run_id: str | None
    analysis: Analysis | None = None


def figure_path(folder: Path, run_id: str) -> Path:
    """Where a run's figure goes: its id reduced to [A-Za-z0-9_-], so a hostile id cannot leave ``folder``."""
    import hashlib
    import re

    safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(run_id))[:64]
    if safe != str(run_id):  # keep distinct ids distinct after the reduction
        safe += "-" + hashlib.sha256(str(run_id).encode()).hexdigest()[:8]
    path = folder / f"run_{safe}.png"
    assert path.resolve().parent == folder.resolve()
    return path


def training_runs(rs: RunSet) -> RunSet:
    """The RunSet without gantrack's own report and sweep-parent runs."""
    kind = f"tags.{C.TAG_KIND}"
    if kind not in rs.runs.columns:
        return rs
    keep = ~rs.runs[kind].fillna("").isin(["report", "sweep"])
    ids = set(rs.runs.loc[keep, "run_id"])
    return RunSet(
        rs.runs[keep].reset_index(drop=True),
        rs.metrics[rs.metrics["run_id"].isin(ids)],
        rs.tracking_uri,
        rs.cache_dir,
        rs.key_map,
    )


def analyse(runset: RunSet, experiment: str = "", progress: bool = False, **options) -> Analysis:
    """Oscillation and explanation of every training run of ``runset``, from one preparation of the series.

    ``options``: as for ``oscillation`` (``Options``). Runs that cannot be explained get a ``reason``
    in the summary instead of numbers; the others go on.
    """
    from tqdm import tqdm

    opt = Options.of(**options)
    rs = training_runs(runset)
    if rs.runs.empty:
        raise GantrackError(f"experiment {experiment!r} has no training runs to report on")
    series, failed = prepare(rs.metrics, sorted(set(SERIES_KEYS) | set(C.LOSS_KEYS)), opt)
    osc = measure(
        [s for s in series if s.key in C.LOSS_KEYS], [f for f in failed if f["key"] in C.LOSS_KEYS], opt
    ).reset_index(drop=True)
    meta = rs.runs.rename(columns={f"tags.{t}": c for t, c in META_COLUMNS.items()})
    meta = meta.assign(label=run_labels(meta).to_numpy() if len(meta) else [])
    summaries, factors, results = [], [], {}
    for _, run in tqdm(list(meta.iterrows()), disable=not progress, desc="explaining", unit="run"):
        rid, label = run["run_id"], run["label"]
        mine = ([s for s in series if s.run_id == rid], [f for f in failed if f["run_id"] == rid])
        try:
            ex = explain(rs, rid, prepared=mine, **options)
        except GantrackError as e:
            summaries.append(pd.DataFrame([{"run_id": rid, "reason": _not_explained(run, str(e))}]))
            continue
        wide = _wide(rs.metrics, rid)
        summaries.append(ex["summary"].assign(reason="", **_margins(wide, opt)))
        factors.append(ex["factors"].assign(label=label))
        # probability-space panels only where the family's output is a probability (BCE families)
        implied = ex["implied"] if loss_family(ex["summary"]["family"].iloc[0]).probability else ex["implied"][:0]
        title = f"{run.get('name', rid)} ({label})"
        fam = ex["summary"]["family"].iloc[0]
        results[rid] = RunResult(wide, ex["spectrum"], ex["curves"], implied, title, fam)
    cols = ["run_id", "name", "label", *[c for c in META_COLUMNS.values() if c in meta]]
    summary = meta[cols].merge(pd.concat(summaries, ignore_index=True), on="run_id", how="right")
    summary["reason"] = summary["reason"].fillna("")
    factors = pd.concat(factors, ignore_index=True) if factors else pd.DataFrame(columns=[*FACTOR_COLUMNS, "label"])
    from .failure_modes import diagnose

    diagnosis = diagnose(rs).merge(meta[["run_id", "label"]], on="run_id", how="left")
    return Analysis(experiment, opt, rs, summary, factors, osc, results, answer(summary), diagnosis)


def _margins(wide: pd.DataFrame, opt: Options) -> dict[str, float]:
    """Hinge runs: the mean shares of fakes and reals inside the margin after burn-in (NaN otherwise)."""
    from .measures import burn_in_step

    out = {"margin_fake": float("nan"), "margin_real": float("nan")}
    if C.MARGIN_FAKE in wide and len(wide):
        late = wide[wide.index >= burn_in_step(wide.index.to_numpy(), opt.burn_in)]
        out["margin_fake"] = float(late[C.MARGIN_FAKE].mean())
        if C.MARGIN_REAL in late:
            out["margin_real"] = float(late[C.MARGIN_REAL].mean())
    return out


def _not_explained(run: pd.Series, why: str) -> str:
    """Why a run has no numbers; an unfinished run says so first (and whether its process is gone)."""
    from ..tracking import orphan_status

    if run.get("status") != "RUNNING":
        return why
    tags = {k[5:]: v for k, v in run.items() if k.startswith("tags.") and isinstance(v, str)}
    start = run.get("start_time")
    start_ms = int(start.timestamp() * 1000) if isinstance(start, pd.Timestamp) else None
    orphan = orphan_status("RUNNING", tags, start_ms)
    return f"not finished (RUNNING{'; ' + orphan if orphan else ', still training'}): {why}"


def _wide(metrics: pd.DataFrame, run_id: str) -> pd.DataFrame:
    keys = [*C.LOSS_KEYS, C.GP_LOSS, C.ACC_REAL, C.ACC_FAKE, C.MARGIN_FAKE, C.MARGIN_REAL]
    sub = metrics[(metrics["run_id"] == run_id) & metrics["key"].isin(keys)]
    wide = sub.pivot_table(index="step", columns="key", values="value", aggfunc="last", observed=True)
    wide.columns = wide.columns.astype(str)
    return wide


def _implied_tuple(result: RunResult):
    """(steps, p̂, q̂) for the probability-space panels; None where the family has no probability space."""
    imp = result.implied
    if imp.empty or imp["p_hat"].isna().all():
        return None
    return imp["step"].to_numpy(), imp["p_hat"].to_numpy(), imp["q_hat"].to_numpy()


def _run_figure(args) -> bytes:
    return plots.png_bytes(plots.run_panels(*args))


def _first_block(findings: list[str]) -> int:
    """Index after the first group's paragraph and its bullets (the answer to the question)."""
    i = 1
    while i < len(findings) and findings[i].startswith("- "):
        i += 1
    return i


def render(
    analysis: Analysis,
    out_dir: str | Path,
    extra_sections: list[tuple[str, str | pd.DataFrame]] | None = None,
    workers: int = 2,
    progress: bool = False,
) -> tuple[Path, Path, dict[str, Path]]:
    """Figures, ``report.md`` and ``report.html`` under ``out_dir``; returns (html, markdown, run figures).

    ``extra_sections``: (title, Markdown text or a DataFrame of Markdown-inline cells), placed after the
    answer."""
    from tqdm import tqdm

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GantrackError(f"--out {out} exists and is not a folder")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    a, summary = analysis, analysis.summary
    jobs = [(rid, (r.wide, r.spectrum, r.curves, r.title, _implied_tuple(r), r.family)) for rid, r in a.runs.items()]
    if workers > 1 and len(jobs) > 3:  # per-run figures are independent: render them in worker processes
        with ProcessPoolExecutor(workers) as pool:
            it = pool.map(_run_figure, [j[1] for j in jobs])
            pngs = list(tqdm(it, total=len(jobs), disable=not progress, desc="figures", unit="run"))
    else:
        pngs = [_run_figure(j[1]) for j in jobs]
    run_pngs = {}
    for (rid, _), png in zip(jobs, pngs):
        path = figure_path(out / "figures", rid)
        path.write_bytes(png)
        run_pngs[rid] = path
    cross = {}
    ok = summary[summary["reason"] == ""]
    if len(ok):
        first = _groups(ok)[0][1].iloc[0]  # the question's scenario, its first run
        r = a.runs[first["run_id"]]
        answer = plots.answer_figure(r.wide, _implied_tuple(r), first["label"], r.family)
        cross["answer.png"] = plots.png_bytes(answer, dpi=90)
        cross["predicted_vs_measured.png"] = plots.png_bytes(plots.predicted_vs_measured(ok), dpi=90)
        cross["factors.png"] = plots.png_bytes(plots.factor_bars(a.factors), dpi=90)
    for name, png in cross.items():
        (out / "figures" / name).write_bytes(png)

    sections = _sections(a, cross, run_pngs, extra_sections or [])
    n = len(summary)
    meta = f"{n} run{'s' * (n != 1)}, generated {time.strftime('%Y-%m-%d %H:%M')}."
    title, footer = f"gantrack report: {a.experiment}", "Method: " + D.method(a.options)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(D.to_markdown(title, meta, sections, footer))
    html_path.write_text(D.to_html(title, meta, sections, footer))
    return html_path, md_path, run_pngs


def _image(cross: dict, name: str, alt: str) -> D.Image:
    return D.Image(cross[name], f"figures/{name}", alt)


def _sections(a: Analysis, cross: dict, run_pngs: dict, extra: list) -> list[D.Section]:
    cut = _first_block(a.findings)
    first, rest = a.findings[:cut], a.findings[cut:]
    answer_blocks = []
    if "answer.png" in cross:
        answer_blocks.append(
            _image(cross, "answer.png", "d_fake and g as the book plots them, and in probability space")
        )
    answer_blocks.append(D.Text(first, boxed=True))
    mirrors_only = a.summary["family"].isin(C.MIRROR_FAMILIES).all() if "family" in a.summary else False
    question = "How d_fake and g differ" if mirrors_only else "Why does g swing while d_fake looks calm?"
    sections = [D.Section(question, answer_blocks)]
    if rest:
        sections.append(D.Section("The other scenarios", [D.Text(rest)]))
    for title, body in extra:
        blocks = [D.Table(body)] if isinstance(body, pd.DataFrame) else D.markdown_section(body)
        sections.append(D.Section(title, blocks))
    if a.diagnosis is not None and len(a.diagnosis):
        sections.append(
            D.Section("Diagnosis: which failure mode each run is in", [D.Table(D.diagnosis_table(a.diagnosis))])
        )
        from .failure_modes import signature_table, signatures

        sig = signatures(a.runset, a.diagnosis)
        if sig["scenario"].nunique() > 1:
            sections.append(
                D.Section(
                    "The failures' signatures against the stable run",
                    [D.Table(signature_table(sig)), D.Text([D.SIGNATURE_NOTES])],
                )
            )
    law = D.law_table(a.summary)
    if len(law):
        sections.append(D.Section("The law against the measurements", [D.Table(law)]))
    across = [D.Table(D.runs_table(a.summary, a.oscillation)), D.Text([D.RUN_TABLE_NOTES])]
    across += [_image(cross, name, name) for name in cross if name != "answer.png"]
    sections.append(D.Section("Across runs", across))
    details = []
    verdicts = {} if a.diagnosis is None else {r["run_id"]: r for _, r in a.diagnosis.iterrows()}
    for rid, path in run_pngs.items():
        r = a.summary[a.summary["run_id"] == rid].iloc[0]
        f = a.factors[a.factors["run_id"] == rid]
        details.append(
            D.Details(
                f"{r['label']} `{rid}`",
                D.verdict_blocks(verdicts.get(rid))
                + [D.Image(path.read_bytes(), f"figures/{path.name}", f"run {rid}"), D.Table(D.factors_table(f))],
            )
        )
    for _, r in a.summary[a.summary["reason"] != ""].iterrows():
        details.append(
            D.Details(
                f"{r['label']} `{r['run_id']}`",
                D.verdict_blocks(verdicts.get(r["run_id"])) + [D.Text([f"Not explained: {r['reason']}."])],
            )
        )
    sections.append(D.Section("Runs", details))
    return sections


def ui_hint(tracking_uri: str, experiment: str) -> str:
    """How to browse the runs, as a command the user can paste (shell-quoted)."""
    from ..tracking import redact

    if tracking_uri.startswith(("http://", "https://")):
        return f"browse the runs: {redact(tracking_uri)} (the tracking server's UI), experiment {experiment}"
    uri = f" --tracking-uri {shlex.quote(redact(tracking_uri))}" if tracking_uri else ""
    return (
        f"browse the runs: gantrack ui{uri} --experiment {shlex.quote(experiment)}   "
        "(MLflow UI on http://127.0.0.1:5000)"
    )


def build_report(
    experiment: str,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    runset: RunSet | None = None,
    log_to_mlflow: bool = True,
    progress: bool = True,
    extra_sections: list[tuple[str, str | pd.DataFrame]] | None = None,
    workers: int = 2,
    key_map: dict[str, str] | None = None,
    **options,
) -> Report:
    """Analyse every run of ``experiment`` and write the report to ``out_dir`` (default
    ``./reports/<experiment>``); unless ``log_to_mlflow`` is false, log the results back to the store the
    runs were read from (``runset.tracking_uri``; ``tracking_uri`` when the RunSet has none).
    ``extra_sections``: (title, Markdown or DataFrame) placed after the answer; ``key_map``: for runs
    another loop logged under its own names (see ``load_runs``); ``options``: as for ``oscillation``."""
    from .publish import publish_report

    t0 = time.perf_counter()
    rs = runset or load_runs(experiment, tracking_uri=tracking_uri, progress=progress, key_map=key_map)
    analysis = analyse(rs, experiment, progress=progress, **options)
    out = Path(out_dir or Path("reports") / experiment)
    html_path, md_path, run_pngs = render(analysis, out, extra_sections, workers, progress)
    report_run = None
    store_uri = rs.tracking_uri or tracking_uri
    if log_to_mlflow:
        from ..tracking import redact, resolve_tracking_uri

        store_uri = resolve_tracking_uri(store_uri)
        try:
            report_run = publish_report(analysis, store_uri, run_pngs, out)
        except Exception as e:  # a read-only role (direct reads), a store gone: the files are written regardless
            why = first_line(e, prefer=("denied", "rror"))
            warn("warning: report written to %s but not logged back to %s: %s", out, redact(store_uri), why)
    if progress:
        print(f"report built in {time.perf_counter() - t0:.1f} s", flush=True)
    return Report(html_path, md_path, analysis.summary, analysis.factors, analysis.oscillation, report_run, analysis)
