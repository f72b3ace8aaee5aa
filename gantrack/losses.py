"""Loss families, written as per-sample functions of D's output.

For each family, ``output(score)`` turns D's raw score into the quantity the losses are
written in (the probability p = sigmoid(score) for the BCE families, the score itself
otherwise), and ``d_real``, ``d_fake``, ``g`` are per-sample losses of that output;
batch losses are their means. ``d_fake_prime`` and ``g_prime`` are derivatives with
respect to the output: the simple gain law of docs/design.md §1 is |g'(p)| / |d_fake'(p)|.
``inv_d_fake`` / ``inv_g`` map a batch loss back to an "implied" output (for
non-saturating BCE: p̂ = 1 - exp(-d_fake), q̂ = exp(-g), geometric-mean estimates of D(G(z))).

BCE clips p to [eps, 1 - eps] as Keras 2.2.4 does (eps = 1e-7), so one sample's loss caps
near 16.1 and the gradient vanishes beyond the clip, as in the book's runs.
All functions accept torch tensors (float32 or float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .contract import LOSS_FAMILIES
from .errors import GantrackError

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossFamily:
    name: str
    output: Fn  # raw score -> the quantity the losses are written in
    d_real: Fn
    d_fake: Fn
    g: Fn
    d_fake_prime: Fn
    g_prime: Fn
    inv_d_fake: Fn
    inv_g: Fn
    threshold: float  # output above it counts as "real" for accuracy
    probability: bool  # output is a probability (BCE families)
    gradient_penalty: bool = False

    def gain(self, out: torch.Tensor) -> torch.Tensor:
        """Link gain |g'(o)| / |d_fake'(o)|: how much further g moves than d_fake for a move in o."""
        return self.g_prime(out).abs() / self.d_fake_prime(out).abs()


def _bce_family(name: str, eps: float, saturating: bool) -> LossFamily:
    def clip(p):
        return p.clamp(eps, 1.0 - eps)

    if saturating:  # minimax: G minimises log(1 - p)
        g = lambda p: torch.log1p(-clip(p))  # noqa: E731
        g_prime = lambda p: -1.0 / (1.0 - clip(p))  # noqa: E731
        inv_g = lambda loss: 1.0 - torch.exp(loss)  # noqa: E731
    else:  # non-saturating (the book's): G minimises -log p
        g = lambda p: -torch.log(clip(p))  # noqa: E731
        g_prime = lambda p: -1.0 / clip(p)  # noqa: E731
        inv_g = lambda loss: torch.exp(-loss)  # noqa: E731
    return LossFamily(
        name=name,
        output=torch.sigmoid,
        d_real=lambda p: -torch.log(clip(p)),
        d_fake=lambda p: -torch.log1p(-clip(p)),
        g=g,
        d_fake_prime=lambda p: 1.0 / (1.0 - clip(p)),
        g_prime=g_prime,
        inv_d_fake=lambda loss: -torch.expm1(-loss),
        inv_g=inv_g,
        threshold=0.5,
        probability=True,
    )


def _identity(x):
    return x


def family(name: str, eps: float = 1e-7) -> LossFamily:
    """The loss family called ``name`` (nsgan, minimax, lsgan, wgan-gp, hinge)."""
    if name == "nsgan":
        return _bce_family(name, eps, saturating=False)
    if name == "minimax":
        return _bce_family(name, eps, saturating=True)
    if name == "lsgan":  # labels 0 (fake) and 1 (real) on a linear output; no 1/2 factor
        return LossFamily(
            name=name,
            output=_identity,
            d_real=lambda o: (o - 1.0) ** 2,
            d_fake=lambda o: o**2,
            g=lambda o: (o - 1.0) ** 2,
            d_fake_prime=lambda o: 2.0 * o,
            g_prime=lambda o: 2.0 * (o - 1.0),
            inv_d_fake=torch.sqrt,
            inv_g=lambda loss: 1.0 - torch.sqrt(loss),
            threshold=0.5,
            probability=False,
        )
    if name == "wgan-gp":  # critic c; the gradient penalty is added to D's loss only
        return LossFamily(
            name=name,
            output=_identity,
            d_real=lambda c: -c,
            d_fake=_identity,
            g=lambda c: -c,
            d_fake_prime=torch.ones_like,
            g_prime=lambda c: -torch.ones_like(c),
            inv_d_fake=_identity,
            inv_g=lambda loss: -loss,
            threshold=0.0,
            probability=False,
            gradient_penalty=True,
        )
    if name == "hinge":
        return LossFamily(
            name=name,
            output=_identity,
            d_real=lambda c: torch.relu(1.0 - c),
            d_fake=lambda c: torch.relu(1.0 + c),
            g=lambda c: -c,
            # d_fake' is 1 where 1 + c > 0 and 0 elsewhere: there the gain is infinite (d_fake is flat)
            d_fake_prime=lambda c: (c > -1.0).to(c.dtype),
            g_prime=lambda c: -torch.ones_like(c),
            inv_d_fake=lambda loss: loss - 1.0,
            inv_g=lambda loss: -loss,
            threshold=0.0,
            probability=False,
        )
    raise GantrackError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_FAMILIES)}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x c(x_hat)||_2 - 1)^2] on random interpolates.

    ``critic``: callable from a batch to raw scores; ``gen``: the CPU stream the mixing weights come from.
    """
    n = min(len(real), len(fake))
    alpha = torch.rand((n,) + (1,) * (real.dim() - 1), generator=gen).to(real.device)
    x_hat = (alpha * real[:n] + (1 - alpha) * fake[:n]).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
