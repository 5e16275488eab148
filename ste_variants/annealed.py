"""Annealed estimators: the surrogate sharpens as training progresses.

``set_progress(p)`` with p in [0, 1] (fraction of training done) moves the schedule;
:meth:`coefficients` turns it into the values used by the backward of the next forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ste_variants import functional as F
from ste_variants.base import Estimator, Param
from ste_variants.deterministic import MAX_SLOPE, SCALE
from ste_variants.registry import register_estimator
from ste_variants.spec import EstimatorSpecError


def linear(start: float, end: float, progress: float) -> float:
    """start + (end − start)·progress."""
    return start + (end - start) * progress


def cosine(start: float, end: float, progress: float) -> float:
    """start + (end − start)·(1 − cos(π·progress/2)): slow start, fastest at the end (ReSTE)."""
    return start + (end - start) * (1.0 - math.cos(math.pi * progress / 2.0))


def log_scale(start: float, end: float, progress: float) -> float:
    """start·(end/start)^progress: linear in log space (IR-Net's 10^{...} schedule)."""
    return start * (end / start) ** progress


def _increasing(est: Estimator, low: str, high: str) -> None:
    if est._params[low] > est._params[high]:
        raise EstimatorSpecError(
            f"{est.name}: {low} ({est._params[low]}) must not exceed {high} ({est._params[high]})"
        )


_CHUNG = (
    "J. Chung, S. Ahn, Y. Bengio. Hierarchical Multiscale Recurrent Neural Networks. "
    "ICLR 2017; arXiv:1609.01704 (slope annealing trick)"
)


@register_estimator
class SlopeAnnealed(Estimator):
    """Slope-annealed logistic sigmoid: the sigmoid-adjusted STE with a slope raised in training.

    Forward: 1{x > 0}. Backward: g · β(p)·σ(β(p)x)(1 − σ(β(p)x)),
    β(p) = beta_start + (beta_end − beta_start)·p.
    Reference: the logistic surrogate of Bengio, Léonard, Courville 2013, arXiv:1308.3432, with
    the slope-annealing schedule of Chung, Ahn, Bengio, ICLR 2017, arXiv:1609.01704. Chung et
    al. anneal the slope of the hard sigmoid, not of σ: their estimator is
    ``hard_slope_annealed``; this one is the logistic variant used in later work.
    """

    name = "slope_annealed"
    backward_text = (
        "g · β(p)·σ(β(p)x)·(1 − σ(β(p)x)),  β(p) = beta_start + (beta_end − beta_start)·p"
    )
    backward_short = "g · β·σ'(βx), β: beta_start → beta_end (linear in p)"
    paper = (
        "Y. Bengio, N. Léonard, A. Courville. Estimating or Propagating Gradients Through "
        "Stochastic Neurons for Conditional Computation. arXiv:1308.3432, 2013 (the logistic "
        "surrogate); schedule after " + _CHUNG
    )
    arxiv = "1308.3432"
    cite = "Bengio et al. 2013's σ, Chung et al. 2017's annealing"
    annealed = True
    hyperparams = (
        Param("beta_start", 1.0, "slope at progress 0", low=0.0, high=MAX_SLOPE, low_open=True),
        Param("beta_end", 5.0, "slope at progress 1", low=0.0, high=MAX_SLOPE, low_open=True),
    )
    area_note = "1 at every progress"

    def validate(self) -> None:
        _increasing(self, "beta_start", "beta_end")

    def coefficients(self) -> dict[str, Any]:
        p = self._params
        return {"beta": linear(p["beta_start"], p["beta_end"], self.progress)}

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, beta: float
    ) -> torch.Tensor:
        return g * F.sigmoid_grad(x, beta)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return self.coefficients()["beta"] / 4.0


@register_estimator
class HardSlopeAnnealed(Estimator):
    """Chung et al.'s slope annealing: the hard sigmoid's derivative, its slope raised in training.

    Forward: 1{x > 0}. Backward: g · (a(p)/2)·1{|x| ≤ 1/a(p)} (boundary inclusive), the
    derivative of the hard sigmoid max(0, min(1, (a·x + 1)/2)),
    a(p) = a_start + (a_end − a_start)·p. The paper raises a by 0.04 per epoch from 1 and caps
    it at 5 (a = min(5, 1 + 0.04·epoch)); here a follows the fraction of training done.
    Reference: Chung, Ahn, Bengio, "Hierarchical Multiscale Recurrent Neural Networks",
    ICLR 2017, arXiv:1609.01704 (section 3.3, the slope annealing trick).
    """

    name = "hard_slope_annealed"
    backward_text = (
        "g · (a(p)/2)·1{|x| ≤ 1/a(p)},  a(p) = a_start + (a_end − a_start)·p  (boundary inclusive)"
    )
    backward_short = "g · (a/2)·1{|a·x| ≤ 1}, a: a_start → a_end (linear in p)"
    paper = _CHUNG
    arxiv = "1609.01704"
    cite = "Chung et al. 2017"
    annealed = True
    hyperparams = (
        Param("a_start", 1.0, "slope of the hard sigmoid at progress 0", low=0.01, high=MAX_SLOPE),
        Param("a_end", 5.0, "slope of the hard sigmoid at progress 1", low=0.01, high=MAX_SLOPE),
    )
    area_note = "1 at every progress (height a/2 on a band of width 2/a)"

    def validate(self) -> None:
        _increasing(self, "a_start", "a_end")

    def coefficients(self) -> dict[str, Any]:
        p = self._params
        return {"a": linear(p["a_start"], p["a_end"], self.progress)}

    def backward_rule(self, g: torch.Tensor, x: torch.Tensor, noise: Any, a: float) -> torch.Tensor:
        return g * F.hard_sigmoid_grad(x, a)

    def area(self) -> float:
        return 1.0

    def peak(self) -> float:
        return self.coefficients()["a"] / 2.0


