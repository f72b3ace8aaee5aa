"""Make book_log_stable.txt and book_log_combined.txt: chapter 10's console lines for two gantrack runs.

The book's Keras listings print, each step, ``>%d, d1=%.3f, d2=%.3f g=%.3f, a1=%d, a2=%d`` (the stable run)
and ``>%d, d=%.3f, g=%.3f, a=%d`` (the combined-batch convergence failure), with the accuracies as integer
percent. These files apply that printing convention to the metrics of two gantrack runs at the main job's
width (G 16, D 32 channels, 450 steps, seed 11: the runs docs/diagnosis.md calls its calibration set),
so the importer's tests read what a reader of the chapter sees in their terminal.

    gantrack study chapter10 --seeds 11,12 --experiment calib --tracking-uri sqlite:///calib.db
    python tests/data/make_book_logs.py --tracking-uri sqlite:///calib.db --experiment calib
"""

import argparse
from pathlib import Path

from gantrack.analysis import load_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="calib")
    ap.add_argument("--seed", default="11")
    args = ap.parse_args()
    rs = load_runs(args.experiment, tracking_uri=args.tracking_uri, progress=False)
    here = Path(__file__).parent
    for scenario, name in (("stable", "book_log_stable.txt"), ("convergence-failure", "book_log_combined.txt")):
        run = rs.runs[(rs.runs["tags.gantrack.scenario"] == scenario) & (rs.runs["tags.gantrack.seed"] == args.seed)]
        w = rs.wide(run["run_id"].iloc[0]).dropna(subset=["loss/g", "loss/d_real", "acc/real"])  # training steps only
        lines = []
        for step, r in w.iterrows():
            if scenario == "stable":
                lines.append(
                    ">%d, d1=%.3f, d2=%.3f g=%.3f, a1=%d, a2=%d"  # noqa: UP031  (the book's own printf)
                    % (
                        step,
                        r["loss/d_real"],
                        r["loss/d_fake"],
                        r["loss/g"],
                        int(100 * r["acc/real"]),
                        int(100 * r["acc/fake"]),
                    )
                )
            else:  # one combined batch: one D loss, one accuracy over real and fake
                acc = 0.5 * (r["acc/real"] + r["acc/fake"])
                line = ">%d, d=%.3f, g=%.3f, a=%d" % (step, r["loss/d"], r["loss/g"], int(100 * acc))  # noqa: UP031
                lines.append(line)
        (here / name).write_text("\n".join(lines) + "\n")
        print(name, len(lines), "lines")


if __name__ == "__main__":
    main()
