"""The unbiased family against exact gradients on the DisARM/REBAR toy f(b) = Σ_i (b_i − t)².

E_b[f(b)] for b_i ~ Bernoulli(σ(φ_i)) has the exact gradient σ'(φ_i)·((1 − t)² − t²) =
σ'(φ_i)(1 − 2t). Each unbiased estimator's mean over many draws must match it (a z-test per
coordinate), its variance must match the closed form (one latent), and the same z-test must
reject a biased estimator (straight-through), so the test can fail.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ste_variants import EstimatorSpecError, describe, estimate_gradient, get_estimator

UNBIASED = ["reinforce_loo", "reinforce_loo(samples=4)", "arm", "disarm"]
Z_LIMIT = 5.0  # per coordinate; a biased estimator below lands at |z| in the hundreds


def toy(t: float):
    return lambda b: ((b - t) ** 2).sum(-1)


def draws(spec: str, phi: torch.Tensor, t: float, n: int, seed: int = 0) -> torch.Tensor:
    """n independent estimates of ∇_φ E[f] (n, d) in float64: the batch holds n copies of φ."""
    logits = phi.to(torch.float64).expand(n, -1).clone().requires_grad_(True)
    out = estimate_gradient(
        get_estimator(spec), logits, toy(t), torch.Generator().manual_seed(seed)
    )
    (grad,) = torch.autograd.grad(out.surrogate.sum(), logits)
    return grad


def exact(phi: torch.Tensor, t: float) -> torch.Tensor:
    s = torch.sigmoid(phi.to(torch.float64))
    return s * (1 - s) * (1 - 2 * t)


def z_scores(sample: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(mean − truth) / standard error, per coordinate; a constant estimate (DisARM with one
    latent at φ = 0 has no variance) scores 0 when it equals the truth, inf otherwise."""
    n = sample.shape[0]
    diff = sample.mean(0) - truth
    error = sample.std(0) / math.sqrt(n)
    exact_hit = diff.abs() <= 1e-12 * truth.abs().clamp_min(1e-300)
    return torch.where(error > 0, diff / error, torch.where(exact_hit, 0.0, math.inf))


@pytest.mark.parametrize("spec", UNBIASED)
@pytest.mark.parametrize("t", [0.49, pytest.param(0.499, marks=pytest.mark.slow)])
def test_mean_is_the_exact_gradient_one_latent(spec, t):
    phi = torch.tensor([0.0, 0.7, -1.3, 2.5])  # four separate one-latent problems
    for column in range(4):
        sample = draws(spec, phi[column : column + 1], t, 40_000, seed=column)
        z = z_scores(sample, exact(phi[column : column + 1], t))
        assert z.abs().max() < Z_LIMIT, (spec, float(phi[column]), z)


@pytest.mark.parametrize("spec", UNBIASED)
def test_mean_is_the_exact_gradient_many_latents(spec):
    phi = torch.linspace(-2.0, 2.0, 12)
    sample = draws(spec, phi, 0.45, 40_000)
    assert z_scores(sample, exact(phi, 0.45)).abs().max() < Z_LIMIT


@pytest.mark.parametrize("spec", ["bernoulli", "gumbel", "gapped_st"])
def test_the_same_z_test_rejects_biased_estimators(spec):
    phi = torch.linspace(-2.0, 2.0, 12)
    sample = draws(spec, phi, 0.45, 40_000)
    assert z_scores(sample, exact(phi, 0.45)).abs().max() > 20 * Z_LIMIT


def test_reinmax_is_unbiased_on_this_quadratic_toy():
    """ReinMax is second-order accurate (Liu et al. 2023): for a quadratic f its expected
    backward is exactly σ'(φ)(f(1) − f(0)), so the toy cannot tell it from an unbiased one."""
    phi = torch.linspace(-2.0, 2.0, 12)
    sample = draws("reinmax", phi, 0.45, 40_000)
    assert z_scores(sample, exact(phi, 0.45)).abs().max() < Z_LIMIT


def _variance_disarm(phi: float, df: float) -> float:
    a = 1 / (1 + math.exp(-abs(phi)))  # σ(|φ|)
    return df**2 * a**2 * (1 - a) * (a - 0.5)


def _variance_arm(phi: float, df: float) -> float:
    a = 1 / (1 + math.exp(-abs(phi)))
    mean = a * (1 - a) * df
    return df**2 * (1 / 12 - (2 / 3) * (a - 0.5) ** 3) - mean**2


