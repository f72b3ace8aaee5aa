"""Comparative report across the runs of an experiment: HTML (figures embedded) and Markdown.

``build_report`` loads the runs, measures oscillation, explains d_fake vs g per run, draws the
figures, writes ``report.html`` / ``report.md`` (+ ``figures/``) and, unless told not to, logs
everything back to MLflow: ``explain/*`` and ``osc/*`` metrics and a figure on each run, and the
report itself as artifacts of a run tagged ``gantrack.kind = report``.
"""

from __future__ import annotations

import base64
import html
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import contract as C
from ..errors import GantrackError
from . import plots
from .explain import explain, implied
from .oscillation import oscillation
from .publish import publish_report
from .runs import RunSet, load_runs
from .text import ci, fmt, pct


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
    # the model variant and precision only where they differ from the book's (older runs lack the tags)
    parts += [
        v for c, book in (("arch", "bn"), ("precision", "fp32")) if isinstance(v := row.get(c), str) and v != book
    ]
    seed = row.get("seed")
    return "/".join(parts) + (f"/s{seed}" if isinstance(seed, str) else "") or str(row["run_id"])[:8]


FACTOR_ORDER = ("link", "context", "timing", "sampling")
SCENARIO_ORDER = ("stable", "mode-collapse", "convergence-failure", "convergence-failure-adam")


def correlation_words(r: float) -> str:
    """How a correlation reads: |r| < 0.2 uncorrelated, < 0.5 weakly, else plainly (anti)correlated."""
    if not np.isfinite(r) or abs(r) < 0.2:
        return "uncorrelated"
    sign = "negatively" if r < 0 else "positively"
    return f"weakly {sign} correlated" if abs(r) < 0.5 else f"{sign} correlated"


