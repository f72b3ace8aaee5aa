"""Benchmark: one training step at the book's sizes, naive float32 against gantrack's CPU paths, in one run.

Each variant lives in its own process (the allocator setting is per process), builds the same GAN (same
seed, probes on, per-sample cells captured) and warms up; then the parent asks the variants in turn for a
block of ``gan_step`` calls, round after round, so the machine's drift hits every variant alike and only
one variant computes at a time. Reported: seconds per step (median over rounds) and each variant's speed-up
over the naive loop as the ratio of pooled step times, with a 95 % bootstrap interval over rounds.

Variants:
- ``naive fp32``: what a straightforward port does — NCHW tensors, ``nn.Conv2d`` for G's 128 -> 1 output
  convolution, Keras's zero-debiased BatchNorm as a separate ``var_mean`` plus ``batch_norm``, glibc's
  default allocator (gantrack's own loop before this benchmark existed);
- ``fp32 layout``: channels-last tensors and the GEMM output convolution (``fast_path``), default allocator;
- ``fp32`` (gantrack's default): ``fast_path`` and freed memory reused (``gantrack.allocator``);
- ``bf16``: the same with ``precision=bf16`` (bfloat16 autocast; losses and probes float32).

Goals (issue 13): fp32 >= 1.8x and bf16 >= 3x the naive loop.

    python benchmarks/bench_step.py [--arch bn] [--rounds 8] [--steps 3] [--threads 0]
"""

import argparse
import multiprocessing as mp
import os
import time

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

VARIANTS = {
    "naive fp32": dict(fast_path=False, naive_bn=True, allocator=False),
    "fp32 layout": dict(fast_path=True, naive_bn=False, allocator=False),
    "fp32": dict(fast_path=True, naive_bn=False, allocator=True),
    "bf16": dict(fast_path=True, naive_bn=False, allocator=True, precision="bf16"),
}


def _naive_bn_forward(self, x):
    """Keras's zero-debiased BatchNorm written the obvious way: statistics once for the EMA, again to normalise."""
    import torch

    if not self.training:
        return torch.nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
    with torch.no_grad():
        decay = 1.0 - self.momentum
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
        self.biased_mean.mul_(decay).add_(mean, alpha=1.0 - decay)
        self.biased_var.mul_(decay).add_(var, alpha=1.0 - decay)
        self.num_batches_tracked += 1
        debias = 1.0 - decay ** int(self.num_batches_tracked)
        self.running_mean.copy_(self.biased_mean / debias)
        self.running_var.copy_(self.biased_var / debias)
    return torch.nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def _variant(conn, arch: str, spec: dict, threads: int) -> None:
    """A variant's process: build, warm up, then answer "run n steps" with the seconds they took."""
    import types

    if spec["allocator"]:
        from gantrack.allocator import keep_freed_memory

        keep_freed_memory()
    import torch

    from gantrack.config import preset
    from gantrack.harness import build_gan, gan_step
    from gantrack.models import KerasBatchNorm2d

    if threads:
        torch.set_num_threads(threads)
    cfg = preset("stable").replace(
        arch=arch, device="cpu", fast_path=spec["fast_path"], precision=spec.get("precision", "fp32")
    )
    gan = build_gan(cfg)
    if spec["naive_bn"]:
        for m in [*gan.D.modules(), *gan.G.modules(), *gan.d_before.modules()]:
            if isinstance(m, KerasBatchNorm2d):
                m.forward = types.MethodType(_naive_bn_forward, m)
    for _ in range(3):
        gan_step(gan)
    conn.send("ready")
    while (n := conn.recv()) > 0:
        t = time.perf_counter()
        for _ in range(n):
            gan_step(gan)
            assert gan.cells is not None and len(gan.cells) == 5  # probes on: every cell captured
        conn.send(time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bn", choices=["bn", "nobn"])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per variant (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for name, spec in VARIANTS.items():
        parent, child = ctx.Pipe()
        procs[name] = ctx.Process(target=_variant, args=(child, args.arch, spec, args.threads), daemon=True)
        procs[name].start()
        conns[name] = parent
    try:
        for name in VARIANTS:  # build one at a time would be fairer to warm-up, but warm-up is not timed
            assert conns[name].recv() == "ready"
        times = {name: [] for name in VARIANTS}
        for r in range(args.rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]  # ABBA: linear drift cancels
            for name in order:
                conns[name].send(args.steps)
                times[name].append(conns[name].recv() / args.steps)
    finally:
        for conn in conns.values():
            try:
                conn.send(0)
            except (BrokenPipeError, OSError):
                pass
        for p in procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()

    rng = np.random.default_rng(args.seed)
    base = np.asarray(times["naive fp32"])
    print(
        f"one gan_step at the book's sizes (arch {args.arch}, probes on, batch 128), "
        f"{args.rounds} rounds x {args.steps} steps per variant, torch threads: {args.threads or 'default'}"
    )
    print(f"{'variant':<12} {'s/step':>8}  {'speed-up vs naive fp32 [95% CI]':<34} goal")
    goals = {"fp32": 1.8, "bf16": 3.0}
    for name, t in times.items():
        t = np.asarray(t)
        ratio = base.sum() / t.sum()
        idx = rng.integers(0, len(t), (2000, len(t)))
        boot = base[idx].sum(1) / t[idx].sum(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        goal = goals.get(name)
        verdict = (
            "" if goal is None else f">= {goal}x: {'met' if lo >= goal else 'not met' if hi < goal else 'CI straddles'}"
        )
        print(f"{name:<12} {np.median(t):8.3f}  {ratio:5.2f}x [{lo:.2f}, {hi:.2f}]{'':<16} {verdict}")


if __name__ == "__main__":
    main()
