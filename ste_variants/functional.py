"""The math of each backward rule, as small pure functions of tensors.

Each returns the surrogate derivative ``s(x)`` (so that dL/dx = g · s(x)), except
:func:`hardtanh_grad`, which acts on g itself. Everything is written so that a finite x of
any size gives a finite result (no ``inf * 0`` or ``inf / inf``).
"""

from __future__ import annotations

import math

import torch

# exp(-1000) underflows to 0 in float64, so every surrogate below is exactly 0 beyond this |z|;
# clamping there keeps huge x (or beta * x overflowing to inf) from making inf * 0 = NaN.
_Z_MAX = 1000.0


def _finite(z: torch.Tensor) -> torch.Tensor:
    return z.clamp(-_Z_MAX, _Z_MAX)


def sigmoid_prime(z: torch.Tensor) -> torch.Tensor:
    """σ'(z) = σ(z)(1 − σ(z)) in the stable form e^{-|z|} / (1 + e^{-|z|})²."""
    e = torch.exp(-_finite(z).abs())
    return e / (1.0 + e) ** 2


def sech2(z: torch.Tensor) -> torch.Tensor:
    """1 − tanh²(z) = 4 σ'(2z), stable for any z."""
    return 4.0 * sigmoid_prime(2.0 * _finite(z))


def hardtanh_grad(g: torch.Tensor) -> torch.Tensor:
    """The reference article's backward: clamp(g, -1, 1), independent of x."""
    return g.clamp(-1.0, 1.0)


def box(x: torch.Tensor, low: float, high: float, *, closed: bool) -> torch.Tensor:
    """Indicator of [low, high] (closed) or (low, high) (open), in x's dtype."""
    inside = (x >= low) & (x <= high) if closed else (x > low) & (x < high)
    return inside.to(x.dtype)


def sigmoid_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """β σ'(βx): derivative of σ(βx); area 1."""
    return beta * sigmoid_prime(beta * x)


def tanh_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """β (1 − tanh²(βx)): derivative of tanh(βx); area 2 (sign-native)."""
    return beta * sech2(beta * x)


def approx_sign_grad(x: torch.Tensor) -> torch.Tensor:
    """(2 − 2|x|) · 1{|x| ≤ 1}: derivative of Bi-Real Net's piecewise quadratic; area 2."""
    # 2 − 2|x| ≥ 0 exactly on |x| ≤ 1, so the clamp is the indicator (and -inf clamps to 0).
    return (2.0 - 2.0 * x.abs()).clamp_min(0.0)


def swish_sign_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """β(2 − βx·tanh(βx/2)) / (1 + cosh(βx)): BNN+'s SwishSign derivative; area 2.

    Written as 2β(2 − z·tanh(z/2))·σ'(z) with z = βx, since 1 + cosh(z) = 1 / (2σ'(z)).
    """
    z = _finite(beta * x)
    bracket = 2.0 - z * torch.tanh(z / 2.0)
    if z.dtype == torch.float16:  # 2β·bracket overflows float16 (max 65504): σ'(z) first
        return (2.0 * beta) * (bracket * sigmoid_prime(z))
    return 2.0 * beta * bracket * sigmoid_prime(z)


def ede_grad(x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """k t (1 − tanh²(t x)): derivative of IR-Net's k·tanh(t x); area 2k."""
    return k * t * sech2(t * x)


def rbnn_grad(x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """k (√2 t − t²|x|) · 1{|x| < √2/t}: RBNN's training-aware approximation; area 2k."""
    slope = k * (math.sqrt(2.0) * t - t * t * x.abs())
    return slope.clamp_min(0.0) * (x.abs() < math.sqrt(2.0) / t).to(x.dtype)


def reste_grad(x: torch.Tensor, threshold: float, power: float, interval: float) -> torch.Tensor:
    """ReSTE: (1/o)|x|^{(1−o)/o} for interval < |x| ≤ t, secant slope interval^{1/o}/interval inside.

    The power function sign(x)|x|^{1/o} has an infinite slope at 0; ReSTE replaces it on
    |x| ≤ interval by the slope of the chord from 0 to ±interval, and cuts it to 0 beyond t.
    """
    a = x.abs()
    # Evaluate the power on a safe copy: |x| ≤ interval would give huge/inf values that are discarded.
    safe = torch.where(a > interval, a, torch.full_like(a, interval))
    outer = (1.0 / power) * safe.pow((1.0 - power) / power)
    inner = torch.full_like(a, interval ** (1.0 / power) / interval)
    grad = torch.where(a <= interval, inner, outer)
    return grad * (a <= threshold).to(x.dtype)


def atan_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """(α/2) / (1 + (π α x / 2)²): derivative of arctan(π α x / 2)/π + 1/2; area 1."""
    u = math.pi / 2.0 * alpha * x  # u² may overflow to inf: 1/inf = 0, still exact
    return (alpha / 2.0) / (1.0 + u * u)


def superspike_grad(x: torch.Tensor, beta: float) -> torch.Tensor:
    """1 / (1 + β|x|)²: the fast-sigmoid derivative of SuperSpike; area 2/β."""
    return 1.0 / (1.0 + beta * x.abs()) ** 2


def hard_sigmoid_grad(x: torch.Tensor, a: float) -> torch.Tensor:
    """(a/2)·1{|x| ≤ 1/a}: derivative of the hard sigmoid max(0, min(1, (a·x + 1)/2)); area 1."""
    return (a / 2.0) * box(x, -1.0 / a, 1.0 / a, closed=True)


def reinmax_grad(x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """2·s·(1 − s) − ½·σ'(x), s = (y + σ(x/τ))/2: ReinMax's backward for two classes.

    1 − s is formed as (1 − y + σ(−x/τ))/2, not by subtraction, so that it keeps its relative
    precision where s is close to 1.
    """
    z = _finite(x / tau)
    s = (y + torch.sigmoid(z)) / 2.0
    r = (1.0 - y + torch.sigmoid(-z)) / 2.0
    return 2.0 * s * r - 0.5 * sigmoid_prime(x)


def gapped_grad(x: torch.Tensor, y: torch.Tensor, tau: float, gap: float) -> torch.Tensor:
    """σ'(d/τ)/τ with the gapped logit d = max(x, gap) where y = 1, min(x, −gap) where y = 0."""
    d = torch.where(y > 0, x.clamp_min(gap), x.clamp_max(-gap))
    return sigmoid_prime(d / tau) / tau


def conditional_logistic(x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z = x + L with L ~ Logistic(0, 1) conditioned on 1{z > 0} = y, by inversion from u.

    With w = x (y = 1) or −x (y = 0), |z| = w + M and M = log((1 − u) + u·σ(−w)) − log(u) −
    log σ(w) is L given L > −w: its survival σ(−M) is u times that of the bound, σ(w). Every
    term is formed without cancellation, so the tails stay exact. Returns |z| (the sign is the
    sample's); u broadcasts over leading sample dimensions.
    """
    w = torch.where(y > 0, x, -x)
    m = (
        torch.log((1.0 - u) + u * torch.sigmoid(-w))
        - torch.log(u)
        - torch.nn.functional.logsigmoid(w)
    )
    return w + m
