"""The pytorch/examples DCGAN training loop on the bundled MNIST eights, with gantrack's probes.

The loop is the example's (netD ends in a sigmoid, BCELoss, D_x / D_G_z1 / D_G_z2, the same fake batch
for D and G), with 28×28 images and 32 channels so it runs on a CPU (about 45 s for the default 900
steps on one core). G starts by mapping every z to nearly one image and needs 300-400 steps to leave it
(the detector may say mode-collapse then, and says the verdict at the end); at 16 channels it never did
in 900 steps. The lines marked
``# gantrack`` are all that was added: they log the metric contract and the probe cells to MLflow.

    python examples/dcgan_own_loop.py --experiment own-loop
    gantrack report --experiment own-loop
"""

import argparse
import time

import torch
from torch import nn

from gantrack.data import image_dataset
from gantrack.device import resolve_device
from gantrack.loop import LoopProbes  # gantrack


def build(nz: int, ngf: int, ndf: int) -> tuple[nn.Module, nn.Module]:
    netG = nn.Sequential(  # 1×1 → 7×7 → 14×14 → 28×28
        nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    netD = nn.Sequential(  # 28×28 → 14×14 → 7×7 → 1
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    for m in list(netG.modules()) + list(netD.modules()):  # the example's weights_init
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return netG, netD


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", default="own-loop")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nz", type=int, default=32, help="latent size")
    ap.add_argument("--ngf", type=int, default=32, help="G's channels (its last hidden layer)")
    ap.add_argument("--ndf", type=int, default=32, help="D's channels (its first layer)")
    ap.add_argument("--no-probes", action="store_true", help="the plain example, nothing logged")
    ap.add_argument("--stop-on", default="", help="end early in these failure modes, e.g. convergence-failure")
    ap.add_argument("--no-diversity", action="store_true", help="probes without the sample-diversity snapshots")
    ap.add_argument(
        "--diversity-every",
        type=int,
        default=50,
        help="steps between sample-diversity snapshots (0: once per pass over the 5,851 eights, 91 steps at "
        "batch 64; the failure-mode detector needs five to judge a collapse)",
    )
    ap.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    opt = ap.parse_args(argv)
    device = resolve_device(opt.device)  # the probes follow the models onto their device
    torch.manual_seed(opt.seed)
    nz, ngf, ndf = opt.nz, opt.ngf, opt.ndf
    data = image_dataset("mnist-eights").to(device)
    netG, netD = build(nz, ngf, ndf)
    netG, netD = netG.to(device), netD.to(device)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1.0, 0.0

    probes = LoopProbes(
        netD,
        loss="nsgan",
        order="d-first-same-batch",
        outputs="probabilities",  # gantrack
        experiment=opt.experiment,
        tracking_uri=opt.tracking_uri,
        run_name="pytorch-dcgan",  # gantrack
        params={**vars(opt), "device": str(device)},
        enabled=not opt.no_probes,
        G=netG,
        latent=(nz, 1, 1),
        reference=None if opt.no_diversity else data,  # gantrack: sample diversity (div/*)
        diversity_every=opt.diversity_every,
        stop_on=opt.stop_on,
    )  # gantrack
    with probes:  # gantrack
        t0 = time.perf_counter()
        for i in range(opt.steps):
            real = data[torch.randint(0, len(data), (opt.batch_size,)).to(device)]
            # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            label = torch.full((opt.batch_size,), real_label, device=device)
            output_real = netD(real).view(-1)
            errD_real = criterion(output_real, label)
            errD_real.backward()
            D_x = output_real.mean().item()
            noise = torch.randn(opt.batch_size, nz, 1, 1).to(device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach()).view(-1)
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            probes.d_step(fake.detach(), output, output_real)  # gantrack
            optimizerD.step()
            # (2) Update G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake).view(-1)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            probes.g_step(fake, output)  # gantrack
            optimizerG.step()
            probes.end_step()  # gantrack
            if probes.should_stop:  # gantrack: a stop_on failure mode was diagnosed
                break
            if i % 50 == 0:
                print(
                    f"[{i}/{opt.steps}] Loss_D: {errD.item():.4f} Loss_G: {errG.item():.4f} "
                    f"D(x): {D_x:.4f} D(G(z)): {D_G_z1:.4f} / {D_G_z2:.4f}",
                    flush=True,
                )
        loop_seconds = time.perf_counter() - t0
    if probes.run_id:
        print(
            f"run {probes.run_id}: gantrack report --experiment {opt.experiment}"
            + (f" --tracking-uri {opt.tracking_uri}" if opt.tracking_uri else "")
        )
    return probes.run_id, loop_seconds


if __name__ == "__main__":
    main()
