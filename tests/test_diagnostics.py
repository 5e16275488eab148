"""Gradient diagnostics against closed forms, finite differences and the model they must not touch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from runners.store.records import TAUS, tau_name
from runners.training.diagnostics import (
    diagnose,
    estimator_gradient,
    flip_effects,
    smoothed_gradient,
    spearman,
)
from runners.training.model import BinaryAutoencoder
from ste_variants import get_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


class LinearDecoderModel(nn.Module):
    """Threshold inputs given directly; decoder recon = W b + c (a 1x1 convolution).

    The loss L(b) = mean((W b + c − y)²) is quadratic in b, so every quantity has a closed form.
    """

    def __init__(self, x: torch.Tensor, pixels: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        channels = x.shape[1]
        self.x = x
        self.decoder = nn.Sequential(nn.Conv2d(channels, pixels, 1), nn.Identity())
        with torch.no_grad():
            self.decoder[0].weight.copy_(torch.randn(pixels, channels, 1, 1, generator=generator))
            self.decoder[0].bias.copy_(torch.randn(pixels, generator=generator))
        self.estimator = get_estimator("identity")

    def pre_threshold(self, images: torch.Tensor) -> torch.Tensor:
        return self.x.view(*self.x.shape, 1, 1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)


def _linear_case(scale: float = 1.0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(5, 6, generator=generator)
    images = torch.randn(5, 1, 4, 4, generator=generator)
    model = LinearDecoderModel(x, seed=seed)
    w = model.decoder[0].weight.detach().view(16, 6).double().numpy()
    c = model.decoder[0].bias.detach().double().numpy()
    return model, images, x.double().numpy(), images.view(5, 16).double().numpy(), w, c


def _closed_form(x, y, w, c):
    """D, G and L(b_i=1) − L(b_i=0) of the quadratic loss, in numpy."""
    m = y.shape[1]
    b = (x > 0).astype(float)
    s = 1 - 2 * b
    residual = b @ w.T + c - y  # (N, m)
    grad = 2 * residual @ w / m  # ∂L/∂b
    flip = grad * s + (w**2).sum(axis=0)[None, :] / m  # exact: the quadratic term added
    return b, s, flip, grad


def test_flip_effects_match_the_quadratic_closed_form():
    model, images, x, y, w, c = _linear_case()
    effects = flip_effects(model, images)
    b, s, flip, grad = _closed_form(x, y, w, c)
    np.testing.assert_allclose(effects.b.numpy(), b)
    np.testing.assert_allclose(effects.flip.numpy(), flip, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(effects.grad.numpy(), grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(effects.linearised.numpy(), grad * s, rtol=1e-4, atol=1e-5)
    for tau in TAUS:
        sig = 1 / (1 + np.exp(-x / tau))
        expected = sig * (1 - sig) / tau * flip * s
        np.testing.assert_allclose(smoothed_gradient(effects, tau).numpy(), expected, rtol=1e-4)


def test_identity_gradient_is_g_and_descent_agreement_follows_from_the_linearisation():
    model, images, x, y, w, c = _linear_case(seed=1)
    (result,) = diagnose(model, images, [get_estimator("identity")])
    b, s, flip, grad = _closed_form(x, y, w, c)
    weight = np.abs(flip)
    agree = (grad != 0) & ((grad * s < 0) == (flip < 0))
    assert result["descent_agreement"] == pytest.approx((weight * agree).sum() / weight.sum())
    assert result["coverage"] == pytest.approx(1.0)
    assert result["rel_to_identity"] == pytest.approx(0.0, abs=1e-12)
    assert result["grad_snr"] is None
    ranks = lambda v: np.argsort(np.argsort(v.ravel())).astype(float)  # noqa: E731
    expected_corr = np.corrcoef(ranks(flip), ranks(grad * s))[0, 1]
    assert result["flip_corr"] == pytest.approx(expected_corr, abs=1e-9)
    for tau in TAUS:
        sig = 1 / (1 + np.exp(-x / tau))
        r = (sig * (1 - sig) / tau * flip * s).ravel()
        cos = grad.ravel() @ r / np.linalg.norm(grad) / np.linalg.norm(r)
        assert result[f"cosine_smoothed_tau{tau_name(tau)}"] == pytest.approx(cos, abs=1e-6)


def test_saturated_coverage_drops_when_inputs_leave_the_unit_interval():
    inside, outside = [], []
    for scale, out in ((0.3, inside), (3.0, outside)):
        model, images, x, y, w, c = _linear_case(scale=scale, seed=2)
        (result,) = diagnose(model, images, [get_estimator("saturated")])
        _, _, flip, _ = _closed_form(x, y, w, c)
        within = np.abs(x) <= 1
        expected = (np.abs(flip) * within).sum() / np.abs(flip).sum()
        assert result["coverage"] == pytest.approx(expected)
        out.append(result["coverage"])
    assert inside[0] == pytest.approx(1.0)
    assert outside[0] < 0.6


def test_identity_gradient_equals_g_on_the_autoencoder():
    torch.manual_seed(0)
    model = BinaryAutoencoder("hardtanh", code_channels=16).eval()
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    effects = flip_effects(model, images)
    mean, variance = estimator_gradient(model, images, effects.x, get_estimator("identity"))
    assert variance is None
    assert torch.equal(mean, effects.grad)
    # The rank-one flips agree with decoding the flipped code from scratch.
    with torch.no_grad():
        code = effects.b.float().clone()
        code[1, 5] = 1 - code[1, 5]
        recon = model.decode(code.view(3, 16, 1, 1))
        loss = (recon[1] - images[1]).pow(2).mean().double()
    assert float(loss - effects.loss[1]) == pytest.approx(float(effects.flip[1, 5]), rel=1e-4)


@pytest.mark.parametrize("tau", TAUS)
def test_finite_differences_of_the_smoothed_loss_agree_with_r_tau(tau):
    torch.manual_seed(1)
    # float64 throughout: the finite differences resolve the formula, not float32 rounding
    model = BinaryAutoencoder("identity", code_channels=12).double().eval()
    images = torch.rand(2, 1, 28, 28, dtype=torch.float64) * 2 - 1
    effects = flip_effects(model, images)
    r = smoothed_gradient(effects, tau)

    def smoothed_loss(n: int, i: int, xi: float) -> float:
        """E over bit i ~ Bernoulli(σ(x_i/τ)) of image n's loss, the other bits as they are."""
        losses = []
        for value in (0.0, 1.0):
            code = effects.b[n].clone()
            code[i] = value
            with torch.no_grad():
                recon = model.decode(code.view(1, -1, 1, 1))
            losses.append(float((recon[0] - images[n]).pow(2).mean()))
        p = 1 / (1 + np.exp(-xi / tau))
        return p * losses[1] + (1 - p) * losses[0]

    h = 1e-4 * tau
    for n, i in ((0, 0), (0, 7), (1, 3), (1, 11)):
        xi = float(effects.x[n, i])
        fd = (smoothed_loss(n, i, xi + h) - smoothed_loss(n, i, xi - h)) / (2 * h)
        assert fd == pytest.approx(float(r[n, i]), rel=1e-6, abs=1e-12)


