"""Benchmark: the gantrack harness against a bare PyTorch loop of the same model, in one run.

Three variants train the chapter-10 DCGAN at the quick width for the same number of steps:
  bare    plain PyTorch: the same three updates per step, nothing logged
  harness gantrack.train with probes off (every component, grad norms, MLflow batches, artifacts)
  probes  gantrack.train with the 2x2 probes on
The variants are interleaved over repeats and the fastest of each is kept (noisy machines).
Overhead = variant time / bare time - 1 (targets: <= 3 % without probes, <= 15 % with probes).

    python benchmarks/bench_harness.py [--steps 200] [--width 0.25] [--repeats 2]
"""

import argparse
import os
import tempfile
import time

import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from gantrack import Config, train  # noqa: E402
from gantrack.harness import build_gan, d_as_in_g_step  # noqa: E402


def bare_loop(cfg: Config) -> float:
    """The same training as the harness (book order, Keras semantics), with no logging at all."""
    gan = build_gan(cfg.replace(probes=False))
    D, G, fam, half = gan.D, gan.G, gan.fam, cfg.half_batch
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        real = gan.sample_real(half)
        z = gan.latent(half)
        with torch.no_grad():
            G.eval()
            fake = G(z)
            G.train()
        gan.opt_d.zero_grad()
        fam.d_real(fam.output(D(real))).mean().backward()
        gan.opt_d.step()
        gan.opt_d.zero_grad()
        fam.d_fake(fam.output(D(fake))).mean().backward()
        gan.opt_d.step()
        z_gen = gan.latent(cfg.batch_size)
        D.requires_grad_(False)
        with d_as_in_g_step(D, cfg):
            g = fam.g(fam.output(D(G(z_gen)))).mean()
        gan.opt_g.zero_grad()
        g.backward()
        gan.opt_g.step()
        D.requires_grad_(True)
    return time.perf_counter() - t0


def harness(cfg: Config, folder: str) -> tuple[float, float]:
    """(seconds of the training loop as the run logged it, seconds of the whole train() call)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    t0 = time.perf_counter()
    run_id = train(cfg, tracking_uri=uri, quiet=True)
    total = time.perf_counter() - t0
    return float(MlflowClient(uri).get_run(run_id).data.tags["gantrack.loop_seconds"]), total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="gantrack-bench-harness-")
    base = Config(width=args.width, steps=args.steps, experiment="bench", sample_every=100)
    harness(base.replace(steps=5), folder)  # create the store and warm up imports outside the timings
    loop = {"bare": [], "harness": [], "probes": []}
    whole = {"harness": [], "probes": []}
    for _ in range(args.repeats):
        loop["bare"].append(bare_loop(base))
        for name, probes in (("harness", False), ("probes", True)):
            t_loop, t_all = harness(base.replace(probes=probes), folder)
            loop[name].append(t_loop)
            whole[name].append(t_all)
    best = {k: min(v) for k, v in loop.items()}
    print(f"{args.steps} steps, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats} (interleaved)")
    print("training loop (every step's work and logging; the overhead targets apply here):")
    for k, t in best.items():
        print(f"  {k:8s} {t:7.2f} s   {1000 * t / args.steps:6.1f} ms/step   "
              f"ratio to bare {t / best['bare']:.3f}   overhead {100 * (t / best['bare'] - 1):+5.1f} %")
    print("whole train() call (adds run creation, data loading, final plots, weights):")
    for k, v in whole.items():
        t = min(v)
        print(f"  {k:8s} {t:7.2f} s   ratio to bare loop {t / best['bare']:.3f}   one-off {t - best[k]:.2f} s")

if __name__ == "__main__":
    main()
