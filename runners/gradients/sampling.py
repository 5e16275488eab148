"""Many independent gradient estimates of one estimator at the same parameters, drawn at once.

Any estimator that samples b ~ Bernoulli(σ(logits)) (the straight-through family and the
unbiased family, through `ste_variants.estimate_gradient`) estimates ∇_ℓ F for F the batch mean
of E[f_k(b_k)]. C estimates are drawn in one call by repeating the batch C times: the logits
become (C·B, n) and the objective is called with b of shape (S, C·B, n) reshaped to (S·C, B, n),
which the objective contract (leading dimensions are independent evaluations) allows. Each
repeat draws its own noise, so the C estimates are independent. Torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runners.gradients.exact import Objective
from ste_variants import Estimator, estimate_gradient, evaluations_per_step
from ste_variants.unbiased import check_samples_bernoulli


def repeated(objective: Objective, count: int, batch: int) -> Objective:
    """The objective of a batch repeated `count` times: b (S, count·B, n) → (S, count·B)."""

    def f(b: torch.Tensor) -> torch.Tensor:
        samples, n = b.shape[0], b.shape[-1]
        return objective(b.reshape(samples * count, batch, n)).reshape(samples, count * batch)

    return f


@dataclass
class Sampler:
    """Draws estimates of ∇_ℓ F with one estimator.

    Attributes:
        estimator: the estimator (checked to sample Bernoulli(σ(ℓ))).
        evaluations: objective evaluations per estimate and example.
    """

    estimator: Estimator

    def __post_init__(self) -> None:
        check_samples_bernoulli(self.estimator)
        # Bits 1{u < σ(ℓ)} wherever the definition allows, so estimators drawn with the same
        # seed see the same first sample (the law is the same either way).
        self.estimator.paired_noise = True
        self.evaluations = evaluations_per_step(self.estimator)

    @property
    def spec(self) -> str:
        """The estimator's canonical spec."""
        return self.estimator.spec

    def draw(
        self,
        logits: torch.Tensor,
        objective: Objective,
        count: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """`count` independent estimates of ∇_ℓ F, shape (count, B, n), float64."""
        batch, n = logits.shape
        leaf = logits.detach().repeat(count, 1).requires_grad_(True)
        out = estimate_gradient(self.estimator, leaf, repeated(objective, count, batch), generator)
        (grad,) = torch.autograd.grad(out.surrogate.sum(), leaf)
        return grad.double().view(count, batch, n) / batch
