"""The report as a document: its tables, and one list of sections rendered to Markdown and to HTML.

A section is a title and blocks; a block is text (Markdown inline: ``**bold**``, backticks, ``- ``
bullets), a table (a DataFrame whose cells are such text), an image, or a collapsible group of blocks
(``Details``; in Markdown a sub-heading). Both renderers walk the same list, so the two files cannot
say different things. Text that comes from runs (labels, names, tags, reasons) is escaped in both:
``<``, ``>`` and ``&`` as entities in Markdown (renderers that allow raw HTML show them as text), and
``html.escape`` before the inline forms are turned into tags in HTML.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import contract as C
from .decompose import SLOW_PERIOD, TOLERANCE
from .measures import Options
from .text import ci, fmt, pct


@dataclass
class Text:
    paragraphs: list[str]  # Markdown inline; a paragraph starting "- " is a bullet
    boxed: bool = False  # the answer to the question, set apart


@dataclass
class Table:
    frame: pd.DataFrame


@dataclass
class Image:
    data: bytes
    path: str  # relative to the report (Markdown links it, HTML embeds ``data``)
    alt: str


@dataclass
class Details:
    title: str  # Markdown inline
    blocks: list = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list


# --- tables ---------------------------------------------------------------------------------------
RUN_TABLE_NOTES = (
    "ratio = std(g)/std(d_fake) with its 95 % interval; link, context, timing, sampling: its factors; p̄ = mean "
    "D(G(z)) on D's fake batch; r = correlation of d_fake and g; implied ratio = std(q̂)/std(p̂), the ratio in "
    "probability space (p̂ = 1 - exp(-d_fake), q̂ = exp(-g)); period = dominant period where the spectral peak is "
    "significant (n.s. otherwise); IAT = integrated autocorrelation time (steps of memory at zero frequency)."
)


def law_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run: the law against the measurement, its error with the interval, the simple law, the bands."""
    rows = []
    ok = summary[summary["reason"] == ""]
    # minimax and WGAN-GP: the link is 1 by construction, there is no law to test (the findings say so)
    mirror = ok["family"].isin(C.MIRROR_FAMILIES) if "family" in ok else pd.Series(False, index=ok.index)
    for _, r in ok[~mirror].iterrows():
        rows.append(
            {
                "run": r["label"],
                "run_id": str(r["run_id"])[:8],
                "measured link [CI]": ci(r, "link"),
                "law": fmt(r.get("predicted_link")),
                "error [CI]": (
                    f"{pct(r.get('link_error', np.nan))} [{pct(r.get('link_error_lo', np.nan))}, "
                    f"{pct(r.get('link_error_hi', np.nan))}]"
                ),
                f"verdict (±{100 * TOLERANCE:.0f} %)": r.get("law_verdict", "unavailable"),
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


SIGNATURE_NOTES = (
    "Medians over each scenario's runs [min, max]. acc, d_real, d_fake, g: second-half means (the tutorial's "
    "stable run: accuracy 70-80 %, d 0.5-0.8, g 1-2). duplicates, coverage: the last diversity snapshot "
    "(coverage over its real-vs-real ceiling; real eights: duplicates about 0.01, coverage about 1). "
    "batch_bins: effective K-means bins G's training batches spread over in the second half, beside real "
    "batches of the same size (batch_bins_real): a collapsed G fills a few. context_gap: D's p of its own "
    "fakes scored alone, as the G step sees them, minus inside D's batch (about 1 for the combined-batch "
    "failure: the BatchNorm context). period_g: g's dominant period in steps (the tutorial's mode collapse: "
    "about 25)."
)


def diagnosis_table(diagnosis: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the verdict, since when, the first evidence, and what is missing to decide more."""
    rows = []
    for _, r in diagnosis.iterrows():
        evidence = [e for e in str(r["evidence"]).split("; ") if e]
        onset = "" if pd.isna(r["onset_step"]) else str(int(r["onset_step"]))
        if onset and pd.notna(r["onset_resolution"]) and int(r["onset_resolution"]) > 1:
            onset += f" (± {int(r['onset_resolution'])})"
        period = "" if pd.isna(r["period_g"]) else f"{r['period_g']:.1f} (p {r['peak_p']:.3f})"
        rows.append(
            {
                "run": r.get("label") if isinstance(r.get("label"), str) else str(r["run_id"])[:8],
                "name": r["run_name"],
                "verdict": f"**{r['verdict']}**" + (f" ({r['subtype']})" if r["subtype"] else ""),
                "since step": onset,
                "evidence": evidence[0] if evidence else "",
                "g period [steps]": period,
                "missing": str(r["missing"]),
            }
        )
    return pd.DataFrame(rows)


def verdict_blocks(row) -> list:
    """A run's section opens with its verdict and every piece of evidence."""
    if row is None:
        return []
    onset = "" if pd.isna(row["onset_step"]) else f" since step {int(row['onset_step'])}"
    sub = f" ({row['subtype']})" if row["subtype"] else ""
    lines = [f"**Diagnosis: {row['verdict']}{sub}{onset}.**"]
    lines += [f"- {e}" for e in str(row["evidence"]).split("; ") if e]
    if row["missing"]:
        lines.append(f"- missing to decide more: {row['missing']}")
    return [Text(lines)]


def runs_table(summary: pd.DataFrame, osc: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the ratio, its factors, the operating point and the curves' oscillation."""
    osc = osc.assign(period_shown=np.where(osc["peak_p"] < 0.05, osc["dominant_period"], np.nan))
    per = osc.pivot_table(index="run_id", columns="key", values=["period_shown", "iat"], aggfunc="first", dropna=False)
    rows = []
    for _, r in summary.iterrows():
        row = {"run": r["label"], "name": r.get("name") or "", "run_id": str(r["run_id"])[:8]}
        row["update order"] = r.get("update_order") if isinstance(r.get("update_order"), str) else ""
        if r["reason"]:
            row["note"] = r["reason"]
            rows.append(row)
            continue
        row.update(
            {
                "ratio [95% CI]": ci(r, "ratio"),
                "link [CI]": ci(r, "link"),
                "context": fmt(r.get("context")),
                "timing": fmt(r["timing"]),
                "sampling": fmt(r["sampling"]),
                # an operating point in probability only where D's output is one (a critic's mean is not)
                "p̄": fmt(r["p_bar"], 3) if r.get("family") in C.PROBABILITY_FAMILIES else "(critic)",
                "r": fmt(r["corr"]),
                "implied ratio": fmt(r["implied_ratio"]) if r.get("family") in C.PROBABILITY_FAMILIES else "—",
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


def factors_table(factors: pd.DataFrame) -> pd.DataFrame:
    cols = ["factor", "estimate", "lo", "hi", "share", "predicted", "predicted_simple", "reason"]
    f = factors[[c for c in cols if c in factors]].copy()
    for c in ("estimate", "lo", "hi", "share", "predicted", "predicted_simple"):
        if c in f:
            f[c] = f[c].map(lambda v: fmt(v, 3))
    return f


def method(opt: Options) -> str:
    """The Method paragraph, from the options the analysis actually used."""
    burn = f"{100 * opt.burn_in:g} % burn-in" if opt.burn_in < 1 else f"a burn-in of {int(opt.burn_in)} steps"
    detrend = {"linear": "linearly detrended", "constant": "mean removed", "none": "not detrended"}[opt.detrend]
    highpass = f", high-passed at {opt.highpass:g} cycles/step" if opt.highpass else ""
    return (
        f"Std ratios after a {burn}; series {detrend}{highpass} before spectra; {100 * opt.ci:g} % circular "
        f"block-bootstrap CIs from {opt.n_boot} resamples (seed {opt.seed}; blocks ≥ 3 periods of g), all series "
        "resampled jointly. Factors telescope through the probe cells: link (g- vs d_fake-link on D's batch), "
        "context (D step's vs G step's BatchNorm context), timing (D before vs after its update), sampling (D's vs "
        "G's batch). The law: D's raw scores on a batch as a Gaussian whose mean and sd swing across steps as a "
        "bivariate Gaussian (five numbers per quarter of the run: mean score, mean sd, the sds of both swings and "
        "their correlation), the links applied exactly (Gauss-Hermite); the path diagnostic applies them to each "
        f'step\'s own mean and sd; error = law / measured − 1, verdict "holds" when its interval lies within '
        f'±{100 * TOLERANCE:.0f} %, "fails" when outside, "undecided" otherwise. Bands split at a period of '
        f"{SLOW_PERIOD:g} steps (Butterworth, zero phase). Welch spectra with segments of {opt.nperseg} steps; "
        "a period needs at least two cycles in the window and is shown only where its spectral peak beats red "
        f"noise (Monte Carlo p < 0.05 against {opt.n_null} AR(1) series with the curve's own lag-1 correlation, "
        "detrended alike); n.s. = no significant oscillation. Definitions: `gantrack.analysis.explain`, "
        "`gantrack.analysis.law`."
    )


# --- Markdown -------------------------------------------------------------------------------------
def md_escape_text(text) -> str:
    """Text safe in Markdown that allows raw HTML: every ``<`` that could open a tag, a comment or a
    declaration becomes ``&lt;`` (``p < 0.05`` stays readable)."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", str(text))


def md_escape(text) -> str:
    """As ``md_escape_text``, for a table cell: no ``|`` and no line break."""
    return md_escape_text(text).replace("|", "/").replace("\n", " ")


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(md_escape(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(md_escape(r[c]) if _present(r[c]) else "" for c in cols) + " |")
    return "\n".join(lines)


def _present(v) -> bool:
    return not (v is None or (isinstance(v, float) and np.isnan(v)))


def _md_paragraphs(paragraphs: list[str]) -> list[str]:
    out = []
    for i, p in enumerate(paragraphs):  # a blank line ends each paragraph and each bullet list
        bullet = p.startswith("- ")
        last_bullet = bullet and (i + 1 == len(paragraphs) or not paragraphs[i + 1].startswith("- "))
        out.append(md_escape_text(p) + ("\n" if not bullet or last_bullet else ""))
    return out


def _md_blocks(blocks: list, level: int) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Text):
            out += _md_paragraphs(b.paragraphs)
        elif isinstance(b, Table):
            out += [md_table(b.frame), ""]
        elif isinstance(b, Image):
            out += [f"![{md_escape(b.alt)}]({b.path})", ""]
        elif isinstance(b, Details):
            out += ["#" * (level + 1) + " " + md_escape_text(b.title), ""] + _md_blocks(b.blocks, level + 1)
    return out


def to_markdown(title: str, meta: str, sections: list[Section], footer: str) -> str:
    md = [f"# {md_escape_text(title)}", "", md_escape_text(meta), ""]
    for s in sections:
        md += [f"## {md_escape_text(s.title)}", ""] + _md_blocks(s.blocks, 2)
    md += ["", md_escape_text(footer), ""]
    return "\n".join(md)


# --- HTML -----------------------------------------------------------------------------------------
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


def inline_html(text) -> str:
    """Markdown inline (``**bold**``, backticks) → HTML, after escaping everything else."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(str(text)))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{inline_html(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{inline_html(v) if _present(v) else ''}</td>" for v in r) + "</tr>"
        for r in df.itertuples(index=False)
    )
    return f"<div class='scroll'><table class='t'><tr>{head}</tr>{rows}</table></div>"


def _html_paragraphs(paragraphs: list[str]) -> list[str]:
    body, items = [], []
    for p in paragraphs + [""]:  # keep each bullet list where the text puts it
        if p.startswith("- "):
            items.append(f"<li>{inline_html(p[2:])}</li>")
            continue
        if items:
            body.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if p:
            body.append(f"<p>{inline_html(p)}</p>")
    return body


def _html_blocks(blocks: list) -> list[str]:
    out = []
    for b in blocks:
        if isinstance(b, Text):
            inner = _html_paragraphs(b.paragraphs)
            out += ["<div class='answer'>" + "".join(inner) + "</div>"] if b.boxed else inner
        elif isinstance(b, Table):
            out.append(html_table(b.frame))
        elif isinstance(b, Image):
            data = base64.b64encode(b.data).decode()
            out.append(f'<img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(b, Details):
            out += [f"<details><summary>{inline_html(b.title)}</summary>", *_html_blocks(b.blocks), "</details>"]
    return out


def to_html(title: str, meta: str, sections: list[Section], footer: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{inline_html(meta)}</p>"]
    for s in sections:
        body += [f"<h2>{html.escape(s.title)}</h2>", *_html_blocks(s.blocks)]
    body.append(f"<p class='meta'>{inline_html(footer)}</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>"
    )


def markdown_section(text: str) -> list:
    """Blocks for a section a caller gives as Markdown: each run of ``|`` lines a table (cells keep their
    inline Markdown), the other lines paragraphs."""
    blocks, table, para = [], [], []

    def close_table():
        if table:
            head, *rest = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            blocks.append(Table(pd.DataFrame(rest, columns=head)))
            table.clear()

    for line in (ln for ln in text.splitlines() if ln.strip()):
        if line.lstrip().startswith("|"):
            if para:
                blocks.append(Text(list(para)))
                para.clear()
            if not set(line.strip()) <= set("|-: "):  # skip the header rule
                table.append(line)
        else:
            close_table()
            para.append(line)
    close_table()
    if para:
        blocks.append(Text(para))
    return blocks
