"""The players: chapter 10's DCGAN, small MLPs for the toys, and the Dirac-GAN's one-parameter pair.

Every discriminator returns a raw score per sample, shape (n,): a logit for the BCE
families (the loss family applies the sigmoid, as Keras's final activation would) and
the critic value for WGAN and hinge.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Config


class KerasBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose moving averages are zero-debiased, as standalone Keras 2.2 on TensorFlow keeps them.

    Keras 2.2.4's ``moving_average_update`` calls TF's ``assign_moving_average(zero_debias=True)``:
    it accumulates an EMA from zero and divides by 1 - decay^t, so the moving statistics equal a
    (weighted) average of the batch statistics seen so far — not 0.99·init + 0.01·batch. Without it,
    ``G.predict`` in the first hundreds of steps normalises with mean 0 / var 1 and D learns to
    reject those washed-out images while G trains on different ones (the run never balances).
    """

    def __init__(self, channels: int, eps: float, decay: float):
        super().__init__(channels, eps=eps, momentum=1.0 - decay)
        self.register_buffer("biased_mean", torch.zeros(channels))
        self.register_buffer("biased_var", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        # batch_norm itself keeps the biased EMAs (momentum 1 - decay, unbiased batch variance, as Keras):
        # one pass over the batch instead of a separate var_mean
        y = nn.functional.batch_norm(
            x, self.biased_mean, self.biased_var, self.weight, self.bias, True, self.momentum, self.eps
        )
        with torch.no_grad():
            self.num_batches_tracked += 1
            debias = 1.0 - (1.0 - self.momentum) ** int(self.num_batches_tracked)
            torch.div(self.biased_mean, debias, out=self.running_mean)
            torch.div(self.biased_var, debias, out=self.running_var)
        return y


class OneChannelConv2d(nn.Conv2d):
    """A stride-1 'same' convolution to one output channel, computed as one GEMM and a fold.

    The same parameters and the same sum as ``nn.Conv2d`` (to float rounding): with the kernel flipped,
    z[n, k, p] = sum_c w[c, k] x[n, c, p] is a plain matrix product over channels, and ``F.fold`` adds
    each kernel offset's plane into place. oneDNN runs a 128 -> 1 channel 7x7 convolution at a tenth of
    its usual speed (no output-channel blocking to vectorise); as a GEMM it is ~2.5x faster forward and
    backward, and it was a quarter of the book-size CPU step.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(channels, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled():
            return self._shifted_sum(x)
        n, c, h, w = x.shape
        k = self.kernel_size[0]
        flipped = self.weight[0].flip(1, 2).reshape(c, k * k).t()  # (k*k, C)
        z = torch.matmul(flipped.to(x.dtype), x.flatten(2))  # (N, k*k, H*W); a view of x in either layout
        return nn.functional.fold(z, (h, w), k, padding=k // 2) + self.bias.to(z.dtype).view(1, 1, 1, 1)

    def _shifted_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The same sum for inference only (G's diversity snapshots): the GEMM + F.fold above was half of
        a snapshot's G pass, mostly in fold's col2im; here the k*k planes are summed by 2k shifted adds of
        whole planes (k offsets along x for every row offset at once, then k along y), 3x faster
        forward. Training keeps ``fold``, so its numbers stay the same bits as before."""
        n, c, h, w = x.shape
        k, p = self.kernel_size[0], self.kernel_size[0] // 2
        # plane (kx, ky): x's pixel (y, x) times w[:, ky, kx], which lands on output (y - ky + p, x - kx + p)
        taps = self.weight[0].permute(2, 1, 0).reshape(k * k, c).to(x.dtype)
        planes = torch.matmul(taps, x.permute(1, 0, 2, 3).reshape(c, n * h * w)).view(k, k, n, h, w)
        rows = x.new_zeros(k, n, h, w + k - 1, dtype=torch.float32)  # bfloat16 planes summed in float32
        for kx in range(k):
            rows[..., k - 1 - kx : k - 1 - kx + w] += planes[kx]
        out = x.new_zeros(n, h + k - 1, w + k - 1, dtype=torch.float32)
        for ky in range(k):
            out[:, k - 1 - ky : k - 1 - ky + h] += rows[ky]
        return (out[:, p : p + h, p : p + w] + self.bias).unsqueeze(1).to(x.dtype)


def _bn(channels: int, cfg: Config) -> nn.Module:
    if cfg.bn_zero_debias:
        return KerasBatchNorm2d(channels, cfg.bn_eps, cfg.bn_momentum)
    # Keras momentum 0.99 means moving = 0.99 * moving + 0.01 * batch; PyTorch calls 0.01 the momentum.
    return nn.BatchNorm2d(channels, eps=cfg.bn_eps, momentum=1.0 - cfg.bn_momentum)


def _keras_init(module: nn.Module) -> None:
    """Chapter 10: kernels N(0, 0.02), biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANDiscriminator(nn.Module):
    """[Conv 4×4 s2 'same' → (BN) → LeakyReLU 0.2] × 2 → Flatten → Dense(1)."""

    def __init__(self, cfg: Config):
        super().__init__()
        c = max(1, round(64 * (cfg.d_width or cfg.width)))
        bn = cfg.arch == "bn"
        layers: list[nn.Module] = []
        for cin in (1, c):
            layers.append(nn.Conv2d(cin, c, 4, stride=2, padding=1))
            if bn:
                layers.append(_bn(c, cfg))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * 7 * 7, 1)
        _keras_init(self)
        nn.init.xavier_uniform_(self.head.weight)  # the book leaves the output Dense at glorot-uniform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # the logit in float32 even under bfloat16 autocast: bf16 keeps ~3 significant digits, so a logit
        # near -9 (D(G(z)) ~ 1e-4, where g = -log D(G(z)) is steepest) would move p by ~3 %
        with torch.autocast(h.device.type, enabled=False):
            return self.head(h.to(self.head.weight.dtype)).squeeze(1)


class DCGANGenerator(nn.Module):
    """Dense → 128×7×7 → LeakyReLU → [ConvT 4×4 s2 → (BN) → LeakyReLU] × 2 → Conv 7×7 → tanh."""

    def __init__(self, cfg: Config):
        super().__init__()
        c = max(1, round(128 * cfg.width))
        bn = cfg.arch == "bn"
        self.c = c
        self.channels_last = cfg.fast_path  # the harness stores the weights NHWC to match
        self.project = nn.Sequential(nn.Linear(cfg.latent_dim, c * 7 * 7), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        for _ in range(2):
            layers.append(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1))
            if bn:
                layers.append(_bn(c, cfg))
            layers.append(nn.LeakyReLU(0.2))
        layers += [OneChannelConv2d(c, 7) if cfg.fast_path else nn.Conv2d(c, 1, 7, padding=3), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        _keras_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.c, 7, 7)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x)


def _he_uniform(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _mlp(inp: int, hidden: int, out: int, layers: int) -> nn.Sequential:
    mods, width = [], inp
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, out))


class MLPDiscriminator(nn.Module):
    """Chapter 6: Dense(hidden, ReLU, he_uniform) → Dense(1); ``layers`` hidden layers (chapter 6: 1)."""

    def __init__(self, dim: int, hidden: int, layers: int = 1):
        super().__init__()
        self.net = _mlp(dim, hidden, 1, layers)
        _he_uniform(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class MLPGenerator(nn.Module):
    """Chapter 6: latent → Dense(hidden, ReLU, he_uniform) → Dense(dim, linear); ``layers`` hidden layers."""

    def __init__(self, latent_dim: int, hidden: int, dim: int, layers: int = 1):
        super().__init__()
        self.net = _mlp(latent_dim, hidden, dim, layers)
        _he_uniform(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DiracDiscriminator(nn.Module):
    """D(x) = sigmoid(psi * x): returns the logit psi * x."""

    def __init__(self, psi0: float):
        super().__init__()
        self.psi = nn.Parameter(torch.tensor([float(psi0)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.psi).squeeze(1)


class DiracGenerator(nn.Module):
    """G(z) = theta for every z."""

    def __init__(self, theta0: float):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([float(theta0)]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.theta.expand(z.shape[0], 1)


def build(cfg: Config, data_dim: int = 0) -> tuple[nn.Module, nn.Module]:
    """(discriminator, generator) for a config; parameters drawn from torch's global RNG."""
    if cfg.model == "dcgan":
        return DCGANDiscriminator(cfg), DCGANGenerator(cfg)
    if cfg.model == "mlp":
        return (
            MLPDiscriminator(data_dim, cfg.mlp_hidden_d, cfg.mlp_layers),
            MLPGenerator(cfg.latent_dim, cfg.mlp_hidden_g, data_dim, cfg.mlp_layers),
        )
    return DiracDiscriminator(cfg.dirac_psi0), DiracGenerator(cfg.dirac_theta0)
