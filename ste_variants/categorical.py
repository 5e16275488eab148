"""Binary forms of estimators written for categorical samples (softmax over K classes).

With two classes and logits (x, 0), softmax gives σ(x) for class 1 and the one-hot sample's
class-1 entry is this package's 0/1 output y, so every softmax Jacobian reduces to
σ'(·) = σ(·)(1 − σ(·)) times the inner derivative. Each class below states the reduction.
Training draws y ~ Bernoulli(σ(x)) as ``1{u < σ(x)}`` from float64 uniforms of the given
generator (as ``bernoulli``); eval mode thresholds, and the backward then uses y = 1{x > 0}.
"""

from __future__ import annotations

import math

import torch

from ste_variants import functional as F
from ste_variants.base import Estimator, Param
from ste_variants.registry import register_estimator
from ste_variants.stochastic import uniform


def _sample(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """y = 1{u < σ(x)} (training) or 1{x > 0} (eval, u None), as float64 0/1."""
    if u is None:
        return (x > 0).to(torch.float64)
    return (u < torch.sigmoid(x.to(torch.float64))).to(torch.float64)


class _BernoulliSample(Estimator):
    """Forward: y ~ Bernoulli(σ(x)) in training, 1{x > 0} in eval (not registered itself)."""

    forward_text = "training: 1{u < σ(x)}, u ~ U(0, 1) (P = σ(x)); eval: 1{x > 0}"
    stochastic = True
    samples_from = "bernoulli"

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return uniform(x, generator)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return _sample(x, noise) > 0


@register_estimator
class ReinMax(_BernoulliSample):
    """ReinMax: Heun's method in place of straight-through's Euler step (second-order accurate).

    Forward: y ~ Bernoulli(σ(x)) in training, 1{x > 0} in eval.
    Backward: g · [2·s·(1 − s) − ½·σ'(x)], s = (y + σ(x/τ))/2.
    Two-class form of the paper's ReinMax algorithm: π0 = softmax(θ), D ~ π0,
    π1 = (D + softmax(θ/τ))/2 carried with the gradient of softmax(θ) at π1, and
    π2 = 2·π1 − π0/2, so dD/dθ ≈ 2·J(π1) − ½·J(π0) with J(π) = diag(π) − ππᵀ. For logits (x, 0)
    the class-1 entry of J(π)·e1 is π1(1 − π1): π0 → σ(x), π1 → s. The authors' ReinMaxCore
    (github.com/microsoft/ReinMax) gives the same for two classes. In expectation over y the
    backward at τ = 1 is σ'(x), the sigmoid-adjusted rule.
    Reference: Liu, Dong, Liu, Yu, Gao, "Bridging Discrete and Backpropagation:
    Straight-Through and Beyond", NeurIPS 2023, arXiv:2304.08612.
    """

    name = "reinmax"
    backward_text = "g · [2·s·(1 − s) − ½·σ'(x)],  s = (y + σ(x/τ))/2  (y: the forward's sample)"
    backward_short = "g · [2s(1 − s) − σ'(x)/2], s = (y + σ(x/τ))/2"
    paper = (
        "L. Liu, C. Dong, X. Liu, B. Yu, J. Gao. Bridging Discrete and Backpropagation: "
        "Straight-Through and Beyond. NeurIPS 2023; arXiv:2304.08612"
    )
    arxiv = "2304.08612"
    cite = "Liu et al. 2023 (ReinMax)"
    hyperparams = (
        Param(
            "tau",
            1.0,
            "temperature of the softmax in π1 (the paper asks τ ≥ 1)",
            low=1.0,
            high=100.0,
        ),
    )
    area_note = (
        "τ(ln 2 + ½) − ½ for the eval-mode surrogate (ln 2 at τ = 1); in expectation over y, "
        "1 at τ = 1"
    )

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None, tau: float
    ) -> torch.Tensor:
        y = _sample(x, noise).to(x.dtype)
        return g * F.reinmax_grad(x, y, tau).to(g.dtype)

    def area(self) -> float:
        return self._params["tau"] * (math.log(2.0) + 0.5) - 0.5

    def peak(self) -> float:
        # Even in x; 0.25 at 0 for τ = 1, off 0 for larger τ: search |x| ≤ 40τ.
        x = torch.linspace(0.0, 40.0 * self._params["tau"], 400_001, dtype=torch.float64)
        return float(self.surrogate(x).max())


_TAU = Param("tau", 1.0, "temperature of the relaxed sample", low=0.01, high=100.0)


