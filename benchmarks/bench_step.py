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
- ``fp32 compiled``: ``fp32`` with D, G and D's probe copy under ``torch.compile(dynamic=False)`` (one
  graph per batch size; BatchNorm's debiasing power made a tensor op so the graphs do not recompile);
- ``bf16``, ``bf16 compiled``: the same with ``precision=bf16`` (bfloat16 autocast; losses and probes
  float32); left out, with a note, on a CPU without bfloat16 in hardware (AVX-512 BF16 or AMX).

Also printed: the step's FLOPs (torch's FLOP counter), this machine's measured dense GEMM rate at the
same thread count (fp32 and bf16), and for each path the fp32 floor (FLOPs / fp32 GEMM rate) as a share
of its step time; the warm-up column holds the first three steps (compilation included).

Goals (issue 13): fp32 >= 1.8x and bf16 >= 3x the naive loop.

    python benchmarks/bench_step.py [--arch bn] [--rounds 8] [--steps 3] [--threads 0] [--width 1 --d-width 1]
"""

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

VARIANTS = {
    "naive fp32": dict(fast_path=False, naive_bn=True, allocator=False),
    "fp32 layout": dict(fast_path=True, naive_bn=False, allocator=False),
    "fp32": dict(fast_path=True, naive_bn=False, allocator=True),
    "fp32 compiled": dict(fast_path=True, naive_bn=False, allocator=True, compiled=True),
    "bf16": dict(fast_path=True, naive_bn=False, allocator=True, precision="bf16"),
    "bf16 compiled": dict(fast_path=True, naive_bn=False, allocator=True, precision="bf16", compiled=True),
}


def _compilable_bn_forward(self, x):
    """gantrack's BatchNorm with the debiasing power as a tensor op: ``int(num_batches_tracked)`` is a new
    Python constant every step, and torch.compile would recompile for each one."""
    import torch

    if not self.training:
        return torch.nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
    y = torch.nn.functional.batch_norm(
        x, self.biased_mean, self.biased_var, self.weight, self.bias, True, self.momentum, self.eps
    )
    with torch.no_grad():
        self.num_batches_tracked += 1
        debias = 1.0 - torch.pow(1.0 - self.momentum, self.num_batches_tracked.double()).float()
        torch.div(self.biased_mean, debias, out=self.running_mean)
        torch.div(self.biased_var, debias, out=self.running_var)
    return y


def _gemm_rate(dtype, n: int = 2048, reps: int = 6) -> float:
    """This process's measured dense GEMM rate (FLOP/s) at its thread count: the practical peak."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


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


def _variant(conn, name: str, arch: str, spec: dict, threads: int, widths: tuple) -> None:
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
        arch=arch,
        device="cpu",
        fast_path=spec["fast_path"],
        precision=spec.get("precision", "fp32"),
        width=widths[0],
        d_width=widths[1],
    )
    gan = build_gan(cfg)
    if spec["naive_bn"]:
        for m in [*gan.D.modules(), *gan.G.modules(), *gan.d_before.modules()]:
            if isinstance(m, KerasBatchNorm2d):
                m.forward = types.MethodType(_naive_bn_forward, m)
    if spec.get("compiled"):  # static shapes: one graph per batch size the step uses (64, 128)
        for mod in [gan.D, gan.G, gan.d_before]:
            for m in mod.modules():
                if isinstance(m, KerasBatchNorm2d):
                    m.forward = types.MethodType(_compilable_bn_forward, m)
        gan.D, gan.G, gan.d_before = (torch.compile(m, dynamic=False) for m in (gan.D, gan.G, gan.d_before))
    t = time.perf_counter()
    for _ in range(3):
        gan_step(gan)
    warm = time.perf_counter() - t
    from torch.utils.flop_counter import FlopCounterMode

    flops = None
    if not spec.get("compiled"):  # the counter sees aten ops; a compiled graph hides them
        with FlopCounterMode(display=False) as counter:
            gan_step(gan)
        flops = counter.get_total_flops()
    conn.send(("ready", warm, flops))
    while (n := conn.recv()) != 0:
        if n < 0:  # asked alone, after the rounds: the others are idle, so the rate is this machine's
            conn.send((_gemm_rate(torch.float32), _gemm_rate(torch.bfloat16) if _has_bf16() else float("nan")))
            continue
        t = time.perf_counter()
        for _ in range(n):
            gan_step(gan)
            assert gan.cells is not None and len(gan.cells) == 5  # probes on: every cell captured
        conn.send(time.perf_counter() - t)


def _has_bf16() -> bool:
    from gantrack.device import _cpu_has_bf16

    return _cpu_has_bf16()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="bn", choices=["bn", "nobn"])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per variant (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--width", type=float, default=1.0, help="G's channel multiplier (1: the book's 128)")
    ap.add_argument("--d-width", type=float, default=1.0, help="D's channel multiplier (1: the book's 64)")
    args = ap.parse_args()
    variants = dict(VARIANTS)
    if not _has_bf16():
        variants = {k: v for k, v in variants.items() if v.get("precision") != "bf16"}
        print("note: no bfloat16 in this CPU's hardware: the bf16 paths are left out (fp32 only)")

    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for name, spec in variants.items():
        parent, child = ctx.Pipe()
        spec_args = (child, name, args.arch, spec, args.threads, (args.width, args.d_width))
        procs[name] = ctx.Process(target=_variant, args=spec_args, daemon=True)
        procs[name].start()
        conns[name] = parent
    try:
        warm, flops = {}, {}
        for name in variants:  # warm-up (and compilation) is not timed in the rounds
            tag, warm[name], flops[name] = conns[name].recv()
            assert tag == "ready"
        times = {name: [] for name in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]  # ABBA: linear drift cancels
            for name in order:
                conns[name].send(args.steps)
                times[name].append(conns[name].recv() / args.steps)
        conns["fp32"].send(-1)
        rates = conns["fp32"].recv()
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
        f"one gan_step (G width {args.width}, D width {args.d_width}; 1 = the book's; arch {args.arch}, probes on, "
        "batch 128), "
        f"{args.rounds} rounds x {args.steps} steps per variant, torch threads: {args.threads or 'default'}"
    )
    step_flops = flops["fp32"]
    floor = step_flops / rates[0]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; bf16 in hardware: "
        f"{_has_bf16()}; one step = {step_flops / 1e9:.1f} GFLOP (torch's FLOP counter); measured GEMM rate "
        f"fp32 {rates[0] / 1e9:.0f}, bf16 {rates[1] / 1e9:.0f} GFLOP/s -> fp32 floor {floor:.3f} s/step, "
        f"bf16 floor {step_flops / rates[1]:.3f} s/step"
    )
    print(
        f"{'variant':<14} {'s/step':>8}  {'speed-up vs naive fp32 [95% CI]':<34} {'fp32 floor':>10} "
        f"{'warm-up':>8}  goal"
    )
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
        print(
            f"{name:<14} {np.median(t):8.3f}  {ratio:5.2f}x [{lo:.2f}, {hi:.2f}]{'':<16} "
            f"{floor / np.median(t):9.0%} {warm[name]:7.1f}s  {verdict}"
        )


if __name__ == "__main__":
    main()
