"""Loss-family study: the stable setup under minimax, non-saturating, LSGAN, WGAN-GP and hinge losses,
testing the gain law's prediction of std(g)/std(d_fake)'s link factor for each.

    python analysis/loss_families.py [--full] [--seeds 1,2]
"""

import argparse

from gantrack import studies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--experiment", default="loss-families")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--out")
    args = ap.parse_args()
    rep = studies.loss_families(args.experiment, [int(s) for s in args.seeds.split(",")], quick=not args.full,
                                tracking_uri=args.tracking_uri, out_dir=args.out)
    print(rep.html.resolve())
    print(studies.summarise_families(rep.summary).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
