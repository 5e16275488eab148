"""The reference gradient: enumeration against autograd, local expectation against enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch
from gradient_toys import MlpObjective, quadratic_toy, quadratic_toy_gradient

from runners.gradients.exact import (
    backprop,
    codes,
    enumerate_expectation,
    local_expectation_gradient,
    reference_generator,
    reference_gradient,
)
from runners.gradients.problems import problem_for
from runners.training.diagnostics import eval_mode, image_losses
from runners.training.model import BinaryAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


def _enumerated_expectation(logits: torch.Tensor, f) -> torch.Tensor:
    """F(ℓ) = (1/B) Σ_k Σ_b Π_i σ(ℓ)^b (1 − σ(ℓ))^(1 − b) f_k(b), written out for autograd."""
    count, n = logits.shape
    total = torch.zeros((), dtype=torch.float64)
    s = torch.sigmoid(logits)
    for bits in itertools.product((0.0, 1.0), repeat=n):
        b = torch.tensor(bits, dtype=torch.float64)
        p = (s**b * (1 - s) ** (1 - b)).prod(-1)  # (B,)
        total = total + (p * f(b.expand(count, n))).sum()
    return total / count


def test_codes_are_every_bit_pattern_once():
    block = codes(5, 0, 32, torch.float64, torch.device("cpu"))
    assert block.shape == (32, 5)
    assert len({tuple(row.tolist()) for row in block}) == 32
    assert torch.equal(codes(5, 7, 9, torch.float64, torch.device("cpu")), block[7:9])


@pytest.mark.parametrize("chunk_rows", [1, 7, 10_000])
def test_enumeration_equals_autograd_of_the_enumerated_expectation(chunk_rows):
    g = torch.Generator().manual_seed(1)
    logits = (2 * torch.randn(3, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    f = MlpObjective(5, 3)
    (expected,) = torch.autograd.grad(_enumerated_expectation(logits, f), logits)
    ref = enumerate_expectation(logits, f, chunk_rows=chunk_rows)
    torch.testing.assert_close(ref.grad, expected, rtol=1e-10, atol=1e-12)
    assert ref.exact and ref.evaluations == 32 * 3
    assert float(ref.stderr.abs().max()) == 0.0


def test_enumeration_on_the_quadratic_toy_has_its_closed_form():
    logits = torch.linspace(-3, 3, 12, dtype=torch.float64).view(2, 6)
    ref = enumerate_expectation(logits, quadratic_toy(0.45))
    torch.testing.assert_close(ref.grad, quadratic_toy_gradient(logits, 0.45))


def test_local_expectation_agrees_with_enumeration_within_its_error():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, generator=g, dtype=torch.float64)
    f = MlpObjective(6, 3, seed=3)
    exact = enumerate_expectation(logits, f)
    ref = local_expectation_gradient(
        logits, f, draws=3000, generator=torch.Generator().manual_seed(4), chunk_rows=4000
    )
    assert not ref.exact and ref.evaluations == 3000 * 7 * 3
    z = (ref.grad - exact.grad) / ref.stderr
    assert float(z.abs().max()) < 4.5  # 18 coordinates: P(any |z| > 4.5) ≈ 1e-4
    assert float(z.pow(2).sum()) < 18 + 6 * 18**0.5  # χ²_18 far tail
    assert ref.rel_stderr < 0.1
    # The same draws with the wrong sign of one term are many standard errors away.
    assert float(((-ref.grad - exact.grad) / ref.stderr).abs().max()) > 5


def test_reference_picks_enumeration_up_to_max_bits():
    logits = torch.zeros(2, 4, dtype=torch.float64)
    f = quadratic_toy(0.3)
    assert reference_gradient(logits, f, max_bits=4).exact
    approx = reference_gradient(
        logits, f, max_bits=3, draws=8, generator=torch.Generator().manual_seed(0)
    )
    assert approx.method == "local_expectation"
    # On the separable toy every one-bit difference is a constant: the reference is exact.
    torch.testing.assert_close(approx.grad, quadratic_toy_gradient(logits, 0.3))


def test_backprop_to_weights_equals_autograd_through_the_encoder():
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    bias = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64)
    f = MlpObjective(5, 3, seed=6)
    logits = x @ weight + bias
    expected = torch.autograd.grad(
        _enumerated_expectation(logits, f), [weight, bias], retain_graph=True
    )
    ref = enumerate_expectation(logits, f)
    got = backprop(logits, {"w": weight, "b": bias}, ref.grad)
    torch.testing.assert_close(got["w"], expected[0])
    torch.testing.assert_close(got["b"], expected[1])
    # Batched: each row pulled back on its own.
    rows = torch.stack([ref.grad, 2 * ref.grad, -ref.grad])
    batched = backprop(logits, {"w": weight, "b": bias}, rows, batched=True)
    assert batched["w"].shape == (3, 4, 5)
    torch.testing.assert_close(batched["w"][1], 2 * expected[0])
    torch.testing.assert_close(batched["b"][2], -expected[1])


def test_enumeration_refuses_too_many_bits():
    with pytest.raises(ValueError, match="too many"):
        enumerate_expectation(torch.zeros(1, 30), quadratic_toy(0.5))


def test_the_reference_draws_from_its_own_stream():
    """Never the estimates' stream (seeded with the seed itself): shared draws hide bias."""
    own = torch.rand(8, generator=reference_generator(0), dtype=torch.float64)
    assert torch.equal(own, torch.rand(8, generator=reference_generator(0), dtype=torch.float64))
    for seed in range(4):
        estimates = torch.rand(
            8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        assert not torch.equal(own, estimates)


def test_the_article_model_as_a_problem_scores_each_code_per_image():
    torch.manual_seed(0)
    model = BinaryAutoencoder("bernoulli", code_channels=3)
    images = torch.randn(2, 1, 28, 28)
    with eval_mode(model):
        problem = problem_for(model, images)
        assert problem.logits.shape == (2, 3) and "encoder.0" in problem.layers
        b = codes(3, 0, 8, torch.float32, torch.device("cpu"))[:, None].expand(8, 2, 3)
        got = problem.objective(b)
        want = torch.stack(
            [image_losses(model.decode(code.reshape(2, 3, 1, 1)), images) for code in b]
        )
        torch.testing.assert_close(got, want)
        ref = enumerate_expectation(problem.logits, problem.objective)
        assert ref.grad.shape == (2, 3) and torch.isfinite(ref.grad).all()
    assert model.training
