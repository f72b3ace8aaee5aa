"""Studies: train (or reuse) a set of runs, then report on them.

``chapter10``: the chapter's four scenarios over several seeds, set beside what the tutorial
says each curve should look like. ``loss_families``: the stable setup under all five loss
families, testing the gain law per family. Runs are identified by the hash of their resolved
config (tag ``gantrack.config_hash``): a finished run with the same hash is reused, not retrained.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pandas as pd

from . import contract as C
from .config import ARCHS, apply_overrides, preset
from .contract import LOSS_FAMILIES
from .errors import GantrackError
from .sweep import CHECKPOINT_EVERY, run_configs

CHAPTER10 = ("stable", "mode-collapse", "convergence-failure", "convergence-failure-adam")
FAMILIES = LOSS_FAMILIES
QUICK = dict(width=0.125, d_width=0.5, sample_every=150)  # --quick: G 16, D 32 channels, ~1 min a run on one core
BOOK = dict(width=1.0, d_width=1.0)  # --full: the book's G 128, D 64 channels
# The main job on a CPU: per scenario, the cheapest model sizes whose tutorial signatures stay inside the
# book-size study's (docs/chapter10.md, "The main job's model sizes": the width study that chose them)
MAIN_JOB_CPU = {
    "stable": dict(width=0.25, d_width=1.0, sample_every=150),
    "mode-collapse": dict(width=1.0, d_width=1.0, sample_every=150),
    "convergence-failure": dict(width=0.25, d_width=1.0, sample_every=150),
    "convergence-failure-adam": dict(width=0.75, d_width=1.0, sample_every=150),
}
# where bfloat16 was shown not to move the scenario's signatures (docs/chapter10.md, bf16 against fp32 at
# the book's sizes): there the main job runs in bf16 on a CPU that has it in hardware, float32 elsewhere
MAIN_JOB_BF16 = ("mode-collapse",)
MAIN_JOB_CPU_SEEDS = (1,)
GPU_SEEDS = (1, 2, 3)  # the book's sizes take seconds a run on a GPU: the whole seed set


# --- the tutorial's descriptions, as checks -------------------------------------------------------


def _late(wide: pd.DataFrame, frac: float = 0.5) -> pd.DataFrame:
    return wide[wide.index > wide.index.min() + frac * (wide.index.max() - wide.index.min())]


def tutorial_checks(runset) -> pd.DataFrame:
    """Each scenario's curve statistics beside what the tutorial says (second half of training unless noted)."""
    m = runset.metrics
    rows = []
    for _, run in runset.runs.iterrows():
        scenario = run.get(f"tags.{C.TAG_SCENARIO}")
        if scenario not in CHAPTER10:
            continue
        sub = m[m["run_id"] == run["run_id"]]
        wide = sub.pivot_table(index="step", columns="key", values="value", aggfunc="last", observed=True)
        wide.columns = wide.columns.astype(str)
        seed = run.get(f"tags.{C.TAG_SEED}")
        arch = run.get(f"tags.{C.TAG_ARCH}")
        needed = (
            [C.D_REAL, C.D_FAKE, C.G_LOSS]
            + ([C.ACC_REAL, C.ACC_FAKE] if scenario in ("stable", "mode-collapse") else [])
            + ([C.D_LOSS] if scenario == "convergence-failure" else [])
        )
        lacking = [k for k in needed if k not in wide or wide[k].notna().sum() < 2]
        if lacking:  # a killed or partial run: say so in its row, check the others
            status = run.get("status", "")
            rows.append(
                {
                    "run_id": run["run_id"],
                    "scenario": scenario,
                    "arch": arch if isinstance(arch, str) else "",
                    "seed": seed,
                    "statistic": "(run not checked)",
                    "tutorial": "—",
                    "measured": f"{status} run lacks {', '.join(lacking)}".strip(),
                    "agrees": None,
                }
            )
            continue
        late = _late(wide)

        def add(stat, says, value, ok, scenario=scenario, seed=seed, arch=arch, run_id=run["run_id"]):  # bound now
            rows.append(
                {
                    "run_id": run_id,
                    "scenario": scenario,
                    "arch": arch if isinstance(arch, str) else "",
                    "seed": seed,
                    "statistic": stat,
                    "tutorial": says,
                    "measured": value,
                    "agrees": ok,
                }
            )

        d = late[[C.D_REAL, C.D_FAKE]].mean()
        if scenario in ("stable", "mode-collapse"):
            add(
                "mean d_real, d_fake (2nd half)",
                "about 0.5-0.8" if scenario == "stable" else "(no figure given)",
                f"{d[C.D_REAL]:.2f}, {d[C.D_FAKE]:.2f}",
                bool((d.between(0.5, 0.8)).all()) if scenario == "stable" else None,
            )
            add(
                "mean g (2nd half)",
                "1.0-2.0" if scenario == "stable" else "(no figure given)",
                f"{late[C.G_LOSS].mean():.2f}",
                bool(1.0 <= late[C.G_LOSS].mean() <= 2.0) if scenario == "stable" else None,
            )
            acc = late[[C.ACC_REAL, C.ACC_FAKE]].mean().mean()
            add(
                "mean D accuracy (2nd half)",
                "70-80 %" if scenario == "stable" else "(no figure given)",
                f"{100 * acc:.0f} %",
                bool(0.7 <= acc <= 0.8) if scenario == "stable" else None,
            )
            if scenario == "mode-collapse":
                fake_acc = late[C.ACC_FAKE].mean()
                add(
                    "mean fake accuracy (2nd half)",
                    "many around 100 %",
                    f"{100 * fake_acc:.0f} %",
                    bool(fake_acc >= 0.9),
                )
                period, lo, hi, p = _g_period(sub)
                interval = "" if not (lo == lo and hi == hi) else f" [{lo:.1f}, {hi:.1f}]"
                add(
                    "dominant period of g [95 % CI] (after burn-in)",
                    f"about 25 model updates (book sizes: {MODE_COLLAPSE_PERIOD[0]}-{MODE_COLLAPSE_PERIOD[1]})",
                    "—" if period is None else f"{period:.1f}{interval} steps (peak p {p:.3f})",
                    period is not None and p < 0.05 and MODE_COLLAPSE_PERIOD[0] <= period <= MODE_COLLAPSE_PERIOD[1],
                )
        elif scenario == "convergence-failure":
            first = _for_good(wide[C.D_LOSS] < 0.05)
            add(
                "step from which loss/d < 0.05 for good",
                "within 20-30 steps, then stays near 0",
                str(first) if first else "never",
                first is not None and first <= 30,
            )
            add(
                "mean loss/d, g (2nd half)",
                "d ≈ 0",
                f"{late[C.D_LOSS].mean():.3f}, {late[C.G_LOSS].mean():.2f}",
                bool(late[C.D_LOSS].mean() < 0.05),
            )
        elif scenario == "convergence-failure-adam":
            first = _for_good((wide[C.D_REAL] < 0.05) & (wide[C.D_FAKE] < 0.05))
            add(
                "step from which d_real, d_fake < 0.05 for good",
                "steps 2-3 (agrees within 10 steps)",
                str(first) if first else "never",
                first is not None and first <= 13,
            )
            add(
                "mean d_real, d_fake (2nd half)",
                "near 0",
                f"{d[C.D_REAL]:.3f}, {d[C.D_FAKE]:.3f}",
                bool((d < 0.1).all()),
            )
            gmax = float(late[C.G_LOSS].max())
            add(
                "g in the 2nd half (mean, max)", "climbs past 10", f"{late[C.G_LOSS].mean():.2f}, {gmax:.2f}", gmax > 10
            )
    return pd.DataFrame(rows)


