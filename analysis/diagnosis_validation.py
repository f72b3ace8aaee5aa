"""Validate ``gantrack.analysis.diagnose`` on a labelled set of runs that set no threshold.

The thresholds in ``gantrack.diagnosis`` were set from the real-vs-real null values and from chapter-10
runs with seeds 11 and 12 (docs/diagnosis.md); this set uses other seeds and other settings:

- chapter 10's four scenarios at two widths (G 16/D 32 and G 32/D 32 channels), both ``arch`` variants
  (bn, nobn), seeds 1, 2, 3 — labelled with the preset's intended mode;
- the stable setup under the five loss families (seed 1) — labelled stable;
- ring-2d: the non-saturating GAN of the preset (known to hop between modes: labelled mode-collapse) and
  the same players under WGAN-GP (labelled stable), seeds 1, 2;
- the examples: the own-loop DCGAN, the Lightning module, the WGAN-GP ring loop — labelled stable; from
  round 5 also the foreign-runs example (plain ``mlflow.log_metrics``, diagnosed through a key map),
  labelled by what its G's samples are (``foreign_label``), since a small ring GAN may well collapse.

Prints the confusion matrix (intended × diagnosed), the onset errors against the book's (steps 2-3 for
the Adam defaults, 20-30 for the combined batch) and every disagreement with its evidence, as Markdown.

    python analysis/diagnosis_validation.py --tracking-uri sqlite:///validation.db [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

import pandas as pd

from gantrack import GantrackError
from gantrack import contract as C
from gantrack.analysis import diagnose, load_runs
from gantrack.config import preset
from gantrack.sweep import run_configs

EXPERIMENT = "diagnosis-validation"  # round 2: "-2" appended
INTENDED = {
    "stable": "stable",
    "mode-collapse": "mode-collapse",
    "convergence-failure": "convergence-failure",
    "convergence-failure-adam": "convergence-failure",
}
BOOK_ONSET = {"convergence-failure": (20, 30), "convergence-failure-adam": (2, 3)}
WIDTHS = {"G16/D32": dict(width=0.125, d_width=0.5), "G32/D32": dict(width=0.25, d_width=0.5)}
MAIN_JOB_STABLE = dict(width=0.25, d_width=1.0)  # G 32 / D 64
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


ROUNDS = {  # seeds of the chapter's scenarios, of the loss families, of the rings; each round's are fresh
    1: ((1, 2, 3), (1,), (1, 2)),
    2: ((4, 5), (2,), (3, 4)),
    3: ((6, 7, 8), (3,), (5, 6)),
    4: ((9, 10, 11), (4,), (7, 8)),  # the rules as revised after round 3, on fresh seeds
    5: ((), (), ()),  # the examples only (rules unchanged since round 4): fixed examples and the foreign runs
    # the rules of round 4 again, on fresh seeds (11 and 12 set round 1's thresholds), and the examples
    # at their new defaults (GANs that learn: the own loop at 32 channels, 900 steps; the rings longer)
    6: ((13, 14, 15), (5,), (9, 10)),
    # the ring rule on the modes G keeps (div/modes_kept), set after round 6 on exploration seeds 101-103
    7: ((16, 17, 18), (6,), (11, 12)),
}
FOREIGN_SEEDS = {5: (5, 6), 6: (7, 8), 7: (9, 10)}  # rounds 1-4 had no foreign runs
FOREIGN_STEPS = {5: 400, 6: 2000, 7: 2000}  # rounds 6-7: the example's default
# round 3 trains each scenario at the README main job's size for it (gantrack.studies.MAIN_JOB_CPU, with
# bfloat16 where the main job uses it) and the 3-layer ring-2d preset; rounds 1-2 the two WIDTHS and the
# 1-layer ring of the time (3,000 steps)
RING_STABLE = dict(loss="wgan-gp", n_critic=5, lr=5e-4, beta1=0.0, beta2=0.9)  # Gulrajani et al.'s betas


def _scenario_sizes(round_: int) -> list[dict]:
    if round_ < 3:
        return [dict.fromkeys(INTENDED, w) for w in WIDTHS.values()]  # rounds 3 and 4: the main job's sizes
    from gantrack.device import _cpu_has_bf16
    from gantrack.studies import MAIN_JOB_BF16, MAIN_JOB_CPU

    bf16 = _cpu_has_bf16()
    return [{s: dict(v, precision="bf16") if bf16 and s in MAIN_JOB_BF16 else v for s, v in MAIN_JOB_CPU.items()}]


def configs(experiment: str, round_: int = 1):
    seeds, family_seeds, ring_seeds = ROUNDS[round_]
    out = []
    for sizes in _scenario_sizes(round_):
        for arch in ("bn", "nobn"):
            for scenario in INTENDED:
                for seed in seeds:
                    size = {"sample_every": 150, **sizes[scenario]}
                    out.append(preset(scenario).replace(experiment=experiment, seed=seed, arch=arch, **size))
    family_size = WIDTHS["G16/D32"] if round_ < 3 else MAIN_JOB_STABLE
    for loss in C.LOSS_FAMILIES:
        for seed in family_seeds:
            cfg = preset("stable").replace(experiment=experiment, seed=seed, loss=loss, sample_every=150)
            out.append(cfg.replace(**family_size))
    for seed in ring_seeds:
        if round_ < 3:
            ring = preset("ring-2d").replace(experiment=experiment, seed=seed, steps=3000, mlp_layers=1, lr=1e-4)
            out += [ring, ring.replace(loss="wgan-gp", n_critic=5)]
        else:
            ring = preset("ring-2d").replace(experiment=experiment, seed=seed)
            out += [ring, ring.replace(**RING_STABLE)]
    return out


def label(run) -> str:
    scenario = run.get(f"tags.{C.TAG_SCENARIO}")
    if scenario == "ring-2d":
        return "stable" if run.get(f"tags.{C.TAG_LOSS}") == "wgan-gp" else "mode-collapse"
    return INTENDED.get(scenario, "stable")


def _setting(run) -> str:
    """A preset run's scenario, family, arch, widths and seed; an example's run name and seed."""
    if not isinstance(run.get("params.scenario"), str):
        return f"{run.get('name')} seed {run.get('params.seed', '?')}"
    keys = ("scenario", "loss", "arch", "width", "d_width", "seed")
    return " ".join(str(run.get(f"params.{k}")) for k in keys if isinstance(run.get(f"params.{k}"), str))


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def examples(uri: str, experiment: str, round_: int) -> None:
    seed = ["--seed", str(round_)] if round_ >= 4 else []  # rounds 1-3 ran the same example runs (seed 1)
    if round_ >= 6:  # the examples' defaults
        runs = (("dcgan_own_loop", seed), ("lightning_gan", seed), ("wgan_gp_ring", seed))
    else:  # the defaults of the time: the own loop at 16 channels, the WGAN-GP ring for 300 steps
        runs = (
            ("dcgan_own_loop", ["--steps", "450", "--ngf", "16", "--ndf", "16", *seed]),
            ("lightning_gan", ["--steps", "300", *(seed if round_ >= 5 else [])]),  # --seed since round 5
            ("wgan_gp_ring", ["--steps", "300", *seed]),
        )
    for name, argv in runs:
        _example(name).main(argv + ["--tracking-uri", uri, "--experiment", experiment])


def foreign_label(G) -> tuple[str, str]:
    """What a foreign ring run is, read from its G (which ``diagnose`` never sees, only the run's logged
    losses): 1,000 samples measured with the ring measures at the example's mode width (σ = 0.05), judged
    by the rules' own ring thresholds. Returns (label, what was measured)."""
    import torch

    from gantrack import diagnosis, diversity

    with torch.no_grad():
        points = G(torch.randn(1000, 4, generator=torch.Generator().manual_seed(0)))
    modes, quality = diversity.ring_modes(points, std=0.05)
    kept = diversity.ring_modes_kept(points)
    seen = f"G's samples: {modes} of 8 modes within 3 σ, {kept} of 8 kept, quality {quality:.2f}"
    if quality <= diagnosis.COVERAGE_GARBAGE * diagnosis.RING_QUALITY_CEILING:
        return "convergence-failure", seen
    if kept <= diagnosis.RING_COLLAPSE:
        return "mode-collapse", seen
    return ("stable" if modes == 8 and quality >= diagnosis.RING_QUALITY else "unclear"), seen


