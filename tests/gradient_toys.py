"""Small objectives with known structure for the exact-gradient tests (no training, float64)."""

from __future__ import annotations

import torch


class MlpObjective:
    """f_k(b) = ‖tanh(b W1 + c1) W2 − y_k‖²: nonlinear in b, one target row per example."""

    def __init__(self, n: int, batch: int, hidden: int = 7, out: int = 5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(n, hidden, generator=g, dtype=torch.float64)
        self.c1 = torch.randn(hidden, generator=g, dtype=torch.float64)
        self.w2 = torch.randn(hidden, out, generator=g, dtype=torch.float64)
        self.y = torch.randn(batch, out, generator=g, dtype=torch.float64)

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(b.to(torch.float64) @ self.w1 + self.c1)
        return (hidden @ self.w2 - self.y).pow(2).sum(-1)


def quadratic_toy(t: float):
    """The DisARM/REBAR toy f(b) = Σ_i (b_i − t)², per example."""

    def f(b: torch.Tensor) -> torch.Tensor:
        return (b - t).pow(2).sum(-1)

    return f


def quadratic_toy_gradient(logits: torch.Tensor, t: float) -> torch.Tensor:
    """Its exact ∂F/∂ℓ with F the batch mean: σ'(ℓ)·((1 − t)² − t²)/B = σ'(ℓ)(1 − 2t)/B."""
    s = torch.sigmoid(logits.double())
    return s * (1 - s) * (1 - 2 * t) / logits.shape[0]