# k = 1/t below t = 1: a floor on t bounds the area 2k (and k·t stays finite).
T_LOW = 0.001


class _LogScheduleKT(Estimator):
    """Shared schedule of IR-Net's EDE and RBNN (not registered itself).

    t(p) = t_min·(t_max/t_min)^p on a log scale, k = max(1/t, 1); both surrogates integrate to
    2·scale·k, so the area follows the schedule.
    """

    def validate(self) -> None:
        _increasing(self, "t_min", "t_max")

    def coefficients(self) -> dict[str, Any]:
        p = self._params
        t = log_scale(p["t_min"], p["t_max"], self.progress)
        return {"t": t, "k": max(1.0 / t, 1.0), "scale": p["scale"]}

    def area(self) -> float:
        c = self.coefficients()
        return 2.0 * c["scale"] * c["k"]

    def peak(self) -> float:
        c = self.coefficients()
        return c["scale"] * c["k"] * c["t"] * self._peak_factor

    _peak_factor = 1.0  # the surrogate's value at 0 over k·t


@register_estimator
class Ede(_LogScheduleKT):
    """IR-Net's Error Decay Estimator: k·tanh(t x) with t annealed from t_min to t_max.

    Forward: 1{x > 0}. Backward: g · scale · k·t·(1 − tanh²(t x)),
    t(p) = t_min·(t_max/t_min)^p (log scale), k = max(1/t, 1).
    Reference: Qin, Gong, Liu, Shen, Wei, Yu, Song, "Forward and Backward Information
    Retention for Accurate Binary Neural Networks", CVPR 2020, arXiv:1909.10788.
    """

    name = "ede"
    backward_text = "g · scale·k·t·(1 − tanh²(t·x)),  t = t_min·(t_max/t_min)^p,  k = max(1/t, 1)"
    backward_short = "g · scale·k·t·(1 − tanh²(t·x)), t: t_min → t_max (log), k = max(1/t, 1)"
    paper = (
        "H. Qin, R. Gong, X. Liu, M. Shen, Z. Wei, F. Yu, J. Song. Forward and Backward "
        "Information Retention for Accurate Binary Neural Networks (IR-Net). CVPR 2020; "
        "arXiv:1909.10788"
    )
    arxiv = "1909.10788"
    cite = "Qin et al. 2020 (IR-Net)"
    annealed = True
    hyperparams = (
        Param("t_min", 0.1, "t at progress 0", low=T_LOW, high=MAX_SLOPE),
        Param("t_max", 10.0, "t at progress 1", low=T_LOW, high=MAX_SLOPE),
        SCALE,
    )
    area_note = "scale·2k: 2·scale/t while t < 1 (10 at p = 0 by default), 2·scale once t ≥ 1"

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, t: float, k: float, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.ede_grad(x, t, k))


@register_estimator
class Rbnn(_LogScheduleKT):
    """RBNN's training-aware approximation of sign: a quadratic spline sharpened over training.

    Forward: 1{x > 0}. Backward: g · scale · k·(√2·t − t²|x|)·1{|x| < √2/t},
    t(p) = t_min·(t_max/t_min)^p (log scale), k = max(1/t, 1).
    Reference: Lin, Ji, Xu, Zhang, Wang, Wu, Huang, Lin, "Rotated Binary Neural Network",
    NeurIPS 2020, arXiv:2009.13055.
    """

    name = "rbnn"
    backward_text = (
        "g · scale·k·(√2·t − t²·|x|)·1{|x| < √2/t},  t = t_min·(t_max/t_min)^p,  k = max(1/t, 1)"
    )
    backward_short = "g · scale·k·max(√2·t − t²|x|, 0), t: t_min → t_max (log), k = max(1/t, 1)"
    paper = (
        "M. Lin, R. Ji, Z. Xu, B. Zhang, Y. Wang, Y. Wu, F. Huang, C.-W. Lin. Rotated Binary "
        "Neural Network. NeurIPS 2020; arXiv:2009.13055"
    )
    arxiv = "2009.13055"
    cite = "Lin et al. 2020 (RBNN)"
    annealed = True
    hyperparams = (
        Param("t_min", 0.01, "t at progress 0", low=T_LOW, high=MAX_SLOPE),
        Param("t_max", 10.0, "t at progress 1", low=T_LOW, high=MAX_SLOPE),
        SCALE,
    )
    area_note = "scale·2k: 2·scale/t while t < 1, 2·scale once t ≥ 1"
    _peak_factor = math.sqrt(2.0)

    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: Any, t: float, k: float, scale: float
    ) -> torch.Tensor:
        return g * (scale * F.rbnn_grad(x, t, k))


