"""Deterministic estimators: forward 1{x > 0}, a fixed surrogate gradient in the backward.

Sign-native surrogates (saturated, tanh, approx_sign, swish_sign) are written in the literature
for a ±1 sign step (area 2). Each carries ``scale``. The rule: ``scale`` defaults to 0.5, which
is the chain rule for y = (sign + 1)/2 and gives area 1 like any surrogate of the 0/1 step;
``scale=1`` keeps the papers' sign-native magnitude (larq's choice). The one exception is
``saturated``, whose default stays 1 (see its docstring).
"""

from __future__ import annotations

from typing import Any

import torch

from ste_variants import functional as F
from ste_variants.base import Estimator, Param
from ste_variants.registry import register_estimator

SCALE = Param(
    "scale",
    0.5,
    "multiplies the sign-native surrogate; 0.5 gives area 1 on the 0/1 step, 1 keeps area 2",
    low=0.0,
    high=10.0,
    low_open=True,
)
# Slopes and sharpnesses stop at 1000: the peak (at most √2·10·1000 with scale, base.MAX_SURROGATE)
# stays finite in float16, whose largest number is 65504.
MAX_SLOPE = 1000.0
_SCALE_NOTE = "sign-native surrogate of area 2, times scale (default 0.5 → area 1)"


@register_estimator
class Identity(Estimator):
    """Plain straight-through estimator: the gradient passes unchanged.

    Forward: 1{x > 0}. Backward: g.
    Reference: Hinton, Coursera lectures (2012); named in Bengio, Léonard, Courville 2013,
    arXiv:1308.3432.
    """

    name = "identity"
    backward_text = "g"
    paper = (
        "Y. Bengio, N. Léonard, A. Courville. Estimating or Propagating Gradients Through "
        "Stochastic Neurons for Conditional Computation. arXiv:1308.3432, 2013 (after Hinton's "
        "2012 Coursera lectures)"
    )
    arxiv = "1308.3432"
    cite = "Hinton 2012; Bengio et al. 2013"
    area_note = "infinite (constant surrogate)"

    def backward_rule(self, g: torch.Tensor, x: torch.Tensor, noise: Any) -> torch.Tensor:
        return g.clone()

    def peak(self) -> float:
        return 1.0


@register_estimator
class Hardtanh(Estimator):
    """The reference article's STE: the gradient's value is clipped to [-1, 1].

    Forward: 1{x > 0}. Backward: clamp(g, -1, 1) = F.hardtanh(g); it does not depend on x.
    Reference: "Intuitive Explanation of Straight-Through Estimators with PyTorch
    Implementation" (2020), the article in ../shared/seed/.
    """

    name = "hardtanh"
    backward_text = "clamp(g, -1, 1)  (F.hardtanh of the gradient; independent of x)"
    paper = (
        "Intuitive Explanation of Straight-Through Estimators with PyTorch Implementation "
        "(blog article, 2020): STEFunction.backward returns F.hardtanh(grad_output)"
    )
    cite = "the reference article (2020)"
    area_note = "infinite (surrogate is 1 for |g| ≤ 1, whatever x)"

    def backward_rule(self, g: torch.Tensor, x: torch.Tensor, noise: Any) -> torch.Tensor:
        return F.hardtanh_grad(g)

    def peak(self) -> float:
        return 1.0


