"""Comparative report across the runs of an experiment: HTML (figures embedded) and Markdown.

``build_report`` loads the runs, measures oscillation, explains d_fake vs g per run, draws the
figures, writes ``report.html`` / ``report.md`` (+ ``figures/``) and, unless told not to, logs
everything back to MLflow: ``explain/*`` and ``osc/*`` metrics and a figure on each run, and the
report itself as artifacts of a run tagged ``gantrack.kind = report``.
"""

from __future__ import annotations

import base64
import html
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import GantrackError
from . import plots
from .explain import explain
from .oscillation import log_oscillation, oscillation
from .runs import RunSet, load_runs

LOSS_KEYS = ["loss/d_real", "loss/d_fake", "loss/g"]
EXPLAIN_METRICS = ["ratio", "link", "link_lo", "link_hi", "timing", "sampling", "residual", "p_bar",
                   "predicted_link", "implied_ratio", "coherence_mean", "corr", "g_period"]


@dataclass
class Report:
    html: Path
    markdown: Path
    summary: pd.DataFrame  # one row per run
    factors: pd.DataFrame  # tidy: run, factor, estimate, CI
    oscillation: pd.DataFrame
    report_run_id: str | None


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


def _label(row) -> str:
    parts = [str(row.get(c)) for c in ("scenario", "loss") if isinstance(row.get(c), str)]
    seed = row.get("seed")
    return "/".join(parts) + (f"/s{seed}" if isinstance(seed, str) else "") or str(row["run_id"])[:8]


def _fmt(x, digits=2) -> str:
    return "—" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{digits}f}"


def _ci(row, name) -> str:
    return f"{_fmt(row[name])} [{_fmt(row[name + '_lo'])}, {_fmt(row[name + '_hi'])}]"