def foreign(uri: str, experiment: str, round_: int) -> pd.DataFrame:
    """The foreign-runs example (plain ``mlflow.log_metrics``, no gantrack) in an experiment of its own,
    diagnosed through the ``pytorch-dcgan`` key map; labelled by what its G's samples are."""
    from gantrack import keymaps

    mod, labels = _example("foreign_runs"), {}
    for seed in FOREIGN_SEEDS.get(round_, ()):
        run_id, G = mod.train_without_gantrack(FOREIGN_STEPS[round_], seed, experiment, uri)
        labels[run_id] = (seed, *foreign_label(G))
    if not labels:
        return pd.DataFrame()
    table = diagnose(load_runs(experiment, tracking_uri=uri, key_map=keymaps.preset("pytorch-dcgan"), progress=False))
    table = table[table["run_id"].isin(labels)].copy()
    table["intended"] = [labels[r][1] for r in table["run_id"]]
    table["setting"] = [f"foreign ring seed {labels[r][0]} ({labels[r][2]})" for r in table["run_id"]]
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", default="sqlite:///validation.db")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-examples", action="store_true")
    ap.add_argument("--grids", help="save the disagreements' last sample grids to this PNG")
    ap.add_argument(
        "--round",
        type=int,
        default=1,
        choices=sorted(ROUNDS),
        help="1: the first set; 2-4, 6, 7: fresh seeds (3, 4, 6, 7: main job's sizes); 5: the examples only",
    )
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    experiment = EXPERIMENT if args.round == 1 else f"{EXPERIMENT}-{args.round}"
    cfgs = [c.replace(threads=1) for c in configs(experiment, args.round)]
    if cfgs:
        run_configs(cfgs, args.tracking_uri, workers=args.workers)
    try:
        rs = load_runs(experiment, tracking_uri=args.tracking_uri, progress=False)
        kinds = rs.runs.get(f"tags.{C.TAG_KIND}", pd.Series(dtype=str))
    except GantrackError:  # round 5 trains no presets: the experiment comes with the examples
        kinds = pd.Series(dtype=str)
    if not args.skip_examples and not (kinds == "user-loop").any():
        examples(args.tracking_uri, experiment, args.round)
        rs = load_runs(experiment, tracking_uri=args.tracking_uri, progress=False)
    table = diagnose(rs)
    runs = rs.runs.set_index("run_id")
    table["intended"] = [label(runs.loc[r]) for r in table["run_id"]]
    table["setting"] = [_setting(runs.loc[r]) for r in table["run_id"]]
    if not args.skip_examples and args.round in FOREIGN_SEEDS:
        table = pd.concat([table, foreign(args.tracking_uri, f"{experiment}-foreign", args.round)], ignore_index=True)
    correct = table["verdict"] == table["intended"]
    print(f"## Validation: {correct.sum()} of {len(table)} runs correct ({100 * correct.mean():.0f} %)\n")
    cm = pd.crosstab(table["intended"], table["verdict"])
    print("| intended \\ diagnosed | " + " | ".join(cm.columns) + " |")
    print("|---|" + "---|" * len(cm.columns))
    for idx, row in cm.iterrows():
        print(f"| {idx} | " + " | ".join(str(v) for v in row) + " |")
    falsely = table[(table["verdict"] == "mode-collapse") & (table["intended"] != "mode-collapse")]
    print(f"\nRuns with diverse samples called mode-collapse: {len(falsely)}\n")
    print("### Onsets of the convergence failures against the book's, and the online detector's latency\n")
    print("| setting | onset (step) | book | error (steps) | decided online at step | latency (steps) |")
    print("|---|---|---|---|---|---|")
    m = rs.metrics
    for _, r in table.iterrows():
        scenario = runs.loc[r["run_id"]].get(f"tags.{C.TAG_SCENARIO}") if r["run_id"] in runs.index else None
        if scenario in BOOK_ONSET and r["verdict"] == "convergence-failure":
            lo, hi = BOOK_ONSET[scenario]
            onset = int(r["onset_step"])
            err = 0 if lo <= onset <= hi else (onset - hi if onset > hi else onset - lo)
            codes = m[(m["run_id"] == r["run_id"]) & (m["key"] == C.DIAG_CODE)].sort_values("step")
            online = codes[codes["value"] == C.VERDICTS.index("convergence-failure")]["step"]
            at = int(online.iloc[0]) if len(online) else None
            late = "—" if at is None else f"{at - onset:+d}"
            print(f"| {r['setting']} | {onset} | {lo}-{hi} | {err:+d} | {at if at is not None else '—'} | {late} |")
    print("\n### Every disagreement, with its evidence\n")
    for _, r in table[~correct].iterrows():
        print(f"- **{r['setting']}** (`{r['run_id'][:8]}`): intended {r['intended']}, diagnosed **{r['verdict']}**")
        sub = f" ({r['subtype']})" if r["subtype"] else ""
        print(f"  {sub.strip()} evidence: {r['evidence'] or '—'}; missing: {r['missing'] or '—'}")
    if args.grids:
        save_grids(table[~correct], args.tracking_uri, args.grids)
        print(f"\nThe disagreements' last sample grids: {args.grids}")


def save_grids(rows: pd.DataFrame, uri: str, path: str) -> None:
    """Each run's last sample grid (the harness's ``samples/`` artifact; the examples log theirs to MLflow's
    image key), titled with its setting and verdict, in one figure: what the verdicts are checked against."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    images = []
    for _, r in rows.iterrows():
        files = [f.path for f in client.list_artifacts(r["run_id"], "samples") if f.path.endswith(".png")]
        if not files:
            files = [f.path for f in client.list_artifacts(r["run_id"], "images") if f.path.endswith(".png")]
            files = sorted(files, key=lambda f: int(f.split("+step+")[1].split("+")[0]) if "+step+" in f else 0)
        if files:
            local = client.download_artifacts(
                r["run_id"], sorted(files)[-1] if "+step+" not in files[-1] else files[-1]
            )
            images.append((r, plt.imread(local)))
    if not images:
        return
    cols = min(4, len(images))
    rows_n = -(-len(images) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 4.4 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (r, img) in zip(axes.flat, images):
        ax.imshow(img, cmap="gray")
        ax.set_title(
            f"{r['setting']} ({r['run_id'][:8]})\nintended {r['intended']} · diagnosed {r['verdict']}", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