@register_estimator
class GappedST(_BernoulliSample):
    """Gapped straight-through (GST-1.0): the relaxed sample's logit is moved to agree with y.

    Forward: y ~ Bernoulli(σ(x)) in training, 1{x > 0} in eval.
    Backward: g · σ'(d/τ)/τ with the gapped logit d = max(x, gap) where y = 1 and
    d = min(x, −gap) where y = 0 (the shift is a constant: its gradient is 1).
    Two-class form of the authors' ``gst_mover`` (github.com/chijames/GST, fixed gap): the
    sampled class's logit is raised to the largest logit, every other logit within ``gap`` of
    it is lowered to max − gap, and softmax((θ + shift)/τ) carries the gradient of θ. For
    logits (x, 0) the class-1 logit minus the class-0 logit becomes max(x, gap) when y = 1 and
    min(x, −gap) when y = 0. The paper's GST-p (a gap that depends on the sample's
    probability) is not implemented.
    Reference: Fan, Chi, Rudnicky, Ramadge, "Training Discrete Deep Generative Models via
    Gapped Straight-Through Estimator", ICML 2022, arXiv:2206.07235.
    """

    name = "gapped_st"
    backward_text = (
        "g · σ'(d/τ)/τ,  d = max(x, gap) if y = 1, min(x, −gap) if y = 0  (y: the forward's sample)"
    )
    backward_short = "g · σ'(d/τ)/τ, d = max(x, gap) (y = 1) or min(x, −gap) (y = 0)"
    paper = (
        "T.-H. Fan, T.-C. Chi, A. I. Rudnicky, P. J. Ramadge. Training Discrete Deep Generative "
        "Models via Gapped Straight-Through Estimator. ICML 2022; arXiv:2206.07235"
    )
    arxiv = "2206.07235"
    cite = "Fan et al. 2022 (GST)"
    hyperparams = (
        _TAU,
        Param(
            "gap",
            1.0,
            "least margin of the relaxed logit, on the sample's side",
            low=0.0,
            high=100.0,
        ),
    )
    area_note = "2·gap·σ'(gap/τ)/τ + 2·(1 − σ(gap/τ)) for the eval-mode surrogate (0.93 by default)"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None, tau: float, gap: float
    ) -> torch.Tensor:
        y = _sample(x, noise)
        return g * F.gapped_grad(x.to(torch.float64), y, tau, gap).to(g.dtype)

    def area(self) -> float:
        tau, gap = self._params["tau"], self._params["gap"]
        z = gap / tau
        return 2.0 * gap * _sigmoid_prime(z) / tau + 2.0 * (1.0 - _sigmoid(z))

    def peak(self) -> float:
        return _sigmoid_prime(self._params["gap"] / self._params["tau"]) / self._params["tau"]


@register_estimator
class GumbelRao(_BernoulliSample):
    """Gumbel-Rao: the straight-through Gumbel backward averaged over the noise given y.

    Forward: y ~ Bernoulli(σ(x)) in training, 1{x > 0} in eval.
    Backward: g · (1/K)·Σ_k σ'(z_k/τ)/τ, z_k = x + L_k with L_k ~ Logistic(0, 1) drawn
    conditioned on 1{z_k > 0} = y (K = samples); in eval mode L = 0, as for ``gumbel``.
    Two-class form of the Rao-Blackwellised ST-Gumbel-Softmax: E[∇ softmax_τ(θ + G) | D] by
    Monte Carlo over Gumbel noise G conditioned on the sample D. For logits (x, 0) the Gumbel
    difference G1 − G0 is Logistic(0, 1) and D = 1 exactly when x + G1 − G0 > 0, so the
    conditional noise is a truncated logistic, drawn here exactly by inverting its survival
    function (``functional.conditional_logistic``). Checked against the ``rao_gumbel`` of
    github.com/chijames/GST, a reimplementation that uses K = 100.
    Reference: Paulus, Maddison, Krause, "Rao-Blackwellizing the Straight-Through
    Gumbel-Softmax Gradient Estimator", ICLR 2021, arXiv:2010.04838.
    """

    name = "gumbel_rao"
    backward_text = (
        "g · mean_k σ'((x + L_k)/τ)/τ,  L_k ~ Logistic(0, 1) given 1{x + L_k > 0} = y  "
        "(K = samples draws; L = 0 in eval)"
    )
    backward_short = "g · mean_k σ'((x + L_k)/τ)/τ, L_k ~ Logistic | the sample y"
    paper = (
        "M. B. Paulus, C. J. Maddison, A. Krause. Rao-Blackwellizing the Straight-Through "
        "Gumbel-Softmax Gradient Estimator. ICLR 2021; arXiv:2010.04838"
    )
    arxiv = "2010.04838"
    cite = "Paulus et al. 2021 (Gumbel-Rao)"
    hyperparams = (
        _TAU,
        Param(
            "samples", 10, "K, conditional noise draws per element", kind="int", low=1, high=1000
        ),
    )
    area_note = "1 for every tau (eval-mode surrogate, L = 0)"

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # Row 0 draws y; rows 1..K the conditional noise: (K + 1, *x.shape) float64 uniforms.
        k = self._params["samples"]
        return uniform(x.expand(k + 1, *x.shape), generator)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return _sample(x, None if noise is None else noise[0]) > 0

    def backward_rule(
        self,
        g: torch.Tensor,
        x: torch.Tensor,
        noise: torch.Tensor | None,
        tau: float,
        samples: int,
    ) -> torch.Tensor:
        x64 = x.to(torch.float64)
        if noise is None:
            return g * (F.sigmoid_prime(x64 / tau) / tau).to(g.dtype)
        y = _sample(x, noise[0])
        z = F.conditional_logistic(x64, y, noise[1:])
        return g * (F.sigmoid_prime(z / tau) / tau).mean(0).to(g.dtype)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return 0.25 / self._params["tau"]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _sigmoid_prime(z: float) -> float:
    e = math.exp(-abs(z))
    return e / (1.0 + e) ** 2