def answer(summary: pd.DataFrame) -> list[str]:
    """Plain-language findings, each sentence computed from this experiment's numbers."""
    s = summary[summary["reason"] == ""]
    if s.empty:
        return ["No run of this experiment logged both loss/d_fake and loss/g: nothing to explain."]
    out = []
    s = s.assign(group=s["scenario"].fillna("").astype(str) + " / " + s["family"]
                 if "scenario" in s and s["scenario"].notna().any() and s["scenario"].nunique() > 1 else s["family"])
    for group, g in s.groupby("group", sort=False):
        fam = g["family"].iloc[0]
        n = len(g)
        ratio = g["ratio"].median()
        calm = "swings more than" if ratio > 1.1 else ("moves less than" if ratio < 0.9 else "moves about as much as")
        out.append(f"**{group}** ({n} run{'s' * (n > 1)}): g {calm} d_fake — median std(g)/std(d_fake) = "
                   f"{ratio:.2f} (range {g['ratio'].min():.2f}–{g['ratio'].max():.2f}); the two curves are "
                   f"{'negatively' if g['corr'].median() < 0 else 'positively'} correlated "
                   f"(median r = {g['corr'].median():.2f}).")
        have = g.dropna(subset=["link", "timing", "sampling"])
        if len(have):
            parts = []
            for f in ("link", "timing", "sampling"):
                parts.append(f"{f} ×{have[f].median():.2f}")
            biggest = max(("link", "timing", "sampling"), key=lambda f: abs(np.log(have[f].median())))
            med = {f: have[f].median() for f in ("link", "timing", "sampling")}
            if biggest == "link":
                why = (f"at this operating point the same move of D(G(z)) moves g {med['link']:.2f}× as far as "
                       "d_fake (" + ("g's -log p is the steeper link below p = 1/2" if fam == "nsgan" and med["link"] > 1
                                     else "d_fake's link is the steeper one here" if med["link"] < 1
                                     else "the family's links") + ")")
            elif biggest == "timing":
                why = (f"D's update between the two measurements changes what g sees (×{med['timing']:.2f} "
                       "on the same batch)")
            else:
                why = (f"the different batches (and batch statistics) of d_fake and g change the spread "
                       f"(×{med['sampling']:.2f} under the same D)")
            out.append(f"Decomposition (medians): {', '.join(parts)}; the largest factor is **{biggest}**: {why}.")
        pred = g.dropna(subset=["predicted_link", "link_lo"])
        if len(pred):
            holds = pred["gain_law_holds"].astype(bool)
            out.append(f"Gain law: at the operating point p̄ = {pred['p_bar'].median():.3f} it predicts a link gain of "
                       f"{pred['predicted_link'].median():.2f}; the measured link factor is "
                       f"{pred['link'].median():.2f}. The prediction lies inside the measured 95% CI in "
                       f"{int(holds.sum())} of {len(pred)} runs. Applying the links to the whole path of the batch "
                       f"mean p̄_t instead of its average predicts {pred['predicted_link_path'].median():.2f}: the "
                       "rest is the spread of D(G(z)) within each batch.")
            failed = pred[~holds]
            for _, r in failed.iterrows():
                why = []
                if fam == "hinge":
                    why.append("d_fake = relu(1 + c) is flat for fakes the critic scores below -1, so the batch's "
                               "d_fake moves less than g = -c (the law assumes every sample on the sloped side)")
                elif fam in ("nsgan", "minimax") and (r["p_bar"] < 0.02 or r["p_bar"] > 0.98):
                    why.append("D(G(z)) is saturated, so the Keras clip (1e-7) and the steep ends of the logs "
                               "make the first-order law meaningless")
                elif r["link"] > r["predicted_link"]:
                    why.append("the measured gain exceeds the first-order prediction: the spread of D(G(z)) within a "
                               "batch and across steps is large, so the convexity of -log (Jensen) amplifies g's swings")
                else:
                    why.append("the measured gain is below the prediction: fluctuations are not common shifts of "
                               "the batch (per-sample noise dominates)")
                out.append(f"- {r['label']}: predicted {r['predicted_link']:.2f}, measured {_ci(r, 'link')} — "
                           f"{'; '.join(why)}.")
        imp = g.dropna(subset=["implied_ratio"])
        if len(imp) and fam in ("nsgan", "minimax"):
            ir = imp["implied_ratio"].median()
            verdict = ("the curves oscillate alike" if 0.8 <= ir <= 1.25 else
                       "the curves still differ, so the link is not the whole story (timing and batches shift "
                       "the operating point G sees)")
            out.append(f"In probability space {verdict}: std(q̂)/std(p̂) = {ir:.2f} (median) against {ratio:.2f} in "
                       f"loss space; mean implied p̂ = {imp['implied_p_mean'].median():.2f} on D's batch before its "
                       f"update, q̂ = {imp['implied_q_mean'].median():.2f} as G sees it.")
    return out


def _run_figure(args) -> bytes:
    wide, spectrum, title, implied, burn = args
    return plots.png_bytes(plots.run_panels(wide, spectrum, title, implied, burn))


