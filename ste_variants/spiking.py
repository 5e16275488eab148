"""Surrogate gradients from spiking neural networks, where the spike is the same 0/1 step.

These are Heaviside-native (no halving needed): the forward is the spike 1{x > 0} of a
membrane potential x measured from the threshold.
"""

from __future__ import annotations

from typing import Any

import torch

from ste_variants import functional as F
from ste_variants.base import Estimator, Param
from ste_variants.deterministic import MAX_SLOPE
from ste_variants.registry import register_estimator


@register_estimator
class Atan(Estimator):
    """Arctan surrogate: the derivative of arctan(π α x / 2)/π + 1/2.

    Forward: 1{x > 0}. Backward: g · (α/2) / (1 + (π α x / 2)²).
    Reference: Fang, Yu, Chen, Masquelier, Huang, Tian, "Incorporating Learnable Membrane
    Time Constant to Enhance Learning of Spiking Neural Networks", ICCV 2021,
    arXiv:2007.05785 (SpikingJelly's ATan surrogate).
    """

    name = "atan"
    backward_text = "g · (α/2) / (1 + (π·α·x/2)²)"
    paper = (
        "W. Fang, Z. Yu, Y. Chen, T. Masquelier, T. Huang, Y. Tian. Incorporating Learnable "
        "Membrane Time Constant to Enhance Learning of Spiking Neural Networks. ICCV 2021; "
        "arXiv:2007.05785"
    )
    arxiv = "2007.05785"
    cite = "Fang et al. 2021 (SpikingJelly ATan)"
    hyperparams = (
        Param("alpha", 2.0, "sharpness (peak value α/2)", low=0.0, high=MAX_SLOPE, low_open=True),
    )
    area_note = "1 for every alpha"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, alpha: float
    ) -> torch.Tensor:
        return g * F.atan_grad(x, alpha)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return self._params["alpha"] / 2.0


@register_estimator
class SuperSpike(Estimator):
    """SuperSpike's fast-sigmoid surrogate: the derivative of x / (1 + β|x|), up to scale.

    Forward: 1{x > 0}. Backward: g / (1 + β|x|)².
    Reference: Zenke, Ganguli, "SuperSpike: Supervised Learning in Multilayer Spiking Neural
    Networks", Neural Computation 30(6), 2018, arXiv:1705.11146.
    """

    name = "superspike"
    backward_text = "g / (1 + β·|x|)²"
    paper = (
        "F. Zenke, S. Ganguli. SuperSpike: Supervised Learning in Multilayer Spiking Neural "
        "Networks. Neural Computation 30(6):1514-1541, 2018; arXiv:1705.11146"
    )
    arxiv = "1705.11146"
    cite = "Zenke & Ganguli 2018 (SuperSpike)"
    hyperparams = (
        Param("beta", 10.0, "sharpness; peak value is 1", low=0.0, high=MAX_SLOPE, low_open=True),
    )
    area_note = "2/β (peak 1 as in the paper, not normalised): 0.2 by default"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, beta: float
    ) -> torch.Tensor:
        return g * F.superspike_grad(x, beta)

    def area(self) -> float:
        return 2.0 / self._params["beta"]

    def peak(self) -> float:
        return 1.0
