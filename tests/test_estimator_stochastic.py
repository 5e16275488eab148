"""The estimators with a sampled forward: right in expectation, seeded, and checked in training
mode against their papers' algorithms written out for two classes (logits (x, 0)) with autograd.

The noise is the documented protocol: float64 uniforms from the given generator, open at 0;
row 0 draws y = 1{u < P(y = 1 | x)}, and gumbel_rao's rows 1..K its conditional noise.
"""

from __future__ import annotations

import pytest
import torch

from ste_variants import describe, get_estimator, list_estimators

SEED = 9
# Sampling thresholds (a backward rule); the unbiased family has tests/test_unbiased.py.
STOCHASTIC = [
    n
    for n in list_estimators()
    if describe(n)["stochastic"] and describe(n)["family"] == "threshold"
]


def dsig(z):
    return torch.sigmoid(z) * torch.sigmoid(-z)


def uniforms(*shape: int, seed: int = SEED) -> torch.Tensor:
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return u.clamp_min(torch.finfo(torch.float64).tiny)


def xs(n: int = 4000) -> torch.Tensor:
    x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    return torch.cat([x, torch.tensor([0.0, -0.0, 1.0, -1.0, 40.0, -40.0], dtype=torch.float64)])


def train_step(spec: str, x: torch.Tensor, g: torch.Tensor | None = None):
    xr = x.clone().requires_grad_(True)
    y = get_estimator(spec)(xr, training=True, generator=torch.Generator().manual_seed(SEED))
    (dx,) = torch.autograd.grad(y, xr, torch.ones_like(x) if g is None else g)
    return y, dx


def two_class(x: torch.Tensor) -> torch.Tensor:
    """Logits (x, 0): the first class is this package's y = 1."""
    return torch.stack([x, torch.zeros_like(x)], dim=-1)