def _groups(s: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Runs grouped by scenario (and family where several), the question's scenario (stable) first."""
    scen = s["scenario"].fillna("").astype(str) if "scenario" in s else pd.Series("", index=s.index)
    several = scen.nunique() > 1 and (scen != "").any()
    fams = s["family"].nunique() > 1
    label = (scen + (" / " + s["family"] if fams else "")) if several else s["family"]
    rank = scen.map(lambda x: SCENARIO_ORDER.index(x) if x in SCENARIO_ORDER else len(SCENARIO_ORDER))
    fam_rank = s["family"].map(
        lambda x: C.LOSS_FAMILIES.index(x) if x in C.LOSS_FAMILIES else len(C.LOSS_FAMILIES)
    )  # the book's nsgan first
    s = s.assign(group=label, _rank=rank, _fam=fam_rank).sort_values(["_rank", "_fam", "group"], kind="stable")
    return [(g, d.drop(columns=["_rank", "_fam"])) for g, d in s.groupby("group", sort=False)]


def _factor_sentence(g: pd.DataFrame, ratio: float) -> str:
    """Which factors carry the ratio (medians): every factor that moves it by more than 1.5×, largest
    first, each with its cause; a pair that pulls in opposite directions is named as cancelling."""
    med = {f: g[f].median() for f in FACTOR_ORDER if f in g and g[f].notna().any()}
    if "link" not in med:
        return (
            "These runs do not log gantrack's probe cells, so link, context, timing and sampling cannot be "
            "measured (only the whole ratio and what the two curves imply). Add `gantrack.LoopProbes` to your "
            "training loop (a few lines: examples/dcgan_own_loop.py) or train with `gantrack train`."
        )
    parts = ", ".join(f"{f} ×{v:.2f}" for f, v in med.items())
    big = sorted((f for f in med if abs(np.log(med[f])) > np.log(1.5)), key=lambda f: -abs(np.log(med[f])))
    text = f"Factors (medians): {parts}."
    if not big:
        return text + " No factor moves the ratio by more than 1.5×."
    ups = [f for f in big if med[f] > 1]
    downs = [f for f in big if med[f] < 1]
    if ups and downs:
        text += (
            f" **{ups[0]}** (×{med[ups[0]]:.2f}) and **{downs[0]}** (×{med[downs[0]]:.2f}) pull in opposite "
            "directions and largely cancel."
        )
    for f in big:
        text += f" **{f}**: {_cause(f, g, med)}."
    return text


def _cause(factor: str, g: pd.DataFrame, med: dict) -> str:
    if factor == "link":
        fam = g["family"].iloc[0]
        steeper = (
            "g's -log p is the steeper link below p = 1/2"
            if fam == "nsgan" and med["link"] > 1
            else "d_fake's link is the steeper one here"
            if med["link"] < 1
            else "the family's links"
        )
        point = "p̄ = mean D(G(z))" if fam in ("nsgan", "minimax") else "mean D output"
        return (
            f"at the operating point ({point} = {g['p_bar'].median():.3f}) the same move of D's output moves g "
            f"{med['link']:.2f}× as far as d_fake ({steeper})"
        )
    if factor == "context":
        a, b = g["p_dbatch_before"].median(), g["p_dbatch_before_gctx"].median()
        schedule = g["schedule"].iloc[0] if "schedule" in g else ""
        where = "inside D's mixed real+fake batch" if schedule == "joint" else "in D's own step"
        return (
            f"the same D, before its update, gives the same fakes p̄ = {a:.4f} {where} and p̄ = {b:.4f} in the "
            "generator step's all-fake batch: BatchNorm batch statistics, not D's update, decide what g sees"
        )
    if factor == "timing":
        return (
            f"D's update between the two measurements changes what g sees (×{med['timing']:.2f} on the same "
            "batch in the same BatchNorm context)"
        )
    return (
        f"d_fake and g are measured on different batches (×{med['sampling']:.2f} under the same D): new z, "
        "64 vs 128 fakes"
    )


def _law_sentence(g: pd.DataFrame) -> str:
    have = g.dropna(subset=["predicted_link", "link_error"]) if "predicted_link" in g else g.iloc[0:0]
    simple = g["predicted_link_simple"].median() if "predicted_link_simple" in g else np.nan
    if have.empty:
        reasons = sorted(set(g.get("law_reason", pd.Series(dtype=str)).dropna().astype(str)) - {""})
        return (
            f"The simple law (1-p̄)/p̄-type gain predicts a link of {fmt(simple)} against a measured "
            f"{fmt(g['link'].median())}; the per-sample law needs per-sample probes"
            + (f" ({reasons[0]})" if reasons else "")
            + "."
        )
    verdicts = have["law_verdict"].value_counts()
    tally = ", ".join(f"{n} {v}" for v, n in verdicts.items())
    simple_err = (have["predicted_link_simple"] / have["link"] - 1).median()
    text = (
        f"The law — for each quarter of the run five numbers: the operating point (mean and spread of D's "
        f"scores), how far the common shift and the spread swing, and their correlation; the links applied "
        f"exactly — predicts a link of {have['predicted_link'].median():.2f} against a measured "
        f"{have['link'].median():.2f}: error {pct(have['link_error'].median())} (median; verdict at ±15 %: "
        f"{tally}); for the whole ratio {pct(have['ratio_error'].median())}. The simple law at p̄ "
        f"({simple:.2f}) misses by {pct(simple_err)}"
    )
    shift = have["predicted_link_shift_only"].median()
    holds = bool((have["law_verdict"] == "holds").all())
    if holds and np.isfinite(shift):
        ops = have["law_operating_points"].iloc[0] if "law_operating_points" in have else ""
        text += f"; the common shift alone (the spread held still within each quarter) gives {shift:.2f}, so " + (
            (
                "the common shift carries the link, and the gain at the average p̄ misses because the operating "
                f"point moves across the run (D(G(z)) at the quarters' mean scores, first run: {ops})"
                if abs(simple_err) > 0.15
                else "the common shift carries the link, and here the gain at the average p̄ is close"
            )
            if abs(shift / have["predicted_link"].median() - 1) < 0.1
            else "changes of spread (which move d_fake and g the same way) matter beside the shift"
        )
    else:
        verdicts = have["law_verdict"]
        failed = have[verdicts == "fails"]
        if len(failed):
            text += f". The law fails in {len(failed)} of {len(have)} runs; first: {failed['law_reason'].iloc[0]}"
        else:
            open_ = have[verdicts != "holds"]
            text += (
                f". The law is not decided in {len(open_)} of {len(have)} runs (intervals too wide at ±15 %); "
                f"first: {open_['law_reason'].iloc[0]}"
            )
    return text + "."


def answer(summary: pd.DataFrame) -> list[str]:
    """Plain-language findings, each sentence computed from this experiment's numbers; the
    question's scenario (stable) first."""
    s = summary[summary["reason"] == ""]
    if s.empty:
        return ["No run of this experiment logged both loss/d_fake and loss/g: nothing to explain."]
    out = []
    for group, g in _groups(s):
        n = len(g)
        ratio = g["ratio"].median()
        calm = "swings more than" if ratio > 1.1 else ("moves less than" if ratio < 0.9 else "moves about as much as")
        out.append(
            f"**{group}** ({n} run{'s' * (n > 1)}): g {calm} d_fake — std(g)/std(d_fake) = {ratio:.2f} "
            f"(median; range {g['ratio'].min():.2f}–{g['ratio'].max():.2f}); the two curves are "
            f"{correlation_words(g['corr'].median())} (median r = {g['corr'].median():.2f}). "
            + _factor_sentence(g, ratio)
            + " "
            + _law_sentence(g)
        )
        failed = g[g.get("law_verdict", pd.Series("", index=g.index)) == "fails"]
        for _, r in failed.iterrows():
            out.append(f"- {r['label']}: law {fmt(r['predicted_link'])}, measured {ci(r, 'link')} — {r['law_reason']}.")
    return out


def _run_figure(args) -> bytes:
    wide, spectrum, curves, title, implied_curves = args
    return plots.png_bytes(plots.run_panels(wide, spectrum, curves, title, implied_curves))


def _implied_curves(fam: str, wide: pd.DataFrame):
    """(steps, p̂, q̂) for the probability-space panels, BCE families only."""
    if fam not in ("nsgan", "minimax") or not {C.D_FAKE, C.G_LOSS} <= set(wide):
        return None
    p_hat, q_hat = implied(fam, wide[C.D_FAKE].to_numpy(float), wide[C.G_LOSS].to_numpy(float))
    return wide.index.to_numpy(), p_hat, q_hat


def build_report(
    experiment: str,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    runset: RunSet | None = None,
    log_to_mlflow: bool = True,
    progress: bool = True,
    extra_sections: list[tuple[str, str]] | None = None,
    workers: int = 2,
    key_map: dict[str, str] | None = None,
    **options,
) -> Report:
    """Analyse every run of ``experiment`` and write the report to ``out_dir`` (default
    ``./reports/<experiment>``). ``extra_sections``: (title, markdown) pairs placed after the answer;
    ``key_map``: for runs another loop logged under its own names (see ``load_runs``)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    rs = runset or load_runs(experiment, tracking_uri=tracking_uri, progress=progress, key_map=key_map)
    kind = f"tags.{C.TAG_KIND}"
    if kind in rs.runs.columns:
        keep = ~rs.runs[kind].fillna("").isin(["report", "sweep"])
        rs = RunSet(
            rs.runs[keep].reset_index(drop=True),
            rs.metrics[rs.metrics["run_id"].isin(set(rs.runs.loc[keep, "run_id"]))],
            rs.tracking_uri,
            rs.cache_dir,
            rs.key_map,
        )
    if rs.runs.empty:
        raise GantrackError(f"experiment {experiment!r} has no training runs to report on")
    out = Path(out_dir or Path("reports") / experiment)
    if out.exists() and not out.is_dir():
        raise GantrackError(f"--out {out} exists and is not a folder")
    (out / "figures").mkdir(parents=True, exist_ok=True)

    osc = oscillation(rs.metrics, keys=list(C.LOSS_KEYS), **options)
    meta = rs.runs.rename(
        columns={
            f"tags.{C.TAG_SCENARIO}": "scenario",
            f"tags.{C.TAG_LOSS}": "loss",
            f"tags.{C.TAG_SEED}": "seed",
            f"tags.{C.TAG_SCHEDULE}": "schedule",
            f"tags.{C.TAG_ARCH}": "arch",
            f"tags.{C.TAG_PRECISION}": "precision",
        }
    )
    summaries, factors, jobs, wides = [], [], [], {}
    for _, run in tqdm(list(meta.iterrows()), disable=not progress, desc="explaining", unit="run"):
        rid = run["run_id"]
        label = _label(run)
        try:
            ex = explain(rs, rid, **options)
        except GantrackError as e:
            summaries.append(pd.DataFrame([{"run_id": rid, "label": label, "reason": str(e)}]))
            continue
        summaries.append(ex["summary"].assign(label=label, reason=""))
        factors.append(ex["factors"].assign(label=label))
        sub = rs.metrics[rs.metrics["run_id"] == rid]
        wide = sub[sub["key"].isin([*C.LOSS_KEYS, C.ACC_REAL, C.ACC_FAKE])].pivot_table(
            index="step", columns="key", values="value", aggfunc="last", observed=True
        )
        wide.columns = wide.columns.astype(str)
        probability = _implied_curves(ex["summary"]["family"].iloc[0], wide)
        wides[rid] = (wide, probability)
        jobs.append(
            (rid, label, (wide, ex["spectrum"], ex["curves"], f"{run.get('name', rid)} ({label})", probability))
        )
    summary = meta[["run_id", "name", *[c for c in ("scenario", "loss", "seed", "schedule") if c in meta]]].merge(
        pd.concat(summaries, ignore_index=True), on="run_id", how="right"
    )
    summary["reason"] = summary["reason"].fillna("")
    factors = (
        pd.concat(factors, ignore_index=True)
        if factors
        else pd.DataFrame(columns=["run_id", "factor", "estimate", "lo", "hi", "label"])
    )

    # per-run figures are independent: render them in worker processes
    if workers > 1 and len(jobs) > 3:
        with ProcessPoolExecutor(workers) as pool:
            pngs = list(
                tqdm(
                    pool.map(_run_figure, [j[2] for j in jobs]),
                    total=len(jobs),
                    disable=not progress,
                    desc="figures",
                    unit="run",
                )
            )
    else:
        pngs = [_run_figure(j[2]) for j in jobs]
    run_pngs = {}
    for (rid, _, _), png in zip(jobs, pngs):
        path = figure_path(out / "figures", rid)
        path.write_bytes(png)
        run_pngs[rid] = path
    cross = {}
    ok = summary[summary["reason"] == ""]
    if len(ok):
        first = _groups(ok)[0][1].iloc[0]  # the question's scenario, its first run
        wide, probability = wides[first["run_id"]]
        cross["answer.png"] = plots.png_bytes(plots.answer_figure(wide, probability, f"{first['label']}"), dpi=90)
        cross["predicted_vs_measured.png"] = plots.png_bytes(plots.predicted_vs_measured(ok), dpi=90)
        cross["factors.png"] = plots.png_bytes(plots.factor_bars(factors), dpi=90)
    for name, png in cross.items():
        (out / "figures" / name).write_bytes(png)

    findings = answer(summary.assign(label=summary.get("label", summary["run_id"])))
    md_path, html_path = out / "report.md", out / "report.html"
    _write(md_path, html_path, experiment, summary, factors, osc, findings, run_pngs, cross, extra_sections or [])
    report_run = None
    if log_to_mlflow:
        try:
            report_run = publish_report(experiment, tracking_uri, summary, osc, run_pngs, out)
        except Exception as e:  # a read-only role (direct reads), a store gone: the files are written regardless
            from ..errors import first_line
            from ..tracking import redact

            why = first_line(e, prefer=("denied", "rror"))
            print(
                f"gantrack: warning: report written to {out} but not logged back to {redact(rs.tracking_uri)}: {why}",
                file=sys.stderr,
                flush=True,
            )
    if progress:
        print(f"report built in {time.perf_counter() - t0:.1f} s", flush=True)
    return Report(html_path, md_path, summary, factors, osc, report_run)


def _law_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run: the law against the measurement, its error with the interval, the simple law, the bands."""
    rows = []
    for _, r in summary[summary["reason"] == ""].iterrows():
        rows.append(
            {
                "run": r.get("label", r["run_id"]),
                "measured link [CI]": ci(r, "link"),
                "law": fmt(r.get("predicted_link")),
                "error [CI]": (
                    f"{pct(r.get('link_error', np.nan))} [{pct(r.get('link_error_lo', np.nan))}, "
                    f"{pct(r.get('link_error_hi', np.nan))}]"
                ),
                "verdict (±15 %)": r.get("law_verdict", "unavailable"),
                "simple (1-p̄)/p̄": fmt(r.get("predicted_link_simple")),
                "simple error": pct(r.get("predicted_link_simple", np.nan) / r["link"] - 1),
                "shift only": fmt(r.get("predicted_link_shift_only")),
                "path (diagnostic)": fmt(r.get("predicted_link_path")),
                "ratio: measured / law": f"{fmt(r['ratio'])} / {fmt(r.get('predicted_ratio'))}",
                "ratio error [CI]": (
                    f"{pct(r.get('ratio_error', np.nan))} [{pct(r.get('ratio_error_lo', np.nan))}, "
                    f"{pct(r.get('ratio_error_hi', np.nan))}]"
                ),
                "slow band: measured / law": f"{fmt(r.get('link_slow'))} / {fmt(r.get('predicted_link_slow'))}",
                "fast band: measured / law": f"{fmt(r.get('link_fast'))} / {fmt(r.get('predicted_link_fast'))}",
                "why not": r.get("law_reason", "") or "",
            }
        )
    return pd.DataFrame(rows)


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
        row.update(
            {
                "ratio g:d_fake [95% CI]": ci(r, "ratio"),
                "link [CI]": ci(r, "link"),
                "context": fmt(r.get("context")),
                "timing": fmt(r["timing"]),
                "sampling": fmt(r["sampling"]),
                "p̄": fmt(r["p_bar"], 3),
                "r": fmt(r["corr"]),
                "implied ratio": fmt(r["implied_ratio"]),
            }
        )
        for key, short in ((C.D_FAKE, "d_fake"), (C.G_LOSS, "g")):
            for m, name in (("period_shown", "period"), ("iat", "IAT")):
                try:
                    v = per.loc[r["run_id"], (m, key)]
                    row[f"{short} {name}"] = "n.s." if m == "period_shown" and pd.isna(v) else fmt(v, 1)
                except KeyError:
                    row[f"{short} {name}"] = "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/") if pd.notna(r[c]) else "" for c in cols) + " |")
    return "\n".join(lines)


