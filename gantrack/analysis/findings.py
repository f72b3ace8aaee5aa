"""The report's findings in words: each sentence computed from the experiment's numbers.

``answer(summary)`` gives the plain-language paragraphs (Markdown inline: ``**bold**``, backticks),
the question's scenario (stable) first; ``run_labels`` names runs so that no two share a label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import contract as C
from .text import ci, fmt, pct


def _label(row) -> str:
    """scenario/loss[/arch][/precision]/s<seed> from the run's tags, or the run id's start."""
    parts = [str(row.get(c)) for c in ("scenario", "loss") if isinstance(row.get(c), str)]
    # the model variant and precision only where they differ from the book's (older runs lack the tags)
    parts += [
        v for c, book in (("arch", "bn"), ("precision", "fp32")) if isinstance(v := row.get(c), str) and v != book
    ]
    seed = row.get("seed")
    label = "/".join(parts) + (f"/s{seed}" if isinstance(seed, str) else "")
    name = row.get("name")
    if not isinstance(row.get("scenario"), str) and isinstance(name, str) and name:
        return f"{name} ({label})" if label else name  # not a preset's run: its name says which it is
    return label or str(row["run_id"])[:8]


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """A label per run (index aligned with ``runs``), unique within the frame: runs that share their tags'
    label get their run name added, and their run id's start where the names are the same too."""
    base = runs.apply(_label, axis=1) if len(runs) else pd.Series(dtype=str)
    names = runs["name"].fillna("").astype(str) if "name" in runs else pd.Series("", index=runs.index)
    ids = runs["run_id"].astype(str)
    label = base.where(~base.duplicated(keep=False), base + " (" + names + ")")
    same = label.duplicated(keep=False) | (names == "") & base.duplicated(keep=False)
    return label.where(~same, base + " (" + ids.str[:8] + ")")


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
    named = scen.where(scen != "", "runs without a scenario tag")  # e.g. your own loops
    label = (named + (" / " + s["family"] if fams else "")) if several else s["family"]
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
        up, down = med[ups[0]], med[downs[0]]
        net = up * down
        # "cancel" only when what is left of the two is small beside either one
        ends = "largely cancel" if abs(np.log(net)) < np.log(1.25) else f"partly offset each other (net ×{net:.2f})"
        text += f" **{ups[0]}** (×{up:.2f}) and **{downs[0]}** (×{down:.2f}) pull in opposite directions and {ends}."
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


LAW_DEFINITION = (
    "for each quarter of the run five numbers: the operating point (mean and spread of D's scores), how far "
    "the common shift and the spread swing, and their correlation; the links applied exactly"
)


def _law_sentence(g: pd.DataFrame, define: bool = True) -> str:
    """The law against the measurement for one group; ``define``: say what the law is (first use only)."""
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
        ("The law — " + LAW_DEFINITION + " — predicts" if define else "The law predicts")
        + f" a link of {have['predicted_link'].median():.2f} against a measured "
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


def _margin_sentence(g: pd.DataFrame) -> str:
    """Hinge: d_fake = relu(1 + c) moves only for fakes inside the margin; how many are, measured."""
    if "margin_fake" not in g or not g["margin_fake"].notna().any():
        return ""
    fake, real = g["margin_fake"].median(), g.get("margin_real", pd.Series(dtype=float)).median()
    return (
        f" Hinge: {100 * fake:.0f} % of D's fakes sit inside the margin (1 + C(G(z)) > 0), the only ones that move "
        "d_fake; g = -C(G(z)) moves with every sample"
        + (f" ({100 * real:.0f} % of the reals inside theirs)." if np.isfinite(real) else ".")
    )


def _mirror(g: pd.DataFrame) -> bool:
    return bool(g["family"].isin(C.MIRROR_FAMILIES).all())


def _mirror_sentence(g: pd.DataFrame) -> str:
    """For minimax and WGAN-GP the question is moot on one batch: say so, instead of testing a law that
    holds by construction."""
    fam = g["family"].iloc[0]
    d_label, g_label = C.CURVE_LABELS[fam]
    return (
        f"For {fam}, d_fake = {d_label} and g = {g_label}: g = −d_fake as functions of D's output, so the link "
        "is 1 by construction (no law to test) and whatever makes the two curves differ is context, timing "
        "and sampling."
    )


def answer(summary: pd.DataFrame) -> list[str]:
    """Plain-language findings, each sentence computed from this experiment's numbers; the
    question's scenario (stable) first."""
    s = summary[summary["reason"] == ""]
    if s.empty:
        return ["No run of this experiment logged both loss/d_fake and loss/g: nothing to explain."]
    out, defined = [], False
    for group, g in _groups(s):
        n = len(g)
        ratio = g["ratio"].median()
        calm = "swings more than" if ratio > 1.1 else ("moves less than" if ratio < 0.9 else "moves about as much as")
        mirror = _mirror(g)  # then say first that the question is moot on one batch
        out.append(
            f"**{group}** ({n} run{'s' * (n > 1)}): "
            + (_mirror_sentence(g) + " Measured: " if mirror else "")
            + f"g {calm} d_fake — std(g)/std(d_fake) = {ratio:.2f} "
            f"(median; range {g['ratio'].min():.2f}–{g['ratio'].max():.2f}); the two curves are "
            f"{correlation_words(g['corr'].median())} (median r = {g['corr'].median():.2f}). "
            + _factor_sentence(g, ratio)
            + ("" if mirror else " " + _law_sentence(g, define=not defined))
            + _margin_sentence(g)
        )
        defined = defined or ("predicted_link" in g and g["predicted_link"].notna().any())
        failed = g[g.get("law_verdict", pd.Series("", index=g.index)) == "fails"]
        for _, r in failed.iterrows():
            out.append(f"- {r['label']}: law {fmt(r['predicted_link'])}, measured {ci(r, 'link')} — {r['law_reason']}.")
    return out
