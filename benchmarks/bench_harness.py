"""Benchmark: the gantrack harness against a bare PyTorch loop of the same model, in one run.

``gantrack.train`` trains the chapter-10 DCGAN at the quick width with the config's defaults
(flush_every 100, sample_every 100), probes off, probes on, and probes with the per-sample capture
(every probe cell's per-sample scores kept, written as one artifact at the end), and all that with
the diversity snapshots (1,000 of G's samples against the data once per epoch) and the online
failure-mode detector (the first three with ``diversity_every=-1``); bare steps (plain PyTorch: the same
three updates, nothing computed or logged beyond them) run *inside* that training loop, between
its steps, in rounds of a bare block, 16 harness steps, a bare block. Why so:

- Shared 2-core machines drift by 5-10 % within a minute, so timing a bare loop and a harness run
  one after the other measures the machine as much as the harness. Within a ~5 s round the drift is
  nearly linear and the bare/harness/bare order cancels it.
- Two separately allocated copies of the same model run a few per cent apart for as long as they
  live (memory placement), so the bare steps train the harness's own models.
- Everything the loop does between two bare blocks is charged to the harness: gan_step's extra
  quantities, adding metrics, sample grids, and the background metrics writes, which must finish
  before a bare block starts (so their CPU time counts in full, as if they never overlapped
  training); the last round ends after the final metrics write, as ``gantrack.loop_seconds`` does.

The overhead is the ratio of per-step times, pooled over all rounds of all runs (so lumpy costs,
a write or a sample grid every 100 steps, count in full), with a 95 % bootstrap interval over
rounds; wall time and process CPU time (all threads) both. Targets: <= 3 % without probes,
<= 15 % with probes and the per-sample capture (upper bound of the interval). A breakdown
follows: gan_step against the bare step on one model in ABBA blocks, and the time spent in
logging code (loop thread wall, writer thread CPU).

The diversity cost is given twice: as the difference of the all+div and probes+ps overheads (everything,
but the difference of two noisy estimates), and as the time spent inside the run's ``RunMonitor``, timed
where it runs in one more run, over the bare step's time.

    python benchmarks/bench_harness.py [--steps 450] [--runs 2] [--width 0.25] [--set KEY=VALUE ...]
"""

import argparse
import os
import tempfile
import time
from contextlib import contextmanager

import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from gantrack import Config, train  # noqa: E402
from gantrack.config import apply_overrides, parse_set  # noqa: E402
from gantrack.harness import build_gan, d_as_in_g_step, gan_step  # noqa: E402


def bare_step(gan) -> None:
    """One step of the same training as the harness (book order, Keras semantics, the run's precision:
    ``gan.d`` and ``gan.g`` are the models under the config's autocast), logging nothing."""
    D, G, fam, half = gan.D, gan.G, gan.fam, gan.cfg.half_batch
    real = gan.sample_real(half)
    z = gan.latent(half)
    with torch.no_grad():
        G.eval()
        fake = gan.g(z)
        G.train()
    gan.opt_d.zero_grad()
    fam.d_real(fam.output(gan.d(D, real))).mean().backward()
    gan.opt_d.step()
    gan.opt_d.zero_grad()
    fam.d_fake(fam.output(gan.d(D, fake))).mean().backward()
    gan.opt_d.step()
    z_gen = gan.latent(gan.cfg.batch_size)
    D.requires_grad_(False)
    with d_as_in_g_step(D, gan.cfg):
        g = fam.g(fam.output(gan.d(D, gan.g(z_gen)))).mean()
    gan.opt_g.zero_grad()
    g.backward()
    gan.opt_g.step()
    D.requires_grad_(True)