def _md_inline(text: str) -> str:
    """Markdown → HTML for the few inline forms the findings use (**bold**, `code`), after escaping."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;max-width:1100px;margin:0 auto;
padding:1em 1.5em}p,li,summary{overflow-wrap:anywhere}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
p.meta{color:#666;margin-top:0}.answer{background:#f6f8fa;border-left:4px solid #2f6feb;padding:.6em 1em}
.scroll{overflow-x:auto;max-width:100%}table.t{border-collapse:collapse;font-size:12.5px;margin:.5em 0}
table.t td,table.t th{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top;
white-space:nowrap}table.t td:last-child{white-space:normal;min-width:22em}
table.t th{background:#f6f8fa}img{max-width:100%;height:auto}details{margin:.4em 0}
summary{cursor:pointer;font-weight:600}code{font-size:.9em;background:#f0f0f0;padding:0 .25em}
"""


def _findings_html(findings: list[str]) -> list[str]:
    body, items = [], []
    for f in findings + [""]:  # keep each bullet list where the findings put it
        if f.startswith("- "):
            items.append(f"<li>{_md_inline(f[2:])}</li>")
            continue
        if items:
            body.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if f:
            body.append(f"<p>{_md_inline(f)}</p>")
    return body


def _findings_md(findings: list[str]) -> list[str]:
    md = []
    for i, f in enumerate(findings):  # a blank line ends each paragraph and each bullet list
        last_bullet = f.startswith("- ") and (i + 1 == len(findings) or not findings[i + 1].startswith("- "))
        md.append(f + "\n" if not f.startswith("- ") or last_bullet else f)
    return md


