"""Loss-family study: the stable setup under minimax, non-saturating, LSGAN, WGAN-GP and hinge losses,
testing the gain law's prediction of the link factor of std(g)/std(d_fake) for each.

    python analysis/loss_families.py [--full] [--seeds 1,2]
"""

from gantrack import studies


def main() -> None:
    args = studies.study_arguments(__doc__.splitlines()[0], "1", "loss-families")
    rep = studies.loss_families(
        args.experiment, args.seeds, quick=not args.full, tracking_uri=args.tracking_uri, out_dir=args.out
    )
    print(rep.html.resolve())
    print(studies.summarise_families(rep.summary).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