def _variance_rloo(phi: float, t: float, k: int) -> float:
    """Exact, by enumerating the 2^K outcomes of the K samples."""
    s = 1 / (1 + math.exp(-phi))
    first = second = 0.0
    for bits in itertools.product((0, 1), repeat=k):
        p = math.prod(s if b else 1 - s for b in bits)
        f = [(b - t) ** 2 for b in bits]
        mean = sum(f) / k
        g = sum((fk - mean) * (b - s) for fk, b in zip(f, bits, strict=True)) / (k - 1)
        first, second = first + p * g, second + p * g * g
    return second - first**2


@pytest.mark.parametrize("phi", [0.3, pytest.param(-1.1, marks=pytest.mark.slow), 2.0])
@pytest.mark.parametrize("spec", ["disarm", "arm", "reinforce_loo", "reinforce_loo(samples=3)"])
def test_variance_is_the_closed_form_one_latent(spec, phi):
    t = 0.49
    df = (1 - t) ** 2 - t**2
    if spec == "disarm":
        truth = _variance_disarm(phi, df)
    elif spec == "arm":
        truth = _variance_arm(phi, df)
    else:
        truth = _variance_rloo(phi, t, get_estimator(spec).params["samples"])
    sample = draws(spec, torch.tensor([phi]), t, 100_000)[:, 0]
    centred = sample - sample.mean()
    variance = float(centred.pow(2).mean())
    spread = float(centred.pow(2).std()) / math.sqrt(sample.shape[0])
    assert abs(variance - truth) < 5 * spread + 1e-12, (variance, truth)


def test_disarm_variance_is_at_most_arms_for_one_latent():
    df = 0.02
    for phi in (-3.0, -0.5, 0.0, 0.4, 2.0):
        assert _variance_disarm(phi, df) <= _variance_arm(phi, df) + 1e-15


def test_samplers_of_one_law_draw_the_same_bits():
    logits = torch.linspace(-3, 3, 40).reshape(2, 20)
    seen: dict[str, torch.Tensor] = {}

    def recorder(name):
        def objective(b):
            seen.setdefault(name, b[0].detach().clone())
            return b.sum(-1)

        return objective

    for spec in ["bernoulli", "reinmax", "gapped_st", "gumbel_rao", "gumbel", *UNBIASED]:
        est = get_estimator(spec)
        est.paired_noise = True
        estimate_gradient(est, logits, recorder(spec), torch.Generator().manual_seed(7))
    first = seen.pop("bernoulli")
    for spec, bits in seen.items():
        assert torch.equal(bits, first), spec


def test_plain_gumbel_draws_the_antithetic_bits():
    logits = torch.linspace(-3, 3, 60)
    u = torch.rand(60, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plain = get_estimator("gumbel")(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain.bool(), u > 1 - torch.sigmoid(logits.double()))


def test_surrogate_value_is_the_loss_and_carries_the_objectives_gradient():
    weight = torch.tensor(2.0, requires_grad=True)
    logits = torch.zeros(3, 5, requires_grad=True)
    out = estimate_gradient(
        get_estimator("disarm"),
        logits,
        lambda b: weight * b.sum(-1),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(out.surrogate.detach(), out.loss) and out.evaluations == 2
    out.surrogate.sum().backward()
    assert torch.isclose(weight.grad, out.loss.sum() / 2)


@pytest.mark.parametrize(
    ("spec", "why"),
    [("hardtanh", "does not sample"), ("binarynet_stochastic", "hard sigmoid")],
)
def test_estimators_of_another_law_are_refused(spec, why):
    with pytest.raises(EstimatorSpecError, match=why) as info:
        estimate_gradient(get_estimator(spec), torch.zeros(2, 3), toy(0.5), None)
    assert "\n" not in str(info.value)


def test_registry_metadata_of_the_unbiased_family():
    for name in ("reinforce_loo", "arm", "disarm"):
        info = describe(name)
        assert info["family"] == "unbiased" and info["samples_from"] == "bernoulli"
        assert info["paper"] and info["reference_code"] and info["peak"] is None
    assert describe("bernoulli")["family"] == "threshold"
    assert describe("binarynet_stochastic")["samples_from"] == "hard_sigmoid"
    assert describe("hardtanh")["samples_from"] is None
    with pytest.raises(EstimatorSpecError, match="unbiased estimator"):
        get_estimator("disarm")(torch.zeros(3, requires_grad=True)).sum().backward()