def _for_good(flag: pd.Series) -> int | None:
    """The first step from which ``flag`` holds at every step to the end (None: never)."""
    stays = flag[::-1].cumprod()[::-1].astype(bool)
    return int(stays.idxmax()) if stays.any() else None


# docs/chapter10.md ("The main job's model sizes"): g's dominant period in the mode-collapse runs at the
# book's sizes, float32, seeds 1-3, all three peaks significant (p 0.005): 23.6 [18.6, 28.5] steps (mean
# and 95 % t-interval over seeds); the study before the Monte Carlo peak test gave 24.1 [18.7, 29.5]
MODE_COLLAPSE_PERIOD = (18.6, 28.5)


def _g_period(sub: pd.DataFrame) -> tuple[float | None, float, float, float]:
    """g's dominant period (steps), its block-bootstrap interval and the red-noise test's p-value
    (``analysis.measures``)."""
    from .analysis.measures import oscillation

    osc = oscillation(sub[sub["key"] == C.G_LOSS], keys=[C.G_LOSS], n_boot=200)
    if osc.empty or osc["reason"].iloc[0]:
        return None, float("nan"), float("nan"), float("nan")
    r = osc.iloc[0]
    return float(r["dominant_period"]), float(r["period_lo"]), float(r["period_hi"]), float(r["peak_p"])


