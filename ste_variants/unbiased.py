"""Unbiased gradient estimators for Bernoulli latents, and one entry point for every family.

A threshold estimator (the straight-through family) turns logits into bits whose backward is a
surrogate; an unbiased estimator instead evaluates the objective at several samples and builds
a score-function estimate. Both answer the same question through `estimate_gradient`:

    est = get_estimator("disarm")
    out = estimate_gradient(est, logits, objective, generator)
    out.surrogate.mean().backward()   # logits.grad = the estimate of ∇ E_b[f(b)], per example
    out.loss                          # (B,) detached: the objective at the samples, averaged
    out.evaluations                   # objective evaluations per example (samples passed to f)

Conventions:
- ``logits`` (B, n): b_i ~ Bernoulli(σ(logits_i)) independently; the estimate is of
  ∇_logits E_b[f(b)] for each example, with f held fixed (a task keeps any dependence of f on
  the logits, such as log q(b|x) in an ELBO, out of the gradient: its expectation is zero).
- ``objective``: b of shape (S, B, n) (float 0/1, the logits' dtype) → (S, B) per-example loss
  (lower is better). Gradients of f's own parameters (a decoder) flow through ``surrogate``:
  its gradient there is that of the mean of f over the S samples.
- Noise: float64 uniforms from ``generator`` (a CPU generator; moved to the logits' device), so
  one seed gives the same bits on CPU and GPU. With one generator state, every estimator that
  samples b = 1{u < σ(x)} draws the same first sample: ``bernoulli``, ``reinmax``,
  ``gapped_st``, ``gumbel_rao`` (row 0), ``gumbel`` with ``paired_noise``, ``reinforce_loo``
  (sample 1), and ``arm``/``disarm`` (their b; b̃ is the antithetic 1{1 − u < σ(x)}).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ste_variants.base import Estimator, Param
from ste_variants.registry import register_estimator
from ste_variants.spec import EstimatorSpecError
from ste_variants.stochastic import bernoulli_step, uniform

__all__ = ["Estimate", "Objective", "UnbiasedEstimator", "estimate_gradient"]

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Estimate:
    """One gradient estimate for a batch.

    Attributes:
        loss: (B,) the objective averaged over the evaluated samples, detached (for logging).
        surrogate: (B,) a tensor whose value equals ``loss`` and whose gradient with respect to
            the logits is the estimate (and with respect to the objective's parameters, the
            gradient of the samples' mean objective).
        evaluations: objective evaluations per example.
    """

    loss: torch.Tensor
    surrogate: torch.Tensor
    evaluations: int


def _attach(values: torch.Tensor, logits: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``values`` (B,) plus a zero-valued term whose gradient w.r.t. ``logits`` is ``grad``."""
    term = (grad.detach().to(logits.dtype) * logits).sum(-1)
    return values + (term - term.detach())


class UnbiasedEstimator(Estimator):
    """Base of the unbiased family: ``estimate`` replaces the threshold's backward rule.

    In the registry like every estimator (spec, hyperparameters, paper, metadata); it has no
    backward rule, so it cannot stand in a plain ``Binarize`` layer: a task must hand it the
    objective. Its forward (``__call__``) samples b = 1{u < σ(x)} in training, as ``bernoulli``
    does, so that evaluation and sampling code can treat it like the others.
    """

    family: ClassVar[str] = "unbiased"
    samples_from: ClassVar[str | None] = "bernoulli"
    stochastic: ClassVar[bool] = True
    forward_text: ClassVar[str] = (
        "training: b = 1{u < σ(x)}, u ~ U(0, 1), the objective at several samples; eval: 1{x > 0}"
    )
    area_note: ClassVar[str] = "no surrogate: the estimate comes from objective evaluations"

    def evaluations(self) -> int:
        """Objective evaluations per example and step."""
        raise NotImplementedError

    def estimate(
        self, logits: torch.Tensor, objective: Objective, generator: torch.Generator | None
    ) -> Estimate:
        """The estimate for ``logits`` (B, n) of ∇ E_b[f(b)] (see the module docstring)."""
        raise NotImplementedError

    def sample_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return uniform(x, generator)

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return bernoulli_step(x, noise)

    def backward_rule(self, g: torch.Tensor, x: torch.Tensor, noise: Any, **_: Any) -> torch.Tensor:
        raise EstimatorSpecError(
            f"{self.name} is an unbiased estimator: it needs the objective at several samples "
            "(ste_variants.unbiased.estimate_gradient), not a backward through a threshold"
        )

    def area(self) -> float | None:
        return None

    def peak(self) -> float:
        return math.nan


def _bits(u: torch.Tensor, prob: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (u < prob).to(dtype)


@register_estimator
class ReinforceLOO(UnbiasedEstimator):
    """REINFORCE with the leave-one-out baseline over K samples ("RLOO").

    With K independent samples b_k ~ Bernoulli(σ(x)) and f_k = f(b_k):
    ĝ = 1/(K − 1) · Σ_k (f_k − f̄)·(b_k − σ(x)), f̄ = (1/K) Σ_j f_j, which equals
    1/K Σ_k (f_k − mean_{j≠k} f_j)·∇_x log q(b_k) with ∇_x log q(b) = b − σ(x). Unbiased for
    every K ≥ 2; K objective evaluations per example.
    Reference: Kool, van Hoof, Welling, "Buy 4 REINFORCE Samples, Get a Baseline for Free!",
    ICLR 2019 workshop (DeepRLStructPred); the two-sample form is the ``reinforce_loo`` of
    google-research/disarm (binary/networks.py), checked against it.
    """

    name = "reinforce_loo"
    backward_text = "1/(K − 1) · Σ_k (f(b_k) − f̄)·(b_k − σ(x)),  b_k ~ Bernoulli(σ(x)) iid"
    backward_short = "Σ_k (f_k − f̄)(b_k − σ(x)) / (K − 1)"
    paper = (
        "W. Kool, H. van Hoof, M. Welling. Buy 4 REINFORCE Samples, Get a Baseline for Free! "
        "ICLR 2019 Workshop on Deep Reinforcement Learning Meets Structured Prediction"
    )
    arxiv = None
    cite = "Kool et al. 2019 (REINFORCE-LOO)"
    reference_code = "google-research/google-research disarm/binary/networks.py (reinforce_loo)"
    hyperparams = (
        Param("samples", 2, "K, independent samples per example", kind="int", low=2, high=1000),
    )

    def evaluations(self) -> int:
        return int(self._params["samples"])

    def estimate(
        self, logits: torch.Tensor, objective: Objective, generator: torch.Generator | None
    ) -> Estimate:
        k = self.evaluations()
        prob = torch.sigmoid(logits.detach().to(torch.float64))
        u = uniform(logits.expand(k, *logits.shape), generator)  # sample 1 = bernoulli's draw
        b = _bits(u, prob, logits.dtype)
        f = objective(b)  # (K, B)
        fd = f.detach().to(torch.float64)
        centred = fd - fd.mean(0, keepdim=True)
        grad = (centred.unsqueeze(-1) * (b.to(torch.float64) - prob)).sum(0) / (k - 1)
        loss = f.mean(0)
        return Estimate(loss.detach(), _attach(loss, logits, grad), k)


@register_estimator
class Arm(UnbiasedEstimator):
    """ARM, augment-REINFORCE-merge: an antithetic pair from one uniform per latent.

    u ~ U(0, 1)ⁿ, b = 1{u < σ(x)}, b̃ = 1{1 − u < σ(x)} = 1{u > 1 − σ(x)}:
    ĝ = (f(b̃) − f(b))·(u − ½). Unbiased; 2 objective evaluations per example. This is the
    antithetic form of Yin and Zhou's Theorem 1 (AR with u and with 1 − u, averaged), as the
    DisARM paper writes it (eq. 3) and its code computes it.
    Reference: Yin, Zhou, "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
    Networks", ICLR 2019, arXiv:1807.11143; checked against the ``arm`` of
    google-research/disarm (binary/networks.py).
    """

    name = "arm"
    backward_text = "(f(b̃) − f(b))·(u − ½),  b = 1{u < σ(x)}, b̃ = 1{u > 1 − σ(x)}"
    backward_short = "(f(b̃) − f(b))(u − ½)"
    paper = (
        "M. Yin, M. Zhou. ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary "
        "Networks. ICLR 2019; arXiv:1807.11143"
    )
    arxiv = "1807.11143"
    cite = "Yin & Zhou 2019 (ARM)"
    reference_code = "google-research/google-research disarm/binary/networks.py (arm)"

    def evaluations(self) -> int:
        return 2

    def estimate(
        self, logits: torch.Tensor, objective: Objective, generator: torch.Generator | None
    ) -> Estimate:
        prob = torch.sigmoid(logits.detach().to(torch.float64))
        u = uniform(logits, generator)
        b, b_tilde = _bits(u, prob, logits.dtype), _bits(1.0 - u, prob, logits.dtype)
        f = objective(torch.stack([b, b_tilde]))  # (2, B)
        fd = f.detach().to(torch.float64)
        grad = (fd[1] - fd[0]).unsqueeze(-1) * (u - 0.5)
        loss = f.mean(0)
        return Estimate(loss.detach(), _attach(loss, logits, grad), 2)


@register_estimator
class DisArm(UnbiasedEstimator):
    """DisARM: ARM's antithetic pair with the augmentation noise integrated out.

    u ~ U(0, 1)ⁿ, b = 1{u < σ(x)}, b̃ = 1{u > 1 − σ(x)}; per latent i:
    ĝ_i = ½·(f(b̃) − f(b))·(−1)^{b_i}·1{b_i ≠ b̃_i}·σ(|x_i|). Unbiased, and for one latent never
    of higher variance than ARM; 2 objective evaluations per example.
    Reference: Dong, Mnih, Tucker, "DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables", NeurIPS 2020, arXiv:2006.10680, eq. 5; checked against the ``disarm`` of
    google-research/disarm (binary/networks.py).
    """

    name = "disarm"
    backward_text = (
        "½·(f(b̃) − f(b))·(−1)^b · 1{b ≠ b̃} · σ(|x|),  b = 1{u < σ(x)}, b̃ = 1{u > 1 − σ(x)}"
    )
    backward_short = "½(f(b̃) − f(b))(−1)^b 1{b ≠ b̃} σ(|x|)"
    paper = (
        "Z. Dong, A. Mnih, G. Tucker. DisARM: An Antithetic Gradient Estimator for Binary "
        "Latent Variables. NeurIPS 2020; arXiv:2006.10680"
    )
    arxiv = "2006.10680"
    cite = "Dong et al. 2020 (DisARM)"
    reference_code = "google-research/google-research disarm/binary/networks.py (disarm)"

    def evaluations(self) -> int:
        return 2

    def estimate(
        self, logits: torch.Tensor, objective: Objective, generator: torch.Generator | None
    ) -> Estimate:
        x64 = logits.detach().to(torch.float64)
        prob = torch.sigmoid(x64)
        u = uniform(logits, generator)
        b, b_tilde = _bits(u, prob, logits.dtype), _bits(1.0 - u, prob, logits.dtype)
        f = objective(torch.stack([b, b_tilde]))  # (2, B)
        fd = f.detach().to(torch.float64)
        b64, bt64 = b.to(torch.float64), b_tilde.to(torch.float64)
        differ = (b64 - bt64).abs()
        sign = 1.0 - 2.0 * b64  # (−1)^b
        grad = 0.5 * (fd[1] - fd[0]).unsqueeze(-1) * sign * differ * torch.sigmoid(x64.abs())
        loss = f.mean(0)
        return Estimate(loss.detach(), _attach(loss, logits, grad), 2)


def evaluations_per_step(estimator: Estimator) -> int:
    """Objective evaluations per example that `estimate_gradient` makes with ``estimator``."""
    if isinstance(estimator, UnbiasedEstimator):
        return estimator.evaluations()
    return 1


def estimate_gradient(
    estimator: Estimator,
    logits: torch.Tensor,
    objective: Objective,
    generator: torch.Generator | None,
) -> Estimate:
    """One estimate of ∇_logits E_b[f(b)] with any estimator that samples Bernoulli(σ(logits)).

    A threshold estimator samples b with its own forward (training mode) and its surrogate
    backward carries the gradient (1 evaluation); an unbiased one calls ``estimate``.

    Raises:
        EstimatorSpecError: the estimator does not sample Bernoulli(σ(x)) (one line naming why).
    """
    check_samples_bernoulli(estimator)
    if isinstance(estimator, UnbiasedEstimator):
        return estimator.estimate(logits, objective, generator)
    b = estimator(logits, training=True, generator=generator)
    f = objective(b.unsqueeze(0))[0]
    return Estimate(f.detach(), f, 1)


def check_samples_bernoulli(estimator: Estimator) -> None:
    """Raise EstimatorSpecError unless ``estimator`` samples b ~ Bernoulli(σ(x)) in training."""
    law = type(estimator).samples_from
    if law == "bernoulli":
        return
    why = (
        "it does not sample (a deterministic threshold)"
        if law is None
        else f"it samples from {law.replace('_', ' ')}(x), not the encoder's Bernoulli(σ(x))"
    )
    raise EstimatorSpecError(
        f"estimator {estimator.spec!r} cannot estimate the gradient of an expectation over "
        f"Bernoulli(σ(logits)) latents: {why}"
    )
