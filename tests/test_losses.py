import math

import pytest
import torch

from gantrack.losses import family

P = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.99], dtype=torch.float64)
C = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], dtype=torch.float64)


def test_nsgan_components_match_the_formulas():
    f = family("nsgan")
    assert torch.allclose(f.d_real(P), -torch.log(P))
    assert torch.allclose(f.d_fake(P), -torch.log(1 - P))
    assert torch.allclose(f.g(P), -torch.log(P))


def test_minimax_g_is_the_exact_mirror_of_d_fake():
    f = family("minimax")
    assert torch.allclose(f.g(P), torch.log(1 - P))
    assert torch.allclose(f.g(P), -f.d_fake(P))
    assert torch.allclose(f.gain(P), torch.ones_like(P))


def test_lsgan_wgan_hinge_components():
    ls = family("lsgan")
    assert torch.allclose(ls.d_real(C), (C - 1) ** 2)
    assert torch.allclose(ls.d_fake(C), C**2)
    assert torch.allclose(ls.g(C), (C - 1) ** 2)
    w = family("wgan-gp")
    assert torch.allclose(w.d_real(C), -C) and torch.allclose(w.d_fake(C), C) and torch.allclose(w.g(C), -C)
    assert w.gradient_penalty
    h = family("hinge")
    assert torch.allclose(h.d_real(C), torch.relu(1 - C))
    assert torch.allclose(h.d_fake(C), torch.relu(1 + C))
    assert torch.allclose(h.g(C), -C)


@pytest.mark.parametrize("name", ["nsgan", "minimax", "lsgan", "wgan-gp", "hinge"])
def test_derivatives_match_autograd(name):
    f = family(name)
    x = (P if f.probability else C).clone().requires_grad_(True)
    for fn, prime in ((f.d_fake, f.d_fake_prime), (f.g, f.g_prime)):
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        assert torch.allclose(grad, prime(x.detach())), name


def test_gain_law_of_the_book_loss_is_one_minus_p_over_p():
    f = family("nsgan")
    assert torch.allclose(f.gain(P), (1 - P) / P)
    assert f.gain(torch.tensor([0.3], dtype=torch.float64)).item() == pytest.approx(7 / 3)


@pytest.mark.parametrize("name", ["nsgan", "minimax", "lsgan", "wgan-gp", "hinge"])
def test_inverse_links_recover_the_output(name):
    f = family(name)
    x = P[1:4] if f.probability else torch.tensor([0.1, 0.3, 0.45], dtype=torch.float64)
    assert torch.allclose(f.inv_d_fake(f.d_fake(x)), x)
    assert torch.allclose(f.inv_g(f.g(x)), x)


def test_keras_clip_caps_one_sample_loss_near_16_1():
    f = family("nsgan")
    cap = f.g(torch.tensor([0.0], dtype=torch.float64)).item()
    assert cap == pytest.approx(-math.log(1e-7)) and 16.0 < cap < 16.2
    assert math.isfinite(f.d_fake(torch.tensor([1.0], dtype=torch.float64)).item())


def test_unknown_family_is_a_clear_error():
    from gantrack.errors import GantrackError

    with pytest.raises(GantrackError, match="unknown loss"):
        family("vanilla")
