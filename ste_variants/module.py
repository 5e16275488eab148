"""``Binarize``: an estimator as an ``nn.Module`` layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ste_variants.base import Estimator
from ste_variants.registry import get_estimator

__all__ = ["Binarize"]


class Binarize(nn.Module):
    """Binarize its input with an estimator: exact 0/1 of ``x > 0`` forward, surrogate backward.

    Stochastic estimators sample in training mode (``self.training``) from ``self.generator``
    (None = torch's global RNG) and threshold in eval mode.

    Args:
        spec: Estimator spec (name, ``"name(k=v)"``, mapping or Estimator).
        generator: Random stream for stochastic estimators.
    """

    def __init__(
        self,
        spec: str | Mapping[str, Any] | Estimator = "hardtanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.estimator = get_estimator(spec)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimator(x, training=self.training, generator=self.generator)

    def set_progress(self, progress: float) -> None:
        """Forward the fraction of training done (in [0, 1]) to the estimator."""
        self.estimator.set_progress(progress)

    def extra_repr(self) -> str:
        return self.estimator.spec
