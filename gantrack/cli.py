"""``gantrack`` command line: a thin layer over the Python API.

Bad input prints one line (``gantrack: error: ...``) on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import GantrackError, TrainingDiverged


def _train(args) -> int:
    from . import config as config_mod
    from .harness import train

    overrides = config_mod.parse_set(args.set or [])
    for name in ("experiment", "seed", "steps", "epochs", "width", "loss", "lr", "optimizer"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.allow_nan:
        overrides["allow_nan"] = True
    if args.no_probes:
        overrides["probes"] = False
    cfg = config_mod.resolve(args.preset, args.config, overrides)
    run_id = train(cfg, tracking_uri=args.tracking_uri, quiet=args.quiet)
    print(run_id)
    return 0


def _presets(args) -> int:
    from .config import PRESETS

    width = max(map(len, PRESETS))
    for name, (text, _) in PRESETS.items():
        print(f"{name:<{width}}  {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gantrack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one GAN and log it to MLflow")
    t.add_argument("--preset", default=None, help="a preset name (see `gantrack presets`); default stable")
    t.add_argument("--config", help="TOML file of config fields (may set preset = ...)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")
    t.add_argument("--experiment")
    t.add_argument("--seed", type=int)
    t.add_argument("--steps", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--width", type=float)
    t.add_argument("--loss")
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer")
    t.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite ./mlflow.db)")
    t.add_argument("--allow-nan", action="store_true", help="keep training after a NaN/inf loss")
    t.add_argument("--no-probes", action="store_true", help="skip the 2x2 probe forward passes")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(func=_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TrainingDiverged as e:
        print(f"gantrack: {e}", file=sys.stderr)
        return 1
    except GantrackError as e:
        print(f"gantrack: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gantrack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
