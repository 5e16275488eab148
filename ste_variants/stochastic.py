"""Stochastic estimators: sample the binary output in training mode, threshold in eval mode.

Noise is drawn in float64 from the given ``torch.Generator`` (None = torch's global RNG) on the
generator's device, then moved to x's device, so one seed gives the same samples on CPU and
GPU and in every input dtype.
"""

from __future__ import annotations

from typing import Any

import torch

from ste_variants import functional as F
from ste_variants.base import Estimator, Param
from ste_variants.deterministic import SCALE
from ste_variants.registry import register_estimator

_BENGIO = (
    "Y. Bengio, N. Léonard, A. Courville. Estimating or Propagating Gradients Through "
    "Stochastic Neurons for Conditional Computation. arXiv:1308.3432, 2013"
)


def uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """u ~ U(0, 1) in float64, shaped like x, open at 0 (so log(u) is finite)."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=device)
    # rand is in [0, 1): the smallest positive double keeps u in (0, 1).
    return u.clamp_min_(torch.finfo(torch.float64).tiny).to(x.device)


def bernoulli_step(x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """b = 1{u < σ(x)} for the noise u of `uniform` (σ in float64); 1{x > 0} without noise
    (evaluation). The draw of `bernoulli` and of the unbiased family: same u, same bits."""
    if noise is None:
        return x > 0
    return noise < torch.sigmoid(x.to(torch.float64))


def logistic(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """L ~ Logistic(0, 1) = log(u) − log(1 − u), in float64."""
    u = uniform(x, generator)
    return torch.log(u) - torch.log1p(-u)


@register_estimator
class Bernoulli(Estimator):
    """Stochastic binary neuron with a straight-through backward.

    Forward (training): 1{u < σ(x)}, u ~ U(0, 1), so E[y] = σ(x); (eval): 1{x > 0}.
    Backward: g (backward="st") or g · σ(x)(1 − σ(x)) (backward="sigmoid").
    Reference: Bengio, Léonard, Courville 2013, arXiv:1308.3432.
    """

    name = "bernoulli"
    forward_text = "training: 1{u < σ(x)}, u ~ U(0, 1) (E = σ(x)); eval: 1{x > 0}"
    backward_text = "g (backward=st) or g · σ(x)·(1 − σ(x)) (backward=sigmoid)"
    paper = _BENGIO
    arxiv = "1308.3432"
    cite = "Bengio et al. 2013"
    stochastic = True
    hyperparams = (
        Param(
            "backward",
            "st",
            "st: pass g unchanged; sigmoid: multiply by σ'(x)",
            kind="str",
            choices=("st", "sigmoid"),
        ),
    )
    area_note = "infinite for backward=st, 1 for backward=sigmoid"
    samples_from = "bernoulli"

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return uniform(x, generator)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return bernoulli_step(x, noise)

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, backward: str
    ) -> torch.Tensor:
        if backward == "st":
            return g.clone()
        return g * F.sigmoid_prime(x)

    def area(self) -> float | None:
        return 1.0 if self._params["backward"] == "sigmoid" else None

    def peak(self) -> float:
        return 0.25 if self._params["backward"] == "sigmoid" else 1.0


@register_estimator
class Gumbel(Estimator):
    """Binary Gumbel-sigmoid (binary concrete) with a straight-through hard sample.

    Forward (training): 1{x + L > 0}, L ~ Logistic(0, 1), so P(y = 1) = σ(x); (eval): 1{x > 0}.
    Backward: g · σ'((x + L)/τ)/τ with the same L as the forward (L = 0 in eval mode).
    Reference: Jang, Gu, Poole, "Categorical Reparameterization with Gumbel-Softmax",
    ICLR 2017, arXiv:1611.01144; Maddison, Mnih, Teh, "The Concrete Distribution", ICLR 2017,
    arXiv:1611.00712.
    """

    name = "gumbel"
    forward_text = "training: 1{x + L > 0}, L ~ Logistic(0, 1) (P = σ(x)); eval: 1{x > 0}"
    backward_text = "g · σ'((x + L)/τ)/τ  (L: the forward's noise; 0 in eval)"
    paper = (
        "E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax. ICLR "
        "2017, arXiv:1611.01144; C. J. Maddison, A. Mnih, Y. W. Teh. The Concrete Distribution: "
        "A Continuous Relaxation of Discrete Random Variables. ICLR 2017, arXiv:1611.00712"
    )
    arxiv = "1611.01144"
    cite = "Jang et al. 2017; Maddison et al. 2017"
    stochastic = True
    hyperparams = (
        # σ'(0)/τ = 1/(4τ) is the peak: a floor on τ keeps it finite in every dtype.
        Param("tau", 1.0, "temperature of the relaxed sample", low=0.01, high=100.0),
    )
    area_note = "1 for every tau (in x, for fixed noise)"
    samples_from = "bernoulli"

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # L = logit(u) gives the bits 1{u > 1 − σ(x)}, the antithetic of 1{u < σ(x)}; with
        # paired_noise, L = −logit(u) (the same law) gives 1{u < σ(x)}, the bits of `bernoulli`.
        noise = logistic(x, generator)
        return noise.neg_() if self.paired_noise else noise

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None, tau: float
    ) -> torch.Tensor:
        z = x.to(torch.float64) if noise is None else x.to(noise.dtype) + noise
        return g * (F.sigmoid_prime(z / tau) / tau).to(g.dtype)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return 0.25 / self._params["tau"]


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """clip((x + 1)/2, 0, 1), BinaryNet's "hard sigmoid", in float64."""
    return ((x.to(torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


@register_estimator
class BinaryNetStochastic(Estimator):
    """BinaryNet's stochastic binarization: P(y = 1) is the hard sigmoid of x.

    Forward (training): 1{u < clip((x + 1)/2, 0, 1)}, u ~ U(0, 1); (eval): 1{x > 0}.
    Backward: g · scale · 1{|x| ≤ 1} (boundary inclusive), the straight-through estimator
    of the paper; with scale = 0.5 (default) it is exactly the derivative of the hard sigmoid
    clip((x + 1)/2, 0, 1), the expected 0/1 output.
    Reference: Courbariaux, Hubara, Soudry, El-Yaniv, Bengio, "Binarized Neural Networks",
    2016, arXiv:1602.02830, section 1.1 (stochastic binarization) and 1.3 (the STE).
    """

    name = "binarynet_stochastic"
    forward_text = "training: 1{u < clip((x + 1)/2, 0, 1)}, u ~ U(0, 1); eval: 1{x > 0}"
    backward_text = "g · scale·1{|x| ≤ 1}  (boundary inclusive; scale 0.5: hard sigmoid's slope)"
    backward_short = "g · scale·1{|x| ≤ 1}"
    paper = (
        "M. Courbariaux, I. Hubara, D. Soudry, R. El-Yaniv, Y. Bengio. Binarized Neural "
        "Networks: Training Deep Neural Networks with Weights and Activations Constrained to "
        "+1 or -1. arXiv:1602.02830, 2016 (stochastic binarization)"
    )
    arxiv = "1602.02830"
    cite = "Courbariaux, Hubara et al. 2016 (BinaryNet)"
    stochastic = True
    hyperparams = (SCALE,)
    area_note = "sign-native 2, times scale (default 0.5 → area 1, the hard sigmoid's slope)"
    samples_from = "hard_sigmoid"

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return uniform(x, generator)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x > 0
        return noise < hard_sigmoid(x)

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.box(x, -1.0, 1.0, closed=True))

    def area(self) -> float:
        return 2.0 * self._params["scale"]

    def peak(self) -> float:
        return self._params["scale"]