@contextmanager
def patched(*replacements):
    """Set ``(owner, name, value)`` attributes for the duration; the originals come back afterwards."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    for owner, name, value in replacements:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in originals:
            setattr(owner, name, value)


def harness_step(gan) -> None:
    """gan_step, whose values come back as floats with one device sync (what the harness logs)."""
    gan_step(gan)


def step_extras(cfg: Config, rounds: int, block: int = 8) -> float:
    """Median ratio of harness_step to bare_step time over ``rounds`` rounds of four blocks of
    ``block`` steps in the order bare, harness, harness, bare (ABBA: a linear drift of the machine
    within a round cancels). Measures what gan_step computes beyond the updates: grad and weight
    norms, accuracies, probabilities, the one sync."""
    gan = build_gan(cfg.replace(probes=False))  # one model for both: see the module docstring
    ratios = []
    for _ in range(rounds):
        spent = {bare_step: 0.0, harness_step: 0.0}
        for step in (bare_step, harness_step, harness_step, bare_step):
            t0 = time.perf_counter()
            for _ in range(block):
                step(gan)
            spent[step] += time.perf_counter() - t0
        ratios.append(spent[harness_step] / spent[bare_step])
    return float(sorted(ratios)[len(ratios) // 2])


def interleaved(cfg: Config, folder: str, block: int = 8) -> list[dict]:
    """The harness's own training loop (``train()``, probes as ``cfg`` says) with bare steps run in
    between, inside the same process, in rounds of ``2 * block`` harness steps: a bare block, the
    harness steps, a bare block (ABBA over consecutive rounds), so the machine's drift, which is slow
    next to a round (~5 s), cancels within each round. The bare steps train the harness's own models
    (the run's curves are not the point here): two separately allocated copies of the same model run
    a few per cent apart for as long as they live (memory placement), which no interleaving cancels.
    Returns one dict per round: harness and bare steps, wall and CPU seconds; the first also has
    ``one_off``, the seconds of ``train()`` outside its loop.

    A harness segment runs from the end of one bare block to the start of the next, so it holds all
    of the loop's per-step work and logging: sample grids, starting background writes, and, before
    each bare block, waiting for a write still in flight (bare steps never share the machine with
    the writer thread, so its CPU is charged to the harness in full, as if it did not overlap
    training at all). The last segment ends where the loop does: after the final metrics write."""
    from gantrack import harness as harness_module
    from gantrack import tracking

    buffers: list = []
    rounds: list[dict] = []
    state = {"n": 0, "mark": None, "gan": None}  # harness steps started; (wall, cpu) where the harness segment began
    step_fn, background_fn, close_fn = (
        harness_module.gan_step,
        tracking.MetricBuffer.flush_in_background,
        tracking.MetricBuffer.close,
    )

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def end_segment() -> None:
        (w0, c0), (w1, c1) = state["mark"], clock()
        rounds[-1]["h_wall"] += w1 - w0
        rounds[-1]["h_cpu"] += c1 - c0

    def bare_block(n: int) -> None:
        t0 = clock()
        for _ in range(n):
            bare_step(state["gan"])
        t1 = clock()
        rounds[-1]["b_steps"] += n
        rounds[-1]["b_wall"] += t1[0] - t0[0]
        rounds[-1]["b_cpu"] += t1[1] - t0[1]
        state["mark"] = t1

    def stepping(gan):
        n, state["gan"] = state["n"], gan
        if n % (2 * block) == 0:
            if rounds:  # close the previous round: wait for the writer (harness time), then its bare half
                for buffer in buffers:
                    buffer._wait()
                end_segment()
                bare_block(rounds[-1]["h_steps"] // 2)
            h = min(2 * block, cfg.steps - n)
            rounds.append(dict(h_steps=h, h_wall=0.0, h_cpu=0.0, b_steps=0, b_wall=0.0, b_cpu=0.0))
            bare_block(h - h // 2)
        state["n"] += 1
        return step_fn(gan)

    def background(self):
        if self not in buffers:
            buffers.append(self)
        return background_fn(self)

    def close(self, *args, **kwargs):
        try:
            return close_fn(self, *args, **kwargs)
        finally:
            if state["mark"] is not None:  # one buffer per run: this is the end of the loop
                end_segment()
                state["mark"] = None

    with patched(
        (harness_module, "gan_step", stepping),
        (tracking.MetricBuffer, "flush_in_background", background),
        (tracking.MetricBuffer, "close", close),
    ):
        loop_s, total_s = harness(cfg, folder)
    rounds[0]["one_off"] = total_s - loop_s  # run creation, data, final plots and weights
    bare_block(rounds[-1]["h_steps"] // 2)  # the last round's closing bare half
    return rounds


def round_overheads(rounds: list[dict], clock: str = "wall", resamples: int = 2000, seed: int = 0):
    """Overhead of harness over bare steps, per step, pooled over rounds (ratio of sums, so lumpy
    costs such as a sample grid every 100 steps count in full), with a 95 % bootstrap interval
    over rounds (percentile method, ``resamples`` draws)."""
    import numpy as np

    h = np.array([r[f"h_{clock}"] for r in rounds])
    b = np.array([r[f"b_{clock}"] for r in rounds])
    hn = np.array([r["h_steps"] for r in rounds])
    bn = np.array([r["b_steps"] for r in rounds])

    def overhead(i):
        return 100 * ((h[i].sum() / hn[i].sum()) / (b[i].sum() / bn[i].sum()) - 1)

    draws = np.random.default_rng(seed).integers(0, len(rounds), size=(resamples, len(rounds)))
    boot = np.array([overhead(i) for i in draws])
    return overhead(np.arange(len(rounds))), np.percentile(boot, 2.5), np.percentile(boot, 97.5)


def logging_work(cfg: Config, folder: str) -> dict[str, float]:
    """Seconds spent on logging in one harness run, by where: wall time on the loop thread (adding
    metrics, starting writes, sample grids, the final write) and CPU time of the writer thread. Their
    sum over the bare loop's time bounds the logging overhead without depending on machine noise."""
    import threading

    from gantrack import samples, tracking

    spent = {"loop thread": 0.0, "writer thread (CPU)": 0.0}

    def timed(owner, name):
        fn = getattr(owner, name)

        def wrapper(*args, **kwargs):
            on_writer = threading.current_thread().name.startswith("gantrack-metrics")
            clock = time.thread_time if on_writer else time.perf_counter
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                if on_writer or name != "_send":  # _send on the loop thread is inside flush: counted there
                    spent["writer thread (CPU)" if on_writer else "loop thread"] += clock() - t0

        return owner, name, wrapper

    with patched(
        *(
            timed(owner, name)
            for owner, name in (
                (tracking.MetricBuffer, "add"),
                (tracking.MetricBuffer, "flush"),
                (tracking.MetricBuffer, "flush_in_background"),
                (tracking.MetricBuffer, "_send"),
                (samples.SampleGrid, "save"),
                (tracking, "best_effort"),
            )
        )
    ):
        harness(cfg, folder)
    return spent


def monitor_work(cfg: Config, folder: str) -> float:
    """Wall seconds spent in the run's ``RunMonitor`` (diversity snapshots: G's samples, their metrics,
    ``div/batch_bins``; the online detector, its final decision) in one harness run with diversity on.
    Timed on the loop thread, where all of it runs, so it does not depend on machine drift between runs
    the way a difference of two runs' overheads does; what it leaves out is any slowdown of the steps
    after a snapshot (caches refilled), which that difference holds."""
    from gantrack import stepstats

    spent = [0.0]

    def timed(name):
        fn = getattr(stepstats.RunMonitor, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        return stepstats.RunMonitor, name, wrapper

    with patched(timed("after_step"), timed("final")):
        harness(cfg, folder)
    return spent[0]


def harness(cfg: Config, folder: str) -> tuple[float, float]:
    """(seconds of the training loop as the run logged them, seconds of the whole train() call)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder}/mlflow.db"
    t0 = time.perf_counter()
    run_id = train(cfg, tracking_uri=uri, quiet=True)
    total = time.perf_counter() - t0
    tags = MlflowClient(uri).get_run(run_id).data.tags
    return float(tags["gantrack.loop_seconds"]), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=450, help="harness steps per run (the chapter's 450)")
    ap.add_argument("--runs", type=int, default=2, help="runs per variant (rounds are pooled)")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--extra-rounds", type=int, default=10)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. the chapter-10 study's narrow models: "
        "--width 0.125 --set d_width=0.5 --set sample_every=150",
    )
    args = ap.parse_args()

    folder = tempfile.mkdtemp(prefix="gantrack-bench-harness-")
    base = apply_overrides(Config(width=args.width, steps=args.steps, experiment="bench"), parse_set(args.set))
    harness(base.replace(steps=5), folder)  # create the store and warm up imports outside the timings
    variants = {
        "harness": base.replace(probes=False, diversity_every=-1),
        "probes": base.replace(probes=True, per_sample_probes=False, diversity_every=-1),
        "probes+ps": base.replace(probes=True, per_sample_probes=True, diversity_every=-1),
        # + diversity snapshots of 1,000 samples once per epoch (45 steps) and the online detector
        "all+div": base.replace(probes=True, per_sample_probes=True, diversity_every=0),
    }
    rounds: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.runs):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            got = interleaved(variants[name], folder)
            rounds[name] += got
            est, lo, hi = round_overheads(got)
            per_step = sum(x["b_wall"] for x in got) / sum(x["b_steps"] for x in got)
            print(
                f"run {r + 1} {name:8s} {len(got)} rounds, bare {1000 * per_step:.1f} ms/step: "
                f"overhead {est:+.1f} % [{lo:+.1f}, {hi:+.1f}]",
                flush=True,
            )
    print(
        f"\n{args.steps} steps x {args.runs} runs per variant, width {args.width}"
        f"{''.join(', ' + x for x in args.set)}, "
        f"torch threads {torch.get_num_threads()}; overhead of a harness step over a bare step, "
        "all rounds pooled (95 % bootstrap interval over rounds):"
    )
    for name, target in (("harness", 3.0), ("probes", 15.0), ("probes+ps", 15.0), ("all+div", 18.0)):
        line = []
        for clock in ("wall", "cpu"):
            est, lo, hi = round_overheads(rounds[name], clock)
            line.append(f"{clock} {est:+5.1f} % [{lo:+.1f}, {hi:+.1f}]")
        verdict = "met" if round_overheads(rounds[name])[2] <= target else "NOT shown"
        print(f"  {name:9s} {'   '.join(line)}   target <= {target:.0f} %: {verdict}")
    est_d, lo_d, hi_d = round_overheads(rounds["all+div"])
    est_p = round_overheads(rounds["probes+ps"])[0]
    print(
        f"  diversity snapshots + detector: {est_d - est_p:+.1f} % of a bare step's time over probes+ps "
        f"(all+div {est_d:+.1f} % [{lo_d:+.1f}, {hi_d:+.1f}] minus probes+ps {est_p:+.1f} %; goal <= 3 %)"
    )
    for name in variants:
        one_off = sorted(r["one_off"] for r in rounds[name] if "one_off" in r)
        print(
            f"  {name:8s} once per run, outside the loop (run creation, data, final plots, weights): "
            f"{one_off[len(one_off) // 2]:.2f} s (median)"
        )
    print("breakdown without probes:")
    extras = step_extras(base, rounds=args.extra_rounds)
    print(
        f"  gan_step vs the bare step, {args.extra_rounds} ABBA rounds of 8-step blocks on one model: median "
        f"ratio {extras:.3f} ({100 * (extras - 1):+.1f} %: norms, accuracies, probabilities, one sync)"
    )
    bare_s = args.steps * sum(x["b_wall"] for x in rounds["harness"]) / sum(x["b_steps"] for x in rounds["harness"])
    for where, s in logging_work(variants["harness"], folder).items():
        print(f"  logging on the {where:20s} {1000 * s / args.steps:6.2f} ms/step  = {100 * s / bare_s:4.1f} % of bare")
    s = monitor_work(variants["all+div"], folder)
    print("breakdown of all+div:")
    print(
        f"  diversity snapshots + detector, timed where they run: {1000 * s / args.steps:6.2f} ms/step = "
        f"{100 * s / bare_s:4.1f} % of bare (goal <= 3 %)"
    )


if __name__ == "__main__":
    main()
