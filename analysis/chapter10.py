"""Chapter 10 study: the four scenarios over several seeds, beside what the tutorial describes.

    python analysis/chapter10.py [--full] [--seeds 1,2,3] [--experiment chapter10]

Same as `gantrack study chapter10`. Finished runs with the same config are reused from MLflow.
"""

import argparse

from gantrack import studies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the book's model sizes (slow on a CPU)")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--experiment", default="chapter10")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--out")
    args = ap.parse_args()
    rep = studies.chapter10(args.experiment, [int(s) for s in args.seeds.split(",")], quick=not args.full,
                            tracking_uri=args.tracking_uri, out_dir=args.out)
    print(rep.html.resolve())
    print(rep.summary[["label", "ratio", "link", "predicted_link", "timing", "sampling"]].round(3).to_string())


if __name__ == "__main__":
    main()