def _first_block(findings: list[str]) -> int:
    """Index after the first group's paragraph and its bullets (the answer to the question)."""
    i = 1
    while i < len(findings) and findings[i].startswith("- "):
        i += 1
    return i


METHOD = (
    "Std ratios after a 10 % burn-in; 95 % circular block-bootstrap CIs (blocks ≥ 3 periods of g), all "
    "series resampled jointly. Factors telescope through the probe cells: link (g- vs d_fake-link on D's "
    "batch), context (D step's vs G step's BatchNorm context), timing (D before vs after its update), "
    "sampling (D's vs G's batch). The law: D's raw scores on a batch as a Gaussian whose mean and sd swing "
    "across steps as a bivariate Gaussian (five numbers: mean score, mean sd, the sds of both swings and their "
    "correlation), the links applied exactly (Gauss-Hermite); the path diagnostic applies them to each step's "
    'own mean and sd; error = law / measured − 1, verdict "holds" when its interval lies within ±15 %, '
    '"fails" when outside, "undecided" otherwise. Bands split at a period of 16 steps (Butterworth, '
    "zero phase). Periods are shown only where the spectral peak beats an AR(1) red-noise background (p < 0.05, "
    "Bonferroni); n.s. = no significant oscillation. Definitions: `gantrack.analysis.explain`, "
    "`gantrack.analysis.law`."
)