def test_stochastic_estimators_report_a_signal_to_noise_ratio():
    torch.manual_seed(2)
    model = BinaryAutoencoder("gumbel", code_channels=8)
    images = torch.rand(4, 1, 28, 28) * 2 - 1
    gumbel, bernoulli = diagnose(
        model, images, [get_estimator("gumbel"), get_estimator("bernoulli")]
    )
    assert gumbel["grad_snr"] is not None and gumbel["grad_snr"] > 0
    assert bernoulli["grad_snr"] is not None and bernoulli["rel_to_identity"] > 0


def test_diagnose_leaves_the_model_rng_and_gradients_as_they_were():
    torch.manual_seed(3)
    model = BinaryAutoencoder("bernoulli", code_channels=8)
    model.binarize.generator = torch.Generator().manual_seed(5)
    model(torch.rand(4, 1, 28, 28))  # training-mode forward: BatchNorm statistics move
    noise_state = model.binarize.generator.get_state()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(4, 1, 28, 28)
    rng = torch.get_rng_state()
    diagnose(model, images, [get_estimator("bernoulli")])
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(model.binarize.generator.get_state(), noise_state)


def test_spearman_handles_ties_like_the_textbook():
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0])
    b = torch.tensor([2.0, 1.0, 4.0, 4.0, 6.0])
    # Average ranks: a -> 1, 2.5, 2.5, 4, 5; b -> 2, 1, 3.5, 3.5, 5.
    ra, rb = np.array([1, 2.5, 2.5, 4, 5]), np.array([2, 1, 3.5, 3.5, 5])
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
