"""The Bernoulli VAE of the DisARM benchmark: 784 binary pixels, n binary latents.

Encoder q(b|x) = Π_i Bernoulli(σ(logits_i(x))), decoder p(x|b) = Π_j Bernoulli(σ(dec_j(b))),
prior p(b) = Π_i Bernoulli(σ(prior_logits_i)) with learned logits. Architectures (Dong, Mnih,
Tucker 2020, and its launcher `disarm/binary/experiment_launcher_singlelayer.py`):

- "linear":    encoder 784 → n, decoder n → 784 (one affine layer each way);
- "nonlinear": encoder 784 → 200 → 200 → n, decoder n → 200 → 200 → 784, LeakyReLU(0.3) after
  each hidden layer.

Initialisation as Keras' Dense layers of the reference: Glorot-uniform weights, zero biases,
except the decoder's last bias = logit(clip(mean training pixel, 0.001, 0.999)). The prior's
logits start at 0.

The training objective per example is f(b) = −ELBO(x, b) = −log p(x|b) − log p(b) + log q(b|x),
with the encoder's logits detached inside f: the estimators estimate ∇_logits E_q[f(b)] with f
fixed; the dropped term E_q[∇ log q(b|x)] is zero (the reference drops it too).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ste_variants.module import Binarize
from ste_variants.unbiased import Objective

PIXELS = 784
HIDDEN = 200
LEAK = 0.3
ARCHS = ("linear", "nonlinear")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layer = nn.Linear(fan_in, fan_out)
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
        layers.append(layer)
        if n < len(sizes) - 2:
            layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(value; σ(logits)), elementwise, stable for any logits."""
    return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")


def bias_from_mean(mean: torch.Tensor) -> torch.Tensor:
    """The decoder's initial output bias: logit(clip(mean, 0.001, 0.999)) (the reference's)."""
    p = mean.to(torch.float64).clamp(0.001, 0.999)
    return (torch.log(p) - torch.log1p(-p)).to(torch.float32)


class BernoulliVAE(nn.Module):
    """A VAE with `latents` Bernoulli latents on binarised 28x28 images (flattened to 784).

    Args:
        arch: "linear" or "nonlinear".
        latents: number of binary latents n.
        estimator: estimator spec; held by `binarize` (a `ste_variants.Binarize`, whose
            `.generator` is the run's noise stream and `.estimator` the estimator object).
        pixel_mean: (784,) mean training pixel (probability of 1), for the decoder's output
            bias; None leaves it at zero.

    Attributes:
        encoder, decoder: the MLPs; prior_logits: (n,) parameter.
    """

    def __init__(
        self,
        arch: str = "linear",
        latents: int = 200,
        estimator: str = "disarm",
        pixel_mean: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch, self.latents = arch, latents
        hidden = [HIDDEN, HIDDEN] if arch == "nonlinear" else []
        self.encoder = _mlp([PIXELS, *hidden, latents])
        self.decoder = _mlp([latents, *hidden, PIXELS])
        if pixel_mean is not None:
            with torch.no_grad():
                self.decoder[-1].bias.copy_(bias_from_mean(pixel_mean))
        self.prior_logits = nn.Parameter(torch.zeros(latents))
        self.binarize = Binarize(estimator)

    @property
    def estimator(self):  # noqa: ANN201
        """The estimator object (`ste_variants.Estimator`)."""
        return self.binarize.estimator

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (the gradient whose variance is recorded)."""
        return list(self.encoder.parameters())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder logits (B, n) of images x (B, 784) in {0, 1}."""
        return self.encoder(x)

    def neg_elbo(self, x: torch.Tensor, b: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """−ELBO(x, b) per sample: x (B, 784), b (..., B, n), logits (B, n) → (..., B)."""
        recon = bernoulli_log_prob(self.decoder(b), x.expand(*b.shape[:-1], PIXELS)).sum(-1)
        prior = bernoulli_log_prob(self.prior_logits.expand_as(b), b).sum(-1)
        posterior = bernoulli_log_prob(logits.expand_as(b), b).sum(-1)
        return posterior - recon - prior

    def objective(self, x: torch.Tensor, logits: torch.Tensor) -> Objective:
        """f(b) = −ELBO(x, b) with the logits detached: b (S, B, n) → (S, B)."""
        fixed = logits.detach()
        return lambda b: self.neg_elbo(x, b, fixed)

    @torch.no_grad()
    def iwae_bound(
        self, x: torch.Tensor, samples: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """−log (1/K) Σ_k p(x, b_k)/q(b_k|x), b_k ~ q(b|x) iid: the K-sample bound, per example
        (an upper bound on −log p(x); K = 1 gives −ELBO). Uniforms from `generator` (float64)."""
        logits = self.logits(x)
        prob = torch.sigmoid(logits.to(torch.float64))
        device = generator.device if generator is not None else x.device
        u = torch.rand(
            (samples, *logits.shape), generator=generator, dtype=torch.float64, device=device
        )
        b = (u.to(x.device) < prob).to(logits.dtype)
        log_w = -self.neg_elbo(x, b, logits).to(torch.float64)  # (K, B)
        return -(torch.logsumexp(log_w, 0) - math.log(samples))