def _write(md_path, html_path, experiment, summary, factors, osc, findings, run_pngs, cross, extra) -> None:
    table, law_table = _table(summary, osc), _law_table(summary)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    cut = _first_block(findings)
    first, rest = findings[:cut], findings[cut:]
    cols = ["factor", "estimate", "lo", "hi", "share", "predicted", "predicted_simple", "reason"]

    md = [
        f"# gantrack report: {experiment}",
        "",
        f"{len(summary)} runs, generated {stamp}.",
        "",
        "## Why does g swing while d_fake looks calm?",
        "",
    ]
    if "answer.png" in cross:
        md += ["![d_fake and g as the book plots them, and in probability space](figures/answer.png)", ""]
    md += _findings_md(first)
    if rest:
        md += ["## The other scenarios", ""] + _findings_md(rest)
    for title, body in extra:
        md += ["", f"## {title}", "", body]
    if len(law_table):
        md += ["", "## The law against the measurements", "", _md_table(law_table), ""]
    md += ["", "## Across runs", "", _md_table(table), ""]
    for name in cross:
        if name != "answer.png":
            md += [f"![{name}](figures/{name})", ""]
    md += ["## Runs", ""]
    for rid, path in run_pngs.items():
        r = summary[summary["run_id"] == rid].iloc[0]
        f = factors[factors["run_id"] == rid][[c for c in cols if c in factors]].round(3)
        md += [
            f"### {r.get('label', rid)} (`{rid}`)",
            "",
            f"![run {rid}](figures/{path.name})",
            "",
            _md_table(f.astype(object).where(f.notna(), "")),
            "",
        ]
    md += ["", "Method: " + METHOD]
    md_path.write_text("\n".join(md))

    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    def tbl(df: pd.DataFrame) -> str:
        return "<div class='scroll'>" + df.to_html(index=False, escape=True, na_rep="", classes="t") + "</div>"

    body = [
        f"<h1>gantrack report: {html.escape(experiment)}</h1>",
        f"<p class='meta'>{len(summary)} runs, generated {stamp}.</p>",
        "<h2>Why does g swing while d_fake looks calm?</h2>",
    ]
    if "answer.png" in cross:
        body.append(img(cross["answer.png"], "d_fake and g as the book plots them, and in probability space"))
    body.append("<div class='answer'>" + "".join(_findings_html(first)) + "</div>")
    if rest:
        body += ["<h2>The other scenarios</h2>", *_findings_html(rest)]
    for title, text in extra:
        body += [f"<h2>{html.escape(title)}</h2>", "<div class='scroll'>" + _md_table_html(text) + "</div>"]
    if len(law_table):
        body += ["<h2>The law against the measurements</h2>", tbl(law_table)]
    body += ["<h2>Across runs</h2>", tbl(table)]
    body += [img(data, name) for name, data in cross.items() if name != "answer.png"]
    body.append("<h2>Runs</h2>")
    for rid, path in run_pngs.items():
        r = summary[summary["run_id"] == rid].iloc[0]
        f = factors[factors["run_id"] == rid][[c for c in cols if c in factors]].round(3)
        body += [
            f"<details><summary>{html.escape(str(r.get('label', rid)))} <code>{html.escape(str(rid))}</code></summary>",
            img(path.read_bytes(), f"run {rid}"),
            tbl(f),
            "</details>",
        ]
    body.append(f"<p class='meta'>Method: {_md_inline(METHOD)}</p>")
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>gantrack report: "
        f"{html.escape(experiment)}</title><style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>"
    )


def _md_table_html(text: str) -> str:
    """Render a section given as Markdown: a table if it is one, paragraphs otherwise."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("|"):
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]
        head, *rest = rows
        return (
            "<table class='t'><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in head)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
            + "</table>"
        )
    return "".join(f"<p>{_md_inline(line)}</p>" for line in lines)
