"""A conditional DCGAN (D(x, y), G(z, y)) on bundled MNIST digits, with gantrack's probes.

D takes the image and its label (a label map as a second input channel); G takes noise and a label.
``d_inputs`` hands the labels to the probe passes, which call ``D(x, *d_inputs)``. Order: D updates,
then G scores a fresh batch ("d-first", as in the book). The lines marked ``# gantrack`` are all that
was added.

    python examples/conditional_dcgan.py --steps 200 --experiment cond-dcgan
    gantrack report --experiment cond-dcgan
"""

import argparse
import time

import torch
from torch import nn

from gantrack.data import image_dataset
from gantrack.loop import LoopProbes  # gantrack

CLASSES = 2  # the bundled digits are eights: labels here split them by stroke weight (a stand-in class)


class CondD(nn.Module):
    def __init__(self, ndf: int = 16):
        super().__init__()
        self.embed = nn.Embedding(CLASSES, 28 * 28)
        self.body = nn.Sequential(
            nn.Conv2d(2, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(ndf * 2 * 7 * 7, 1),
        )

    def forward(self, x, y):
        return self.body(torch.cat([x, self.embed(y).view(-1, 1, 28, 28)], dim=1))


class CondG(nn.Module):
    def __init__(self, nz: int = 32, ngf: int = 16):
        super().__init__()
        self.embed = nn.Embedding(CLASSES, nz)
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * nz, ngf * 2, 7, 1, 0),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1),
            nn.BatchNorm2d(ngf),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z, y):
        return self.body(torch.cat([z, self.embed(y)], dim=1)[:, :, None, None])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", default="cond-dcgan")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-probes", action="store_true", help="the plain loop, nothing logged")
    opt = ap.parse_args(argv)
    torch.manual_seed(opt.seed)
    data = image_dataset("mnist-eights")
    labels = (data.mean(dim=(1, 2, 3)) > data.mean()).long()  # heavy vs light strokes
    D, G = CondD(), CondG()
    bce = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    n, nz = opt.batch_size, 32
    probes = LoopProbes(
        D,
        loss="nsgan",
        order="d-first",
        experiment=opt.experiment,
        tracking_uri=opt.tracking_uri,
        run_name="conditional-dcgan",
        params=vars(opt),
        enabled=not opt.no_probes,
    )  # gantrack
    with probes:  # gantrack
        t0 = time.perf_counter()
        for step in range(opt.steps):
            idx = torch.randint(0, len(data), (n,))
            real, y_real = data[idx], labels[idx]
            y_fake = torch.randint(0, CLASSES, (n,))
            fake = G(torch.randn(n, nz), y_fake).detach()
            s_real, s_fake = D(real, y_real), D(fake, y_fake)
            probes.d_step(fake, s_fake, s_real, d_inputs=(y_fake,))  # gantrack
            opt_d.zero_grad()
            (bce(s_real, torch.ones_like(s_real)) + bce(s_fake, torch.zeros_like(s_fake))).backward()
            opt_d.step()
            y_gen = torch.randint(0, CLASSES, (n,))
            x = G(torch.randn(n, nz), y_gen)
            s_gen = D(x, y_gen)
            probes.g_step(x, s_gen, d_inputs=(y_gen,))  # gantrack
            opt_g.zero_grad()
            bce(s_gen, torch.ones_like(s_gen)).backward()
            opt_g.step()
            probes.end_step()  # gantrack
            if step % 50 == 0:
                print(f"[{step}/{opt.steps}] D(x) {torch.sigmoid(s_real).mean():.3f}", flush=True)
        loop_seconds = time.perf_counter() - t0
    if probes.run_id:
        print(f"run {probes.run_id}: gantrack report --experiment {opt.experiment}")
    return probes.run_id, loop_seconds


if __name__ == "__main__":
    main()
