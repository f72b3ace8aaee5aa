"""Chapter 10 study: the four scenarios over several seeds, beside what the tutorial describes.

    python analysis/chapter10.py [--full] [--seeds 1,2,3] [--experiment chapter10]   (default: the main job's plan)

Same as `gantrack study chapter10`. Finished runs with the same config are reused from MLflow.
"""

from gantrack import studies


def main() -> None:
    args = studies.study_arguments(__doc__.splitlines()[0], "", "chapter10")
    rep = studies.chapter10(
        args.experiment,
        args.seeds or None,
        quick=False if args.full else None,
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
    )
    print(rep.html.resolve())
    print(rep.summary[["label", "ratio", "link", "predicted_link", "timing", "sampling"]].round(3).to_string())


if __name__ == "__main__":
    main()