@register_estimator
class Saturated(Estimator):
    """Saturated (clipped) STE of BinaryNet: the gradient is cancelled where |x| > clip.

    Forward: 1{x > 0}. Backward: g · scale · 1{|x| ≤ clip}, boundary inclusive (as larq's
    SteSign). Reference: Courbariaux, Hubara, Soudry, El-Yaniv, Bengio 2016, arXiv:1602.02830.

    It is sign-native like tanh or approx_sign, but its ``scale`` defaults to 1, not 0.5: the
    plain name is one of the package's four baselines, defined as BinaryNet's rule
    g · 1{|x| ≤ 1} applied unchanged to the 0/1 step (larq's ``SteHeaviside(clip_value=1)``),
    and every recorded result and golden run uses it so. ``saturated(scale=0.5)`` is the
    area-1 version that follows the sign-native rule; under Adam the two train almost alike.
    """

    name = "saturated"
    backward_text = "g · scale·1{|x| ≤ clip}  (boundary inclusive)"
    paper = (
        "M. Courbariaux, I. Hubara, D. Soudry, R. El-Yaniv, Y. Bengio. Binarized Neural "
        "Networks: Training Deep Neural Networks with Weights and Activations Constrained to "
        "+1 or -1. arXiv:1602.02830, 2016"
    )
    arxiv = "1602.02830"
    cite = "Courbariaux, Hubara et al. 2016 (BinaryNet)"
    hyperparams = (
        Param("clip", 1.0, "half-width of the pass band", low=0.0, high=MAX_SLOPE, low_open=True),
        Param(
            "scale",
            1.0,
            "multiplies the surrogate; 1 (default) is BinaryNet's sign rule, 0.5 gives area 1",
            low=0.0,
            high=10.0,
            low_open=True,
        ),
    )
    area_note = "2·scale·clip: 2 by default (BinaryNet's sign rule, not halved; see scale)"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, clip: float, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.box(x, -clip, clip, closed=True))

    def area(self) -> float:
        return 2.0 * self._params["scale"] * self._params["clip"]

    def peak(self) -> float:
        return self._params["scale"]


@register_estimator
class Sigmoid(Estimator):
    """Sigmoid-adjusted straight-through: the derivative of σ(βx) in the backward.

    Forward: 1{x > 0}. Backward: g · β σ(βx)(1 − σ(βx)) (computed stably).
    Reference: Bengio, Léonard, Courville 2013, arXiv:1308.3432.
    """

    name = "sigmoid"
    backward_text = "g · β·σ(βx)·(1 − σ(βx))"
    paper = Identity.paper.split(" (after")[0]
    arxiv = "1308.3432"
    cite = "Bengio et al. 2013"
    hyperparams = (
        Param("beta", 1.0, "slope of the sigmoid", low=0.0, high=MAX_SLOPE, low_open=True),
    )
    area_note = "1 for every beta"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, beta: float
    ) -> torch.Tensor:
        return g * F.sigmoid_grad(x, beta)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return self._params["beta"] / 4.0


@register_estimator
class Tanh(Estimator):
    """Tanh surrogate: the derivative of tanh(βx), a smooth sign.

    Forward: 1{x > 0}. Backward: g · scale · β(1 − tanh²(βx)) (scale 0.5 by default).
    Reference: common surrogate, e.g. QKeras' binary quantizer; Coelho et al. 2021,
    "Automatic heterogeneous quantization ... (QKeras)", arXiv:2006.10159.
    """

    name = "tanh"
    backward_text = "g · scale·β·(1 − tanh²(βx))"
    paper = (
        "C. N. Coelho Jr. et al. Automatic heterogeneous quantization of deep neural networks "
        "for low-latency inference on the edge for particle detectors (QKeras). Nature Machine "
        "Intelligence 3, 2021; arXiv:2006.10159 (tanh surrogate of the binary quantizer)"
    )
    arxiv = "2006.10159"
    cite = "common surrogate (QKeras)"
    hyperparams = (
        Param("beta", 1.0, "slope of tanh", low=0.0, high=MAX_SLOPE, low_open=True),
        SCALE,
    )
    area_note = _SCALE_NOTE

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, beta: float, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.tanh_grad(x, beta))

    def area(self) -> float:
        return 2.0 * self._params["scale"]

    def peak(self) -> float:
        return self._params["scale"] * self._params["beta"]


