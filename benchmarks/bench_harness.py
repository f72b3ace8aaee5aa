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
Both wall time and process CPU time (``gantrack.loop_cpu_seconds``) are compared: CPU time counts
every thread of ours (the metrics writer included) but not time stolen by the machine's neighbours.
Targets: <= 3 % without probes, <= 15 % with probes. A breakdown follows that drift hardly moves:
gan_step against the bare step in ABBA-ordered blocks of 8 steps, and the time an instrumented run
spends in logging code (loop thread wall time + writer thread CPU time).

    python benchmarks/bench_harness.py [--steps 200] [--width 0.25] [--repeats 5]
"""

import argparse
import os
import tempfile
import time

import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from gantrack import Config, train  # noqa: E402
from gantrack.harness import build_gan, d_as_in_g_step, gan_step  # noqa: E402


def bare_step(gan) -> None:
    """One step of the same training as the harness (book order, Keras semantics), logging nothing."""
    D, G, fam, half = gan.D, gan.G, gan.fam, gan.cfg.half_batch
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
    z_gen = gan.latent(gan.cfg.batch_size)
    D.requires_grad_(False)
    with d_as_in_g_step(D, gan.cfg):
        g = fam.g(fam.output(D(G(z_gen)))).mean()
    gan.opt_g.zero_grad()
    g.backward()
    gan.opt_g.step()
    D.requires_grad_(True)


def bare_loop(cfg: Config) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``cfg.steps`` bare steps."""
    gan = build_gan(cfg.replace(probes=False))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(cfg.steps):
        bare_step(gan)
    return time.perf_counter() - t0, time.process_time() - c0


def harness_step(gan) -> None:
    """gan_step plus the loop's one device sync of all values (what the harness does before logging)."""
    metrics = gan_step(gan)
    torch.stack([v.float() for v in metrics.values()]).tolist()


def step_extras(cfg: Config, rounds: int, block: int = 8) -> float:
    """Median ratio of harness_step to bare_step time over ``rounds`` rounds of four blocks of
    ``block`` steps in the order bare, harness, harness, bare (ABBA: a linear drift of the machine
    within a round cancels). Measures what gan_step computes beyond the updates: grad and weight
    norms, accuracies, probabilities, the one sync."""
    a, b = build_gan(cfg.replace(probes=False)), build_gan(cfg.replace(probes=False))
    ratios = []
    for _ in range(rounds):
        spent = {bare_step: 0.0, harness_step: 0.0}
        for step, gan in ((bare_step, a), (harness_step, b), (harness_step, b), (bare_step, a)):
            t0 = time.perf_counter()
            for _ in range(block):
                step(gan)
            spent[step] += time.perf_counter() - t0
        ratios.append(spent[harness_step] / spent[bare_step])
    return float(sorted(ratios)[len(ratios) // 2])


def logging_work(cfg: Config, folder: str) -> dict[str, float]:
    """Seconds spent on logging in one harness run, by where: wall time on the loop thread (adding
    metrics, starting writes, sample grids, the final write) and CPU time of the writer thread. Their
    sum over the bare loop's time bounds the logging overhead without depending on machine noise."""
    import threading

    from gantrack import harness as harness_module
    from gantrack import tracking

    spent = {"loop thread": 0.0, "writer thread (CPU)": 0.0}
    originals = {}

    def timed(owner, name):
        fn = originals[(owner, name)] = getattr(owner, name)

        def wrapper(*args, **kwargs):
            on_writer = threading.current_thread().name.startswith("gantrack-metrics")
            clock = time.thread_time if on_writer else time.perf_counter
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                if on_writer or name != "_send":  # _send on the loop thread is inside flush: counted there
                    spent["writer thread (CPU)" if on_writer else "loop thread"] += clock() - t0
        setattr(owner, name, wrapper)

    for owner, name in ((tracking.MetricBuffer, "add"), (tracking.MetricBuffer, "flush"),
                        (tracking.MetricBuffer, "flush_in_background"), (tracking.MetricBuffer, "_send"),
                        (harness_module._Samples, "save"), (tracking, "best_effort")):
        timed(owner, name)
    try:
        harness(cfg, folder)
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    return spent


def harness(cfg: Config, folder: str) -> tuple[float, float, float]:
    """(wall and CPU seconds of the training loop as the run logged them, seconds of the whole train() call)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    t0 = time.perf_counter()
    run_id = train(cfg, tracking_uri=uri, quiet=True)
    total = time.perf_counter() - t0
    tags = MlflowClient(uri).get_run(run_id).data.tags
    return float(tags["gantrack.loop_seconds"]), float(tags["gantrack.loop_cpu_seconds"]), total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--extra-rounds", type=int, default=10)
    args = ap.parse_args()
    import numpy as np

    folder = tempfile.mkdtemp(prefix="gantrack-bench-harness-")
    base = Config(width=args.width, steps=args.steps, experiment="bench")
    harness(base.replace(steps=5), folder)  # create the store and warm up imports outside the timings
    names = ["bare", "harness", "probes"]
    loop = {k: [] for k in names}  # wall seconds
    cpu = {k: [] for k in names}  # process CPU seconds
    whole = {"harness": [], "probes": []}
    for r in range(args.repeats):
        for name in names[r % 3:] + names[:r % 3]:  # rotate, so no variant always runs first
            if name == "bare":
                t_loop, t_cpu = bare_loop(base)
            else:
                t_loop, t_cpu, t_all = harness(base.replace(probes=name == "probes"), folder)
                whole[name].append(t_all - t_loop)
            loop[name].append(t_loop)
            cpu[name].append(t_cpu)
        print(f"repeat {r + 1}: " + "  ".join(f"{k} {loop[k][-1]:.2f} s ({cpu[k][-1]:.2f} s CPU)" for k in names),
              flush=True)
    bare = np.array(loop["bare"])
    print(f"{args.steps} steps, width {args.width}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats")
    for label, times in (("wall time", loop), ("process CPU time (all threads; not the neighbours' steal)", cpu)):
        print(f"training loop, {label} — overhead per repeat against that repeat's bare loop:")
        base_t = np.array(times["bare"])
        for k in names[1:]:
            t = np.array(times[k])
            paired = 100 * (t / base_t - 1)
            print(f"  {k:8s} median {np.median(t) / args.steps * 1000:6.1f} ms/step (bare "
                  f"{np.median(base_t) / args.steps * 1000:.1f})   overhead: median {np.median(paired):+5.1f} %  "
                  f"(per repeat {', '.join(f'{x:+.1f}' for x in paired)}),  best vs best "
                  f"{100 * (t.min() / base_t.min() - 1):+5.1f} %")
    print("breakdown without probes (less exposed to the machine's drift):")
    extras = step_extras(base, rounds=args.extra_rounds)
    print(f"  gan_step vs the bare step, {args.extra_rounds} ABBA rounds of 8-step blocks: median ratio "
          f"{extras:.3f} ({100 * (extras - 1):+.1f} %: norms, accuracies, probabilities, one sync)")
    bare_s = float(np.median(bare))
    for where, s in logging_work(base, folder).items():
        print(f"  logging on the {where:20s} {1000 * s / args.steps:6.2f} ms/step  = {100 * s / bare_s:4.1f} % of bare")
    print("whole train() call (adds run creation, data loading, final plots, weights):")
    for k, v in whole.items():
        print(f"  {k:8s} one-off {np.median(v):.2f} s (median)")


if __name__ == "__main__":
    main()
