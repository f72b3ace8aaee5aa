"""The width study behind the main job's model sizes: the tutorial's checks against G's and D's width.

Trains (or reuses) the chapter-10 scenarios at several model sizes and seeds with gantrack's own sweep,
then prints, per scenario, size and precision, how many seeds agree with each tutorial statement and
the measured values, beside the minutes a run took. docs/chapter10.md ("The main job's model sizes")
holds its output.

    python analysis/width_study.py --tracking-uri sqlite:///width.db [--seeds 1,2,3] [--no-train]

Sizes (G width, D width; 1 = the book's 128 / 64 channels): (0.25, 1) and (0.5, 1) for every scenario;
for the two whose signatures need more (mode collapse, the Adam defaults) also (0.125, 0.5), the old
main job, (0.75, 1) and (1, 1), the book's, in float32 (the book's also in bfloat16 on a CPU that has it).
"""

import argparse

import pandas as pd

from gantrack import contract as C
from gantrack.analysis import load_runs
from gantrack.config import preset
from gantrack.studies import CHAPTER10, tutorial_checks
from gantrack.sweep import run_configs

SIZES = [(0.25, 1.0), (0.5, 1.0)]
HARD = ("mode-collapse", "convergence-failure-adam")  # also at the old main job's and the book's sizes
HARD_SIZES = [(0.125, 0.5), (0.75, 1.0), (1.0, 1.0)]


def configs(experiment: str, seeds: list[int], bf16: bool) -> list:
    out = []
    for scenario in CHAPTER10:
        for width, d_width in SIZES + (HARD_SIZES if scenario in HARD else []):
            for precision in ("fp32", "bf16") if bf16 and width == 1.0 else ("fp32",):
                for seed in seeds:
                    out.append(
                        preset(scenario).replace(
                            experiment=experiment,
                            seed=seed,
                            width=width,
                            d_width=d_width,
                            sample_every=150,
                            precision=precision,
                        )
                    )
    return out


def table(experiment: str, tracking_uri: str) -> pd.DataFrame:
    """One row per (scenario, G width, D width, precision, statement): seeds agreeing and the values."""
    rs = load_runs(experiment, tracking_uri=tracking_uri, progress=False)
    runs = rs.runs[rs.runs["status"] == "FINISHED"].set_index("run_id")
    checks = tutorial_checks(rs)
    checks = checks[checks["agrees"].notna() & checks["run_id"].isin(runs.index)]
    for col, name in (("width", "params.width"), ("d_width", "params.d_width"), ("precision", "params.precision")):
        checks[col] = checks["run_id"].map(runs[name]) if name in runs else None
    checks["precision"] = checks["precision"].fillna("fp32")
    minutes = pd.to_numeric(runs.get(f"tags.{C.TAG_LOOP_SECONDS}"), errors="coerce") / 60
    checks["minutes"] = checks["run_id"].map(minutes)
    rows = []
    keys = ["scenario", "width", "d_width", "precision", "statistic"]
    for key, g in checks.sort_values("seed").groupby(keys, sort=True):
        rows.append(
            dict(
                zip(keys, key),
                agree=f"{int(g['agrees'].sum())} of {len(g)}",
                measured="; ".join(f"{s}: {m}" for s, m in zip(g["seed"], g["measured"])),
                minutes=round(float(g["minutes"].median()), 1),
            )
        )
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame) -> str:
    lines = [
        "| scenario | G / D width | precision | statement | seeds agreeing | measured (seed: value) | min/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in t.itertuples():
        lines.append(
            f"| {r.scenario} | {r.width} / {r.d_width} | {r.precision} | {r.statistic} | {r.agree} | "
            f"{r.measured} | {r.minutes} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiment", default="widths")
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-bf16", action="store_true", help="leave out the bfloat16 runs")
    ap.add_argument("--no-train", action="store_true", help="only tabulate the runs already there")
    args = ap.parse_args()
    if not args.no_train:
        from gantrack.device import _cpu_has_bf16

        seeds = [int(s) for s in args.seeds.split(",")]
        run_configs(
            configs(args.experiment, seeds, _cpu_has_bf16() and not args.no_bf16), args.tracking_uri, args.workers
        )
    print(markdown(table(args.experiment, args.tracking_uri)))


if __name__ == "__main__":
    main()
