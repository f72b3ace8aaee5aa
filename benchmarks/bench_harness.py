"""Benchmark: the gantrack harness against a bare PyTorch loop of the same model, in one run.

Three variants train the chapter-10 DCGAN at the quick width for the same number of steps:
  bare    plain PyTorch: the same three updates per step, nothing logged
  harness gantrack.train with probes off (every component, grad norms, MLflow batches, sample grids)
  probes  gantrack.train with the 2x2 probes on
with the config's defaults (flush_every 100, sample_every 100). The harness time is the run's own
``gantrack.loop_seconds``: every step's work and logging up to and including the last metrics
write; the one-off costs of ``train()`` (run creation, data, final plots, weights) are printed apart.

Shared 2-core machines drift by several per cent within a minute, so each repeat runs the three
variants back to back (order rotated between repeats) and the overhead is taken per repeat against
that repeat's bare loop; the median over repeats is the figure, best-of-each is printed beside it.
Targets: <= 3 % without probes, <= 15 % with probes.

    python benchmarks/bench_harness.py [--steps 200] [--width 0.25] [--repeats 5]
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
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import numpy as np

    folder = tempfile.mkdtemp(prefix="gantrack-bench-harness-")
    base = Config(width=args.width, steps=args.steps, experiment="bench")
    harness(base.replace(steps=5), folder)  # create the store and warm up imports outside the timings
    names = ["bare", "harness", "probes"]
    loop = {k: [] for k in names}
    whole = {"harness": [], "probes": []}
    for r in range(args.repeats):
        for name in names[r % 3:] + names[:r % 3]:  # rotate, so no variant always runs first
            if name == "bare":
                loop["bare"].append(bare_loop(base))
            else:
                t_loop, t_all = harness(base.replace(probes=name == "probes"), folder)
                loop[name].append(t_loop)
                whole[name].append(t_all)
        print(f"repeat {r + 1}: " + "  ".join(f"{k} {loop[k][-1]:.2f} s" for k in names), flush=True)
    bare = np.array(loop["bare"])
    print(f"{args.steps} steps, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats")
    print("training loop (every step's work and logging; the overhead targets apply here):")
    for k in names:
        t = np.array(loop[k])
        paired = 100 * (t / bare - 1)
        print(f"  {k:8s} median {np.median(t) / args.steps * 1000:6.1f} ms/step   overhead: median of paired "
              f"{np.median(paired):+5.1f} %  (per repeat {', '.join(f'{x:+.1f}' for x in paired)}),  "
              f"best vs best {100 * (t.min() / bare.min() - 1):+5.1f} %")
    print("whole train() call (adds run creation, data loading, final plots, weights):")
    for k, v in whole.items():
        print(f"  {k:8s} one-off {np.median(np.array(v) - np.array(loop[k])):.2f} s (median)")


if __name__ == "__main__":
    main()
