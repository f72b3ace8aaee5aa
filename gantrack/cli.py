"""``gantrack`` command line: a thin layer over the Python API.

Bad input prints one line (``gantrack: error: ...``) on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import GantrackError, RunSpooled, TrainingDiverged
from .signals import Terminated, terminate_as_interrupt


def _train(args) -> int:
    from . import config as config_mod
    from .harness import resume, train

    if args.resume:
        print(resume(args.resume, tracking_uri=args.tracking_uri, quiet=args.quiet))
        return 0

    overrides = config_mod.parse_set(args.set or [])
    for name in ("experiment", "seed", "steps", "epochs", "width", "loss", "lr", "optimizer", "checkpoint_every"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.allow_nan:
        overrides["allow_nan"] = True
    if args.no_probes:
        overrides["probes"] = False
    if args.stop_on:
        overrides["stop_on"] = args.stop_on
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


def _report(args) -> int:
    from .analysis.report import build_report
    from .keymaps import parse

    rep = build_report(
        args.experiment,
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
        log_to_mlflow=not args.no_mlflow,
        progress=not args.quiet,
        key_map=parse(args.key or [], args.keymap) or None,
    )
    _print_report(rep, args.tracking_uri, args.experiment)
    return 0


def _diagnose(args) -> int:
    import json

    import pandas as pd

    from .analysis import diagnose, load_runs
    from .keymaps import parse

    rs = load_runs(
        experiment=None if args.run else args.experiment,
        run_ids=args.run or None,
        tracking_uri=args.tracking_uri,
        progress=not args.quiet and not args.json,
        key_map=parse(args.key or [], args.keymap) or None,
    )
    table = diagnose(rs)
    if table.empty:
        raise GantrackError(f"no runs in experiment {args.experiment!r}")
    if args.json:
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        print(json.dumps(records, indent=2))
        return 0
    for _, r in table.iterrows():
        onset = "" if pd.isna(r["onset_step"]) else f" since step {r['onset_step']}"
        sub = f" ({r['subtype']})" if r["subtype"] else ""
        print(f"{r['run_id'][:8]}  {r['run_name'] or '-'}: {r['verdict']}{sub}{onset}")
        for line in filter(None, r["evidence"].split("; ")):
            print(f"    evidence: {line}")
        for line in filter(None, r["missing"].split("; ")):
            print(f"    missing: {line}")
    return 0


def _import(args) -> int:
    from .importers import import_file
    from .keymaps import parse

    if args.name and len(args.paths) > 1:
        raise GantrackError("--name names one run: give one PATH with it")
    if args.watch and len(args.paths) > 1:
        raise GantrackError("--watch follows one file: give one PATH with it")
    key_map = parse(args.key or [], args.keymap)
    failed = []
    for path in args.paths:
        try:
            import_file(
                args.format,
                path,
                args.experiment,
                name=args.name,
                tracking_uri=args.tracking_uri,
                key_map=key_map,
                loss=args.loss,
                step_column=args.step_column,
                follow=args.watch,
                idle=args.idle,
            )
        except GantrackError as e:
            if len(args.paths) == 1:
                raise
            print(f"gantrack: skipped: {e}", file=sys.stderr)  # the other files go on
            failed.append(path)
    if failed:
        raise GantrackError(f"{len(failed)} of {len(args.paths)} files not imported: {', '.join(failed)}")
    return 0


def _keymaps(args) -> int:
    from .keymaps import PRESETS

    for name, (text, mapping) in PRESETS.items():
        print(f"{name}: {text}")
        print("   " + " ".join(f"--key {k}={v}" for k, v in mapping.items()))
    return 0


def _print_report(rep, tracking_uri, experiment) -> None:
    print(f"report: {rep.html.resolve()}")
    print(f"markdown: {rep.markdown.resolve()}")
    from .analysis.report import ui_hint

    print(ui_hint(tracking_uri or "", experiment))


def _study(args) -> int:
    from . import studies

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    fn = {"chapter10": studies.chapter10, "loss-families": studies.loss_families}[args.name]
    experiment = args.experiment or ("chapter10" if args.name == "chapter10" else "loss-families")
    kw = dict(
        experiment=experiment,
        # chapter10 without --quick/--full is the main job (studies.main_job_plan: the sizes for this machine)
        quick=True if args.quick else False if args.full else (None if args.name == "chapter10" else True),
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
        workers=args.workers,
        progress=not args.quiet,
    )
    if seeds:
        kw["seeds"] = seeds
    if args.set:
        from .config import parse_set

        kw["overrides"] = parse_set(args.set)
    if args.arch:
        if args.name != "chapter10":
            raise GantrackError("--arch applies to the chapter10 study")
        kw["archs"] = [a.strip() for a in args.arch.split(",") if a.strip()]
    rep = fn(**kw)
    _print_report(rep, args.tracking_uri, experiment)
    return 0


def _sweep(args) -> int:
    from . import config as config_mod
    from .sweep import load_sweep_file, parse_grid, sweep

    file_values, grid = load_sweep_file(args.config) if args.config else ({}, {})
    grid.update(parse_grid(args.grid or []))
    overrides = config_mod.parse_set(args.set or [])
    if args.experiment:
        overrides["experiment"] = args.experiment
    base = config_mod.resolve(args.preset, None, overrides, file_values=file_values)
    shared = None
    if args.storage:
        shared = dict(workers=args.workers, heartbeat=args.heartbeat, grace=args.grace or 4 * args.heartbeat)
    out = sweep(
        base,
        grid,
        tracking_uri=args.tracking_uri,
        workers=args.workers,
        name=args.name,
        progress=not args.quiet,
        storage=args.storage,
        shared=shared,
    )
    print(f"sweep {out['parent']}: {len(out['runs'])} finished, {out['failed']} failed")
    return 1 if out["failed"] else 0


def _ui(args) -> int:
    from .ui import serve

    return serve(args.tracking_uri, args.port, args.experiment)


def _sync(args) -> int:
    from .spool import sync

    n, artifacts, status = sync(args.spool, args.tracking_uri)
    what = f"{n} metrics" + (f", {artifacts} artifacts; the run is {status}" if status else "")
    print(f"uploaded {what} from {args.spool}")
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
    t.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps (enables --resume)")
    t.add_argument("--resume", metavar="RUN_ID", help="continue a crashed run from its last checkpoint")
    t.add_argument(
        "--stop-on",
        metavar="MODES",
        help="end the run early and cleanly in these failure modes, e.g. convergence-failure,diverged",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    g = sub.add_parser("diagnose", help="which failure mode each run is in, since which step, and why")
    g.add_argument("--experiment", default="gantrack")
    g.add_argument("--run", action="append", metavar="RUN_ID", help="only these runs (repeatable)")
    g.add_argument("--tracking-uri")
    g.add_argument("--json", action="store_true", help="the table as JSON records")
    g.add_argument("--key", action="append", metavar="CONTRACT=YOURS", help="key map for runs of other loops")
    g.add_argument("--keymap", help="a preset key map (see `gantrack keymaps`)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=_diagnose)

    p = sub.add_parser("presets", help="list the presets")
    p.set_defaults(func=_presets)

    r = sub.add_parser("report", help="comparative HTML + Markdown report of an experiment's runs")
    r.add_argument("--experiment", required=True)
    r.add_argument("--out", help="output folder (default ./reports/<experiment>)")
    r.add_argument("--tracking-uri")
    r.add_argument("--no-mlflow", action="store_true", help="do not log results back to MLflow")
    r.add_argument(
        "--key",
        action="append",
        metavar="CONTRACT=YOURS",
        help="read runs another loop logged: --key loss/d_fake=errD_fake --key loss/g=errG (repeatable)",
    )
    r.add_argument("--keymap", help="a preset key map (see `gantrack keymaps`); --key entries override it")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_report)

    from .importers import FORMATS

    m = sub.add_parser("import", help="runs from other tools' logs into MLflow (book-log, tensorboard, ...)")
    m.add_argument("format", choices=list(FORMATS), help="; ".join(f"{k}: {v[1]}" for k, v in FORMATS.items()))
    m.add_argument("paths", nargs="+", metavar="PATH", help="files (or TensorBoard folders): one run each")
    m.add_argument("--experiment", default="imported")
    m.add_argument("--name", help="the run's name (default: the file's name)")
    m.add_argument("--tracking-uri")
    m.add_argument("--loss", default="nsgan", help="the loss family the run trained with (default nsgan)")
    m.add_argument("--key", action="append", metavar="CONTRACT=YOURS", help="map a key: --key loss/g=errG")
    m.add_argument("--keymap", help="a preset key map (see `gantrack keymaps`): mimicry, pix2pix, ...")
    m.add_argument("--step-column", help="csv: the column that holds the step")
    m.add_argument("--watch", action="store_true", help="follow a growing log into the same run (Ctrl-C ends it)")
    m.add_argument("--idle", type=float, help="with --watch: stop after this many seconds without growth")
    m.set_defaults(func=_import)

    k = sub.add_parser("keymaps", help="list the preset key maps for runs logged by other loops")
    k.set_defaults(func=_keymaps)

    s = sub.add_parser("study", help="train (or reuse) a study's runs and write its report")
    s.add_argument("name", choices=["chapter10", "loss-families"])
    s.add_argument(
        "--seeds",
        help="comma-separated seeds (chapter10: 1 on a CPU, 1,2,3 on a GPU, 1,2 with --quick/--full; loss-families: 1)",
    )
    size = s.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="narrow models (G 16 / D 32 channels), about a minute a run on one core"
    )
    size.add_argument("--full", action="store_true", help="the book's model sizes for every run (docs/chapter10.md)")
    s.add_argument(
        "--arch", help="chapter10: comma-separated model variants, bn (2019 book) and/or nobn (2021 tutorial)"
    )
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field of every run")
    s.add_argument("--experiment")
    s.add_argument("--out")
    s.add_argument("--workers", type=int, default=2, help="training processes (default 2)")
    s.add_argument("--tracking-uri")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_study)

    w = sub.add_parser("sweep", help="train a grid of configs with worker processes (restartable)")
    w.add_argument("--preset", default=None)
    w.add_argument("--config", help="TOML: config fields plus a [grid] table of lists")
    w.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="a grid axis (repeatable)")
    w.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base config field")
    w.add_argument("--experiment")
    w.add_argument("--name", help="parent run name")
    w.add_argument("--workers", type=int, default=2, help="training processes on this machine")
    w.add_argument(
        "--storage",
        help="an Optuna database (postgresql://user:pw@host/db) shared by every machine that runs this same sweep",
    )
    w.add_argument("--heartbeat", type=float, default=30.0, help="with --storage: seconds between a trial's heartbeats")
    w.add_argument("--grace", type=float, help="with --storage: seconds of silence before a trial is retried elsewhere")
    w.add_argument("--tracking-uri")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=_sweep)

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over the same store")
    u.add_argument("--tracking-uri")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--experiment", help="print the address of this experiment's runs table")
    u.set_defaults(func=_ui)

    y = sub.add_parser("sync", help="complete a run whose store failed: upload its spool folder")
    y.add_argument("spool")
    y.add_argument("--tracking-uri")
    y.set_defaults(func=_sync)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from .allocator import keep_freed_memory
    from .cores import passive_wait_policy

    passive_wait_policy()  # this process is ours and has not imported torch yet (gantrack.cores)

    keep_freed_memory()  # this process is ours: large tensors reuse heap memory (gantrack.allocator)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with terminate_as_interrupt():  # SIGTERM/SIGHUP take Ctrl-C's path: runs end KILLED, children stop
            return args.func(args)
    except (TrainingDiverged, RunSpooled) as e:  # the run happened; what it produced is kept (exit 1)
        print(f"gantrack: {e}", file=sys.stderr)
        return 1
    except GantrackError as e:
        print(f"gantrack: error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        print(f"gantrack: terminated ({e})", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("gantrack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