@register_estimator
class ApproxSign(Estimator):
    """Bi-Real Net's ApproxSign: derivative of a piecewise quadratic approximation of sign.

    Forward: 1{x > 0}. Backward: g · scale · (2 − 2|x|) · 1{|x| ≤ 1}.
    Reference: Liu, Wu, Luo, Yang, Liu, Cheng, ECCV 2018, arXiv:1808.00278.
    """

    name = "approx_sign"
    backward_text = "g · scale·(2 − 2|x|)·1{|x| ≤ 1}"
    paper = (
        "Z. Liu, B. Wu, W. Luo, X. Yang, W. Liu, K.-T. Cheng. Bi-Real Net: Enhancing the "
        "Performance of 1-bit CNNs with Improved Representational Capability and Advanced "
        "Training Algorithm. ECCV 2018; arXiv:1808.00278"
    )
    arxiv = "1808.00278"
    cite = "Liu et al. 2018 (Bi-Real Net)"
    hyperparams = (SCALE,)
    area_note = _SCALE_NOTE

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.approx_sign_grad(x))

    def area(self) -> float:
        return 2.0 * self._params["scale"]

    def peak(self) -> float:
        return 2.0 * self._params["scale"]


@register_estimator
class SwishSign(Estimator):
    """BNN+'s SwishSign: derivative of 2σ(βx)(1 + βx(1 − σ(βx))) − 1.

    Forward: 1{x > 0}. Backward: g · scale · β(2 − βx·tanh(βx/2)) / (1 + cosh(βx)).
    Reference: Darabi, Belbahri, Courbariaux, Nia, "BNN+", arXiv:1812.11800, 2018.
    """

    name = "swish_sign"
    backward_text = "g · scale·β·(2 − βx·tanh(βx/2)) / (1 + cosh(βx))"
    paper = (
        "S. Darabi, M. Belbahri, M. Courbariaux, V. P. Nia. BNN+: Improved Binary Network "
        "Training. arXiv:1812.11800, 2018"
    )
    arxiv = "1812.11800"
    cite = "Darabi et al. 2018 (BNN+)"
    hyperparams = (
        Param("beta", 5.0, "slope of the swish sign", low=0.0, high=MAX_SLOPE, low_open=True),
        SCALE,
    )
    area_note = _SCALE_NOTE + "; the surrogate is negative for |βx| > 2.4 (overshoot)"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, beta: float, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.swish_sign_grad(x, beta))

    def area(self) -> float:
        return 2.0 * self._params["scale"]

    def peak(self) -> float:
        return self._params["scale"] * self._params["beta"]


_YIN = (
    "P. Yin, J. Lyu, S. Zhang, S. Osher, Y. Qi, J. Xin. Understanding Straight-Through "
    "Estimator in Training Activation Quantized Neural Nets. ICLR 2019; arXiv:1903.05662"
)


@register_estimator
class Relu(Estimator):
    """ReLU STE: the derivative of ReLU stands in for the step's.

    Forward: 1{x > 0}. Backward: g · 1{x > 0}.
    Reference: Yin et al., ICLR 2019, arXiv:1903.05662.
    """

    name = "relu"
    backward_text = "g · 1{x > 0}"
    paper = _YIN
    arxiv = "1903.05662"
    cite = "Yin et al. 2019"
    area_note = "infinite"

    def backward_rule(self, g: torch.Tensor, x: torch.Tensor, noise: Any) -> torch.Tensor:
        return g * (x > 0).to(x.dtype)

    def peak(self) -> float:
        return 1.0


@register_estimator
class ClippedRelu(Estimator):
    """Clipped-ReLU STE: the derivative of min(max(x, 0), clip).

    Forward: 1{x > 0}. Backward: g · 1{0 < x < clip} (open interval).
    Reference: Yin et al., ICLR 2019, arXiv:1903.05662.
    """

    name = "clipped_relu"
    backward_text = "g · 1{0 < x < clip}"
    paper = _YIN
    arxiv = "1903.05662"
    cite = "Yin et al. 2019"
    hyperparams = (
        Param("clip", 1.0, "upper clip of the ReLU", low=0.0, high=MAX_SLOPE, low_open=True),
    )
    area_note = "clip (default 1)"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, clip: float
    ) -> torch.Tensor:
        return g * F.box(x, 0.0, clip, closed=False)

    def area(self) -> float:
        return self._params["clip"]

    def peak(self) -> float:
        return 1.0