@pytest.mark.parametrize("tau", [1.0, 2.0, 10.0])
def test_reinmax_is_the_papers_algorithm_for_two_classes(tau):
    x = xs()
    y, dx = train_step(f"reinmax(tau={tau})", x)
    assert torch.equal(y, (uniforms(len(x)) < torch.sigmoid(x)).double())
    # ReinMax as written for K classes: D one-hot, π0 = softmax(θ),
    # π1 = (D + softmax(θ/τ))/2 with softmax(θ)'s gradient at π1, π2 = 2π1 − π0/2.
    theta = two_class(x).requires_grad_(True)
    d = torch.stack([y, 1 - y], dim=-1)
    pi0 = theta.softmax(-1)
    pi1 = (d + (theta / tau).softmax(-1)) / 2
    pi1 = ((pi1.log() - theta).detach() + theta).softmax(-1)
    pi2 = 2 * pi1 - pi0 / 2
    out = pi2 - pi2.detach() + d
    (dtheta,) = torch.autograd.grad(out[:, 0], theta, torch.ones_like(x))
    torch.testing.assert_close(dx, dtheta[:, 0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out[:, 0].detach(), y)


def test_reinmax_expected_backward_is_sigmoid_adjusted_at_tau_1():
    # E_y[2s(1 − s)] − σ'/2 = σ'(x) for τ = 1: average the exact two outcomes.
    x = torch.linspace(-6, 6, 121, dtype=torch.float64)
    p = torch.sigmoid(x)
    est = get_estimator("reinmax")
    ones = torch.ones(x.shape, dtype=torch.float64)
    grad_1 = est.backward_rule(ones, x, torch.zeros_like(x), tau=1.0)  # u = 0 < σ(x): y = 1
    grad_0 = est.backward_rule(ones, x, torch.ones_like(x), tau=1.0)  # u = 1: y = 0
    torch.testing.assert_close(p * grad_1 + (1 - p) * grad_0, p * (1 - p))


@pytest.mark.parametrize(("tau", "gap"), [(1.0, 1.0), (0.5, 0.5), (2.0, 0.0), (1.0, 3.0)])
def test_gapped_st_is_the_authors_mover_for_two_classes(tau, gap):
    x = xs()
    y, dx = train_step(f"gapped_st(tau={tau}, gap={gap})", x)
    assert torch.equal(y, (uniforms(len(x)) < torch.sigmoid(x)).double())
    # GST with a fixed gap: raise the sampled logit to the max, lower the others to at most
    # max − gap (a detached shift), then straight-through softmax((θ + shift)/τ).
    theta = two_class(x).requires_grad_(True)
    d = torch.stack([y, 1 - y], dim=-1)
    base = theta.detach()
    top = base.max(-1, keepdim=True).values
    shift = (top - base) * d - ((base - top + gap).clamp_min(0) * (1 - d))
    prob = ((theta + shift) / tau).softmax(-1)
    out = d - prob.detach() + prob
    (dtheta,) = torch.autograd.grad(out[:, 0], theta, torch.ones_like(x))
    torch.testing.assert_close(dx, dtheta[:, 0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("tau", "k"), [(1.0, 10), (0.5, 3)])
def test_gumbel_rao_averages_conditioned_logistic_noise(tau, k):
    x = xs()
    y, dx = train_step(f"gumbel_rao(tau={tau}, samples={k})", x)
    u = uniforms(k + 1, len(x))
    assert torch.equal(y, (u[0] < torch.sigmoid(x)).double())
    # L given x + L > 0 (y = 1) or x + L ≤ 0 (y = 0), with u the probability of a value
    # farther from the threshold: L = logit(v), v = 1 − u·σ(x) or u·σ(−x).
    v = torch.where(y > 0, 1 - u[1:] * torch.sigmoid(x), u[1:] * torch.sigmoid(-x))
    z = x + torch.log(v) - torch.log1p(-v)
    assert ((z > 0) == (y > 0)).all()
    want = (torch.sigmoid(z / tau) * torch.sigmoid(-z / tau) / tau).mean(0)
    # The naive inversion loses the far tails; compare where it is exact enough.
    near = x.abs() < 8
    torch.testing.assert_close(dx[near], want[near], rtol=1e-7, atol=1e-10)
    assert torch.isfinite(dx).all()


def test_gumbel_rao_is_unbiased_for_the_st_gumbel_backward():
    # Rao-Blackwellisation keeps the mean: E[gumbel_rao] = E[gumbel] at the same x and τ.
    x = torch.full((200_000,), 0.7, dtype=torch.float64)
    _, rao = train_step("gumbel_rao(tau=0.5, samples=1)", x)
    _, plain = train_step("gumbel(tau=0.5)", x)
    assert rao.mean().item() == pytest.approx(plain.mean().item(), rel=0.02)
    assert rao.var().item() < plain.var().item()


def test_binarynet_stochastic_samples_the_hard_sigmoid():
    x = xs()
    y, dx = train_step("binarynet_stochastic", x)
    p = ((x + 1) / 2).clamp(0, 1)
    assert torch.equal(y, (uniforms(len(x)) < p).double())
    assert torch.equal(dx, torch.where(x.abs() <= 1, 0.5, 0.0).double())
    assert set(y[x >= 1].tolist()) == {1.0} and set(y[x <= -1].tolist()) == {0.0}


# P(forward = 1 | x) in training mode.
EXPECTED_PROB = {
    "bernoulli": torch.sigmoid,
    "gumbel": torch.sigmoid,
    "binarynet_stochastic": lambda x: ((x + 1) / 2).clamp(0, 1),
    "reinmax": torch.sigmoid,
    "gapped_st": torch.sigmoid,
    "gumbel_rao": torch.sigmoid,
}


def test_every_stochastic_estimator_has_an_expectation():
    assert set(STOCHASTIC) <= set(EXPECTED_PROB)
    assert {"bernoulli", "gumbel"} <= set(STOCHASTIC)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_right_in_expectation(name):
    est = get_estimator(name)
    levels = torch.tensor([-3.0, -1.0, -0.3, 0.0, 0.4, 1.0, 2.5])
    n = 20_000
    x = levels.repeat(n, 1)
    y = est(x, training=True, generator=torch.Generator().manual_seed(7))
    mean = y.mean(0)
    p = EXPECTED_PROB[name](levels)
    bound = 5 * torch.sqrt(p * (1 - p) / n)  # 5 sigma
    assert ((mean - p).abs() <= bound).all(), (mean, p)
    # eval mode thresholds deterministically
    assert torch.equal(est(x, training=False), (x > 0).float())


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_seeded(name):
    est = get_estimator(name)
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    a = est(x, generator=torch.Generator().manual_seed(11))
    b = est(x, generator=torch.Generator().manual_seed(11))
    c = est(x, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Same seed gives the same sample whatever the input dtype.
    d = est(x.double(), generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.double(), d)
    # None uses torch's global RNG.
    torch.manual_seed(5)
    e = est(x)
    torch.manual_seed(5)
    assert torch.equal(e, est(x))


def test_gumbel_backward_uses_the_forward_noise():
    est = get_estimator("gumbel(tau=0.5)")
    x = torch.randn(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xr = x.clone().requires_grad_(True)
    y = est(xr, training=True, generator=torch.Generator().manual_seed(9))
    (dx,) = torch.autograd.grad(y, xr, torch.ones_like(x))
    # The noise is Logistic(0, 1) from float64 uniforms of the generator (documented protocol).
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    u = u.clamp_min(torch.finfo(torch.float64).tiny)
    noise = torch.log(u) - torch.log1p(-u)
    assert torch.equal(y, (x + noise > 0).double())
    torch.testing.assert_close(dx, dsig((x + noise) / 0.5) / 0.5)
    # ... which differs from the noise-free surrogate
    assert not torch.allclose(dx, est.surrogate(x))