def build_report(experiment: str, tracking_uri: str | None = None, out_dir: str | Path | None = None,
                 runset: RunSet | None = None, log_to_mlflow: bool = True, progress: bool = True,
                 extra_sections: list[tuple[str, str]] | None = None, workers: int = 2, **options) -> Report:
    """Analyse every run of ``experiment`` and write the report to ``out_dir`` (default
    ``./reports/<experiment>``). ``extra_sections``: (title, markdown) pairs placed after the answer."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    rs = runset or load_runs(experiment, tracking_uri=tracking_uri, progress=progress)
    if "tags.gantrack.kind" in rs.runs.columns:
        keep = ~rs.runs["tags.gantrack.kind"].fillna("").isin(["report", "sweep"])
        rs = RunSet(rs.runs[keep].reset_index(drop=True),
                    rs.metrics[rs.metrics["run_id"].isin(set(rs.runs.loc[keep, "run_id"]))])
    if rs.runs.empty:
        raise GantrackError(f"experiment {experiment!r} has no training runs to report on")
    out = Path(out_dir or Path("reports") / experiment)
    if out.exists() and not out.is_dir():
        raise GantrackError(f"--out {out} exists and is not a folder")
    (out / "figures").mkdir(parents=True, exist_ok=True)

    osc = oscillation(rs.metrics, keys=LOSS_KEYS, **options)
    meta = rs.runs.rename(columns={"tags.gantrack.scenario": "scenario", "tags.gantrack.loss": "loss",
                                   "tags.gantrack.seed": "seed"})
    summaries, factors, jobs = [], [], []
    burn = options.get("burn_in", 0.1)
    for _, run in tqdm(list(meta.iterrows()), disable=not progress, desc="explaining", unit="run"):
        rid = run["run_id"]
        label = _label(run)
        try:
            ex = explain(rs.metrics, rid, rs.runs, **options)
        except GantrackError as e:
            summaries.append(pd.DataFrame([{"run_id": rid, "label": label, "reason": str(e)}]))
            continue
        summaries.append(ex["summary"].assign(label=label, reason=""))
        factors.append(ex["factors"].assign(label=label))
        sub = rs.metrics[rs.metrics["run_id"] == rid]
        wide = sub[sub["key"].isin(LOSS_KEYS + ["acc/real", "acc/fake"])].pivot_table(
            index="step", columns="key", values="value", aggfunc="last", observed=True)
        wide.columns = wide.columns.astype(str)
        implied = None
        if ex["summary"]["family"].iloc[0] in ("nsgan", "minimax") and {"loss/d_fake", "loss/g"} <= set(wide):
            p_hat = 1 - np.exp(-wide["loss/d_fake"].to_numpy())
            q_hat = np.exp(-wide["loss/g"]) if ex["summary"]["family"].iloc[0] == "nsgan" else 1 - np.exp(wide["loss/g"])
            implied = (wide.index.to_numpy(), p_hat, np.asarray(q_hat))
        steps = wide.index.to_numpy()
        burn_step = steps.min() + (burn if burn < 1 else 0) * (steps.max() - steps.min()) + (burn if burn >= 1 else 0)
        jobs.append((rid, label, (wide, ex["spectrum"], f"{run.get('name', rid)} ({label})", implied, burn_step)))
    summary = meta[["run_id", "name", *[c for c in ("scenario", "loss", "seed") if c in meta]]].merge(
        pd.concat(summaries, ignore_index=True), on="run_id", how="right")
    summary["reason"] = summary["reason"].fillna("")
    factors = pd.concat(factors, ignore_index=True) if factors else pd.DataFrame(
        columns=["run_id", "factor", "estimate", "lo", "hi", "label"])

    # per-run figures are independent: render them in worker processes
    if workers > 1 and len(jobs) > 3:
        with ProcessPoolExecutor(workers) as pool:
            pngs = list(tqdm(pool.map(_run_figure, [j[2] for j in jobs]), total=len(jobs), disable=not progress,
                             desc="figures", unit="run"))
    else:
        pngs = [_run_figure(j[2]) for j in jobs]
    run_pngs = {}
    for (rid, label, _), png in zip(jobs, pngs):
        path = figure_path(out / "figures", rid)
        path.write_bytes(png)
        run_pngs[rid] = path
    cross = {}
    ok = summary[summary["reason"] == ""]
    if len(ok):
        cross["predicted_vs_measured.png"] = plots.png_bytes(plots.predicted_vs_measured(ok), dpi=90)
        cross["factors.png"] = plots.png_bytes(plots.factor_bars(factors), dpi=90)
    for name, png in cross.items():
        (out / "figures" / name).write_bytes(png)

    findings = answer(summary.assign(label=summary.get("label", summary["run_id"])))
    md_path, html_path = out / "report.md", out / "report.html"
    _write(md_path, html_path, experiment, summary, factors, osc, findings, run_pngs, cross, extra_sections or [])
    report_run = None
    if log_to_mlflow:
        report_run = _log_back(experiment, tracking_uri, summary, osc, run_pngs, out)
    if progress:
        print(f"report built in {time.perf_counter() - t0:.1f} s", flush=True)
    return Report(html_path, md_path, summary, factors, osc, report_run)


def _table(summary: pd.DataFrame, osc: pd.DataFrame) -> pd.DataFrame:
    osc = osc.assign(period_shown=np.where(osc["peak_p"] < 0.05, osc["dominant_period"], np.nan))
    per = osc.pivot_table(index="run_id", columns="key", values=["period_shown", "iat"], aggfunc="first", dropna=False)
    rows = []
    for _, r in summary.iterrows():
        row = {"run": r.get("label", r["run_id"]), "run_id": str(r["run_id"])[:8]}
        if r["reason"]:
            row["note"] = r["reason"]
            rows.append(row)
            continue
        row.update({"ratio g:d_fake [95% CI]": _ci(r, "ratio"), "predicted link": _fmt(r["predicted_link"]),
                    "link [CI]": _ci(r, "link"), "timing": _fmt(r["timing"]), "sampling": _fmt(r["sampling"]),
                    "p̄": _fmt(r["p_bar"], 3), "implied ratio": _fmt(r["implied_ratio"])})
        for key, short in (("loss/d_fake", "d_fake"), ("loss/g", "g")):
            for m, name in (("period_shown", "period"), ("iat", "IAT")):
                try:
                    v = per.loc[r["run_id"], (m, key)]
                    row[f"{short} {name}"] = "n.s." if m == "period_shown" and pd.isna(v) else _fmt(v, 1)
                except KeyError:
                    row[f"{short} {name}"] = "—"
        row["note"] = "" if r.get("gain_law_holds") in (True, None) or pd.isna(r.get("gain_law_holds")) \
            else "gain law outside CI"
        rows.append(row)
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") if pd.notna(r[c]) else "" for c in cols) + " |")
    return "\n".join(lines)


def _md_inline(text: str) -> str:
    """Markdown → HTML for the few inline forms the findings use (**bold**), after escaping."""
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _write(md_path, html_path, experiment, summary, factors, osc, findings, run_pngs, cross, extra) -> None:
    table = _table(summary, osc)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    md = [f"# gantrack report: {experiment}", "", f"{len(summary)} runs, generated {stamp}.", "",
          "## Why does g swing while d_fake looks calm?", ""]
    for i, f in enumerate(findings):  # a blank line ends each paragraph and each bullet list
        last_bullet = f.startswith("- ") and (i + 1 == len(findings) or not findings[i + 1].startswith("- "))
        md.append(f + "\n" if not f.startswith("- ") or last_bullet else f)
    for title, body in extra:
        md += ["", f"## {title}", "", body]
    md += ["", "## Across runs", "", _md_table(table), ""]
    for name in cross:
        md += [f"![{name}](figures/{name})", ""]
    md += ["## Runs", ""]
    for rid, path in run_pngs.items():
        r = summary[summary["run_id"] == rid].iloc[0]
        f = factors[factors["run_id"] == rid][["factor", "estimate", "lo", "hi", "share", "predicted"]].round(3)
        md += [f"### {r.get('label', rid)} (`{rid}`)", "", f"![run {rid}](figures/{path.name})", "",
               _md_table(f.astype(object).where(f.notna(), "")), ""]
    md += ["", "Periods are shown only where the spectral peak beats an AR(1) red-noise background (p < 0.05, "
           "Bonferroni over frequencies); n.s. = no significant oscillation. Method: std ratios after a 10 % burn-in; 95 % circular block-bootstrap CIs (blocks ≥ 3 periods "
           "of g), probe series resampled jointly; Welch PSD (Hann, 256-step segments, 50 % overlap). "
           "See `gantrack.analysis.explain` for definitions."]
    md_path.write_text("\n".join(md))

    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    body = [f"<h1>gantrack report: {html.escape(experiment)}</h1>",
            f"<p>{len(summary)} runs, generated {stamp}.</p>", "<h2>Why does g swing while d_fake looks calm?</h2>"]
    items: list[str] = []
    for f in findings + [""]:  # keep each bullet list where the findings put it
        if f.startswith("- "):
            items.append(f"<li>{_md_inline(f[2:])}</li>")
            continue
        if items:
            body.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if f:
            body.append(f"<p>{_md_inline(f)}</p>")
    for title, text in extra:
        body += [f"<h2>{html.escape(title)}</h2>", _md_table_html(text)]
    body += ["<h2>Across runs</h2>", table.to_html(index=False, escape=True, classes="t")]
    body += [img(data, name) for name, data in cross.items()]
    body.append("<h2>Runs</h2>")
    for rid, path in run_pngs.items():
        r = summary[summary["run_id"] == rid].iloc[0]
        f = factors[factors["run_id"] == rid][["factor", "estimate", "lo", "hi", "share", "predicted"]].round(3)
        body += [f"<h3>{html.escape(str(r.get('label', rid)))} <code>{rid}</code></h3>",
                 img(path.read_bytes(), f"run {rid}"), f.to_html(index=False, na_rep="", classes="t")]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th{border:1px solid #ccc;"
             "padding:2px 6px}img{max-width:100%}")
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>gantrack report: "
                         f"{html.escape(experiment)}</title><style>{style}</style></head><body>"
                         + "\n".join(body) + "</body></html>")


def _md_table_html(text: str) -> str:
    """Render a section given as Markdown: a table if it is one, paragraphs otherwise."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("|"):
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]
        head, *rest = rows
        return ("<table class='t'><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                + "</table>")
    return "".join(f"<p>{_md_inline(line)}</p>" for line in lines)


def _log_back(experiment, tracking_uri, summary, osc, run_pngs, out: Path) -> str:
    """explain/* and osc/* metrics, a figure and a description line on each run; the report as a run."""
    from mlflow.entities import Metric

    from ..tracking import client, get_or_create_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    mlclient = client(uri)
    ts = int(time.time() * 1000)
    log_oscillation(osc[osc["reason"] == ""], uri)
    for _, r in summary[summary["reason"] == ""].iterrows():
        rid = str(r["run_id"])
        batch = [Metric(f"explain/{m}", float(r[m]), ts, 0) for m in EXPLAIN_METRICS
                 if m in r and pd.notna(r[m]) and np.isfinite(float(r[m]))]
        mlclient.log_batch(rid, metrics=batch)
        if rid in run_pngs:
            mlclient.log_artifact(rid, str(run_pngs[rid]), "gantrack_analysis")
        note = mlclient.get_run(rid).data.tags.get("mlflow.note.content", "").split("\n\n**gantrack analysis**")[0]
        mlclient.set_tag(rid, "mlflow.note.content", note + (
            f"\n\n**gantrack analysis**: std(g)/std(d_fake) = {_ci(r, 'ratio')}; link {_ci(r, 'link')} "
            f"(gain law {_fmt(r['predicted_link'])} at p̄ = {_fmt(r['p_bar'], 3)}), timing {_fmt(r['timing'])}, "
            f"sampling {_fmt(r['sampling'])}."))
    exp_id = get_or_create_experiment(mlclient, experiment)
    run = mlclient.create_run(exp_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
                              tags={"gantrack.kind": "report",
                                    "mlflow.note.content": f"gantrack comparative report over {len(summary)} runs: "
                                                           "see the report.html artifact."})
    mlclient.log_artifact(run.info.run_id, str(out / "report.html"))
    mlclient.log_artifact(run.info.run_id, str(out / "report.md"))
    mlclient.log_artifacts(run.info.run_id, str(out / "figures"), "figures")
    mlclient.set_terminated(run.info.run_id)
    return run.info.run_id