@contextlib.contextmanager
def one_study_at_a_time(experiment: str, tracking_uri: str | None):
    """Hold this machine's lock on (store, experiment) while a study trains; a second study on the same
    ones is refused in one line instead of training every point a second time (nothing claims a local
    study's points as ``--storage`` claims a shared sweep's). Released when the process ends, however."""
    import fcntl
    import hashlib

    from .paths import cache_dir
    from .tracking import redact, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    folder = cache_dir("studies")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / (hashlib.sha256(f"{uri}|{experiment}".encode()).hexdigest()[:16] + ".lock"), "a+")
    except OSError:  # no writable cache: studies run unguarded, as before
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise GantrackError(
                f"another study ({holder}) is training experiment {experiment!r} on {redact(uri)}; "
                "wait for it to end, then run this again to reuse its runs (or use another --experiment)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        yield


def _checkpointed(cfg):
    """Studies checkpoint by default (as sweeps do), so a killed study resumes its runs; a run's identity
    (its config hash) does not include the setting, so finished runs are still reused."""
    return cfg if cfg.checkpoint_every else cfg.replace(checkpoint_every=CHECKPOINT_EVERY)


def _checks_markdown(checks: pd.DataFrame) -> str:
    if checks.empty:
        return "No chapter-10 scenario runs in this experiment."
    t = checks.copy()
    t["agrees"] = t["agrees"].map({True: "yes", False: "**no**", None: "—"})
    lines = ["| scenario | arch | seed | statistic | tutorial | measured | agrees |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r.scenario} | {r.arch} | {r.seed} | {r.statistic} | {r.tutorial} | {r.measured} | {r.agrees} |"
        for r in t.sort_values(["scenario", "arch", "seed"], kind="stable").itertuples()
    ]
    n_ok = int((checks["agrees"] == True).sum())  # noqa: E712
    n_all = int(checks["agrees"].notna().sum())
    out = "\n".join(lines) + f"\n\n{n_ok} of {n_all} checkable statements agree with the tutorial."
    misses = t[checks["agrees"] == False]  # noqa: E712
    if len(misses):
        out += " Not reproduced here:\n\n" + "\n".join(
            f"- {r.scenario} (seed {r.seed}): {r.statistic} — tutorial: {r.tutorial}; measured: {r.measured}"
            for r in misses.itertuples()
        )
    return out


def _channels(sizes: dict) -> str:
    return f"G {round(128 * sizes['width'])} / D {round(64 * (sizes['d_width'] or sizes['width']))} channels"


def main_job_plan(device: str = "auto", seeds=None, quick: bool | None = None, precision: str | None = None):
    """What ``chapter10`` trains: ({scenario: size fields}, seeds, the line that says so).

    ``quick``: True for the narrow models (``QUICK``), False for the book's sizes, None (the main job)
    for the book's sizes over ``GPU_SEEDS`` when ``device`` resolves to a GPU, else ``MAIN_JOB_CPU``
    over ``MAIN_JOB_CPU_SEEDS``, the ``MAIN_JOB_BF16`` scenarios in bfloat16 where the CPU has it in
    hardware, everything else in float32 (a ``precision`` set by the caller wins)."""
    from .device import _cpu_has_bf16, resolve_device

    dev = resolve_device(device)
    if quick is True:
        sizes, default_seeds, what = dict.fromkeys(CHAPTER10, QUICK), (1, 2), "narrow models (--quick)"
    elif quick is False or dev.type != "cpu":
        sizes = dict.fromkeys(CHAPTER10, BOOK)
        default_seeds = GPU_SEEDS if (quick is None and dev.type != "cpu") else (1, 2)
        what = "the book's sizes" + (f" on {_device_name(dev)}" if dev.type != "cpu" else "")
    else:
        bf16 = precision is None and _cpu_has_bf16()
        sizes = {s: dict(v, precision="bf16") if bf16 and s in MAIN_JOB_BF16 else v for s, v in MAIN_JOB_CPU.items()}
        default_seeds = MAIN_JOB_CPU_SEEDS
        by_size: dict[str, list[str]] = {}
        for s, v in sizes.items():
            size = _channels(v) + (" (the book's)" if v["width"] == 1.0 else "")
            by_size.setdefault(size + (", bfloat16" if v.get("precision") == "bf16" else ""), []).append(s)
        what = "CPU main job: " + "; ".join(f"{', '.join(v)} at {k}" for k, v in by_size.items())
        what += (
            f"; {precision} (as set)"
            if precision
            else "; float32 elsewhere (bfloat16 where this CPU has it and it keeps the signatures)"
            if bf16
            else "; float32 (no bfloat16 in this CPU's hardware)"
        )
    seeds = tuple(seeds) if seeds else default_seeds
    line = f"chapter10: {what}; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return sizes, seeds, line


def _device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return f"the GPU ({torch.cuda.get_device_name(dev)})"
    return f"the GPU ({dev.type})"


def chapter10(
    experiment: str = "chapter10",
    seeds=None,
    quick: bool | None = None,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
    archs=("bn",),
    overrides: dict | None = None,
):
    """Train (or reuse) the chapter-10 scenarios over ``seeds`` and model variants ``archs`` ("bn": the
    2019 book's BatchNorm listing, "nobn": the 2021 tutorial's) and write the comparative report.

    ``quick``: None (default) is the main job (``main_job_plan``: the book's sizes over three seeds on a
    GPU; on a CPU the per-scenario sizes of ``MAIN_JOB_CPU`` over one seed); True the narrow models; False
    the book's sizes. ``seeds``: default as the plan says. ``overrides``: config fields set on every run
    (``precision``, ``device``, ...)."""
    from .analysis import load_runs
    from .analysis.report import build_report

    if seeds is not None and not list(seeds):
        raise GantrackError("chapter10 needs at least one seed")
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise GantrackError(f"unknown arch {', '.join(bad) or '(none)'}; choose from: {', '.join(ARCHS)}")
    device = str((overrides or {}).get("device", preset("stable").device))
    precision = (overrides or {}).get("precision")  # an explicit precision wins over the plan's
    sizes, seeds, line = main_job_plan(device, seeds, quick, str(precision) if precision else None)
    if progress:
        print(line, flush=True)
    configs = [
        _checkpointed(
            apply_overrides(
                preset(s).replace(experiment=experiment, seed=int(seed), arch=arch, **sizes[s]), overrides or {}
            )
        )
        for arch in archs
        for s in CHAPTER10
        for seed in seeds
    ]
    # the widest first: two workers finish together when the long runs do not come last
    configs.sort(key=lambda c: -(c.width**2 + (c.d_width or c.width) ** 2 / 8))
    with one_study_at_a_time(experiment, tracking_uri):
        run_configs(configs, tracking_uri, workers, progress)
    rs = load_runs(experiment, tracking_uri=tracking_uri, progress=progress)
    checks = tutorial_checks(rs)
    return build_report(
        experiment,
        tracking_uri,
        out_dir,
        runset=rs,
        progress=progress,
        extra_sections=[("The scenarios beside the tutorial", _checks_markdown(checks))],
    )


def loss_families(
    experiment: str = "loss-families",
    seeds=(1,),
    quick: bool = True,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
    overrides: dict | None = None,
):
    """The stable setup under all five loss families (WGAN-GP with 5 critic steps, lr 1e-4, β1 0);
    ``overrides``: config fields set on every run."""
    from .analysis.report import build_report

    configs = []
    for fam in FAMILIES:
        extra = dict(n_critic=5, lr=1e-4, beta1=0.0, beta2=0.9) if fam == "wgan-gp" else {}
        for seed in seeds:
            base = preset("stable").replace(
                experiment=experiment, loss=fam, seed=int(seed), **(QUICK if quick else {}), **extra
            )
            configs.append(_checkpointed(apply_overrides(base, overrides or {})))
    with one_study_at_a_time(experiment, tracking_uri):
        run_configs(configs, tracking_uri, workers, progress)
    return build_report(experiment, tracking_uri, out_dir, progress=progress)


def study_arguments(description: str, seeds: str, experiment: str):
    """Command-line options shared by the study scripts in ``analysis/``; returns the parsed args."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--full", action="store_true", help="the book's model sizes (slow on a CPU)")
    ap.add_argument("--seeds", default=seeds)
    ap.add_argument("--experiment", default=experiment)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    return args


def summarise_families(summary: pd.DataFrame) -> pd.DataFrame:
    """Per family: measured link vs the law and the simple law (medians over runs), and how often the law holds."""
    s = summary[summary["reason"] == ""]
    return (
        s.groupby("family")
        .agg(
            runs=("run_id", "size"),
            p_bar=("p_bar", "median"),
            predicted_link_simple=("predicted_link_simple", "median"),
            predicted_link=("predicted_link", "median"),
            link=("link", "median"),
            link_error=("link_error", "median"),
            holds=("law_verdict", lambda x: int((x == "holds").sum())),
        )
        .reset_index()
    )