@register_estimator
class Reste(Estimator):
    """ReSTE: the derivative of the power function sign(x)|x|^{1/o}, o raised during training.

    Forward: 1{x > 0}. Backward: g · scale · s(x) · 1{|x| ≤ threshold} with
    s(x) = (1/o)|x|^{(1−o)/o} for |x| > interval and the chord slope interval^{1/o}/interval for
    |x| ≤ interval; o(p) = o_start + (o_end − o_start)·(1 − cos(πp/2)), as in the authors' code
    (github.com/DravenALG/ReSTE). At o = 1 the surrogate is flat: s = 1 on |x| ≤ threshold, so
    with the defaults the backward at p = 0 is 0.5·1{|x| ≤ 1.5}, i.e.
    ``saturated(clip=1.5, scale=0.5)``, not the plain ``saturated``.
    Reference: Wu, Zheng, Liu, Zheng, "Estimator Meets Equilibrium Perspective: A Rectified
    Straight Through Estimator for Binary Neural Networks Training", ICCV 2023, arXiv:2308.06689.
    """

    name = "reste"
    backward_text = (
        "g · scale·(1/o)·|x|^((1−o)/o)·1{interval < |x| ≤ threshold}"
        " + g · scale·interval^(1/o)/interval·1{|x| ≤ interval},"
        "  o = o_start + (o_end − o_start)·(1 − cos(π·p/2))"
    )
    backward_short = (
        "g · scale·(1/o)|x|^((1−o)/o) on |x| ≤ threshold (chord near 0), o: 1 → 3 (cosine)"
    )
    paper = (
        "X.-M. Wu, D. Zheng, Z. Liu, W.-S. Zheng. Estimator Meets Equilibrium Perspective: A "
        "Rectified Straight Through Estimator for Binary Neural Networks Training. ICCV 2023; "
        "arXiv:2308.06689"
    )
    arxiv = "2308.06689"
    cite = "Wu et al. 2023 (ReSTE)"
    annealed = True
    hyperparams = (
        Param("threshold", 1.5, "gradient is 0 beyond |x| > threshold", low=0.01, high=100.0),
        Param(
            "o_start",
            1.0,
            "power o at progress 0 (1: flat on |x| ≤ threshold)",
            low=1.0,
            high=100.0,
        ),
        Param("o_end", 3.0, "power o at progress 1", low=1.0, high=100.0),
        # The chord slope interval^(1/o)/interval grows as interval shrinks: 933 at 0.001, o = 100.
        Param("interval", 0.1, "half-width of the chord near 0", low=0.001, high=1.0),
        SCALE,
    )
    area_note = "scale·2·threshold^(1/o) (sign-native 2·t^(1/o)); 1.5 at p = 0 by default"

    def validate(self) -> None:
        _increasing(self, "o_start", "o_end")
        if self._params["interval"] >= self._params["threshold"]:
            raise EstimatorSpecError(
                f"reste: interval ({self._params['interval']}) must be below threshold "
                f"({self._params['threshold']})"
            )

    def coefficients(self) -> dict[str, Any]:
        p = self._params
        return {
            "threshold": p["threshold"],
            "power": cosine(p["o_start"], p["o_end"], self.progress),
            "interval": p["interval"],
            "scale": p["scale"],
        }

    def backward_rule(
        self,
        g: torch.Tensor,
        x: torch.Tensor,
        noise: Any,
        threshold: float,
        power: float,
        interval: float,
        scale: float,
    ) -> torch.Tensor:
        return g * (scale * F.reste_grad(x, threshold, power, interval))

    def area(self) -> float:
        c = self.coefficients()
        return 2.0 * c["scale"] * math.pow(c["threshold"], 1.0 / c["power"])

    def peak(self) -> float:
        c = self.coefficients()  # the chord slope: the power function's slope only falls beyond
        return c["scale"] * math.pow(c["interval"], 1.0 / c["power"]) / c["interval"]
