"""A Lightning GAN (generator first, manual optimisation, as in Lightning's GAN template) with
gantrack's callback: the module calls ``self.gantrack.g_step`` / ``d_step``, the callback does the rest.

    pip install "gantrack[lightning]"
    python examples/lightning_gan.py --steps 300 --experiment lightning
    gantrack report --experiment lightning
"""

import argparse
import os

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gantrack.data import image_dataset
from gantrack.lightning import GantrackCallback


class GAN(L.LightningModule):
    def __init__(self, latent_dim: int = 32, lr: float = 2e-4):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.LeakyReLU(0.2), nn.Linear(128, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28))
        )
        self.discriminator = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2), nn.Linear(128, 1)
        )

    def training_step(self, batch, batch_idx):
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        bce = nn.functional.binary_cross_entropy_with_logits
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        fake = self.generator(torch.randn(len(real), self.hparams.latent_dim))
        # generator first
        d_gen = self.discriminator(fake)
        g_loss = bce(d_gen, ones)
        self.gantrack.g_step(fake, d_gen)  # gantrack
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        # then the discriminator, on the same fakes
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        real_loss, fake_loss = bce(d_real, ones), bce(d_fake, zeros)
        self.gantrack.d_step(fake.detach(), d_fake, d_real)  # gantrack
        opt_d.zero_grad()
        self.manual_backward((real_loss + fake_loss) / 2)
        opt_d.step()
        self.log_dict({"g_loss": g_loss, "real_loss": real_loss, "fake_loss": fake_loss}, prog_bar=True)

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return (
            torch.optim.Adam(self.generator.parameters(), self.hparams.lr, betas=betas),
            torch.optim.Adam(self.discriminator.parameters(), self.hparams.lr, betas=betas),
        )


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", default="lightning")
    ap.add_argument("--seed", type=int, default=1)
    opt = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    torch.manual_seed(opt.seed)
    loader = DataLoader(TensorDataset(image_dataset("mnist-eights")), batch_size=64, shuffle=True, drop_last=True)
    callback = GantrackCallback(
        order="g-first", experiment=opt.experiment, tracking_uri=opt.tracking_uri, run_name="lightning-gan"
    )  # gantrack
    trainer = L.Trainer(
        max_steps=2 * opt.steps,
        callbacks=[callback],
        log_every_n_steps=1,  # two optimisers
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(GAN(), loader)
    print(f"run {callback.probes.run_id}: gantrack report --experiment {opt.experiment}")
    return callback.probes.run_id


if __name__ == "__main__":
    main()
