"""A WGAN-GP on the 8-Gaussian ring with five critic steps per generator step, with gantrack's probes.

The loop is the usual WGAN-GP one (Gulrajani et al. 2017: Adam lr 1e-4, betas (0, 0.9), penalty 10,
n_critic 5). The lines marked ``# gantrack`` are all that was added: ``d_step`` on every critic step
(the probe cells keep the last one before G's step), the gradient penalty logged into the same run
with ``log_metrics``, and 10,000 points of the ring as the reference for G's sample-diversity snapshots
(``div/*``, every 50 generator steps).

    python examples/wgan_gp_ring.py --experiment wgan-ring
    gantrack report --experiment wgan-ring
"""

import argparse
import time

import torch
from torch import nn

from gantrack.data import TOYS
from gantrack.loop import LoopProbes  # gantrack


def mlp(inp: int, out: int, hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps",
        type=int,
        default=3000,
        help="generator steps (about 40 s; at 300 G's samples have not reached the ring)",
    )
    ap.add_argument("--n-critic", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", default="wgan-ring")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-probes", action="store_true", help="the plain loop, nothing logged")
    ap.add_argument(
        "--diversity-every",
        type=int,
        default=50,
        help="generator steps between sample-diversity snapshots (0: once per pass over the 10,000 reference "
        "points, 78 steps at batch 128)",
    )
    ap.add_argument("--no-diversity", action="store_true", help="probes without the sample-diversity snapshots")
    opt = ap.parse_args(argv)
    torch.manual_seed(opt.seed)
    gen = torch.Generator().manual_seed(opt.seed)
    critic, G = mlp(2, 1), mlp(2, 2)
    opt_c = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.9))
    n = opt.batch_size
    probes = LoopProbes(
        critic,
        loss="wgan-gp",
        order="d-first",
        experiment=opt.experiment,
        tracking_uri=opt.tracking_uri,
        run_name="wgan-gp-ring",
        params=vars(opt),
        enabled=not opt.no_probes,
        G=G,
        latent=2,
        reference=None if opt.no_diversity else TOYS["ring-2d"](10_000, torch.Generator().manual_seed(0)),  # gantrack
        diversity_every=opt.diversity_every,
    )  # gantrack
    with probes:  # gantrack
        t0 = time.perf_counter()
        for step in range(opt.steps):
            for _ in range(opt.n_critic):
                real = TOYS["ring-2d"](n, gen)
                fake = G(torch.randn(n, 2, generator=gen)).detach()
                c_real, c_fake = critic(real), critic(fake)
                eps = torch.rand(n, 1, generator=gen)
                mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
                grad = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)[0]
                gp = ((grad.norm(dim=1) - 1) ** 2).mean()
                probes.d_step(fake, c_fake, c_real)  # gantrack
                opt_c.zero_grad()
                (c_fake.mean() - c_real.mean() + 10 * gp).backward()
                opt_c.step()
            x = G(torch.randn(n, 2, generator=gen))
            c_gen = critic(x)
            probes.g_step(x, c_gen)  # gantrack
            probes.log_metrics({"loss/gp": gp.item()})  # gantrack
            opt_g.zero_grad()
            (-c_gen.mean()).backward()
            opt_g.step()
            probes.end_step()  # gantrack
            if step % 100 == 0:
                w = (c_real.mean() - c_fake.mean()).item()
                print(f"[{step}/{opt.steps}] W estimate {w:.4f}  gp {gp.item():.4f}", flush=True)
        loop_seconds = time.perf_counter() - t0
    if probes.run_id:
        print(f"run {probes.run_id}: gantrack report --experiment {opt.experiment}")
    return probes.run_id, loop_seconds


if __name__ == "__main__":
    main()
