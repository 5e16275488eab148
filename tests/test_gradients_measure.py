"""Estimators measured against the exact gradient: streaming sums, the toys' verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradient_toys import MlpObjective, quadratic_toy

from runners.gradients.exact import enumerate_expectation
from runners.gradients.measure import LOGITS, TOTAL, Problem, compare, measure
from runners.gradients.sampling import Sampler
from runners.gradients.stats import bias_detected, layer_sums
from ste_variants import EstimatorSpecError, get_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(objective, batch=3, n=4, inputs=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.nn.Linear(inputs, 6).double()
    second = torch.nn.Linear(6, n).double()
    for p in (*first.parameters(), *second.parameters()):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(batch, inputs, generator=g, dtype=torch.float64)
    logits = second(torch.tanh(first(x)))
    layers = {
        "first": {"first.weight": first.weight, "first.bias": first.bias},
        "second": {"second.weight": second.weight, "second.bias": second.bias},
    }
    return Problem(logits, objective, layers)


def test_streamed_sums_equal_those_of_the_explicit_draws():
    problem = _problem(MlpObjective(4, 3), seed=1)
    ref = enumerate_expectation(problem.logits, problem.objective)
    sampler = Sampler(get_estimator("reinmax"))
    got = measure(
        problem,
        ref,
        sampler,
        draws=16,
        groups=4,
        chunk=3,
        generator=torch.Generator().manual_seed(5),
    )
    # The same draws in the same chunks (3 at a time across groups), pulled back one by one.
    generator = torch.Generator().manual_seed(5)
    rows = {name: [] for name in got}
    for count in (3, 3, 3, 3, 3, 1):
        for est in sampler.draw(problem.logits, problem.objective, count, generator):
            params = list(problem.params.values())
            grads = torch.autograd.grad(problem.logits, params, est, retain_graph=True)
            rows[LOGITS].append(est.flatten().numpy())
            by_name = dict(zip(problem.params, grads, strict=True))
            flat = {
                layer: np.concatenate([by_name[p].flatten().numpy() for p in params_])
                for layer, params_ in problem.layers.items()
            }
            for layer, vec in flat.items():
                rows[layer].append(vec)
            rows[TOTAL].append(np.concatenate(list(flat.values())))
    reference = {LOGITS: ref.grad.flatten().numpy()}
    for layer in problem.layers:
        reference[layer] = np.concatenate(
            [
                g.flatten().numpy()
                for g in torch.autograd.grad(
                    problem.logits,
                    list(problem.layers[layer].values()),
                    ref.grad,
                    retain_graph=True,
                )
            ]
        )
    reference[TOTAL] = np.concatenate([reference[layer] for layer in problem.layers])
    for name, sums in got.items():
        want = layer_sums(np.stack(rows[name]), reference[name], 4)
        np.testing.assert_allclose(sums.gram, want.gram, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(sums.along, want.along, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(sums.square, want.square, rtol=1e-9)
        assert sums.norm2 == pytest.approx(want.norm2, rel=1e-12)
        assert sums.draws == 16 and sums.ref_var == 0.0


@pytest.fixture(scope="module")
def toy_rows():
    """The quadratic toy f(b) = Σ(b_i − 0.45)² through a small encoder, 1024 draws each."""
    problem = _problem(quadratic_toy(0.45), batch=4, n=3, seed=2)
    ref = enumerate_expectation(problem.logits, problem.objective)
    specs = ["disarm", "arm", "reinforce_loo", "bernoulli", "gumbel"]
    rows = compare(
        problem, ref, [get_estimator(s) for s in specs], draws=1024, ms=[1, 64], resamples=500
    )
    return {row["estimator"]: row for row in rows}


@pytest.mark.parametrize("spec", ["disarm", "arm", "reinforce_loo"])
def test_the_unbiased_family_shows_no_bias_on_the_toy(toy_rows, spec):
    for layer in (LOGITS, "first", "second", TOTAL):
        summary = toy_rows[spec]["layers"][layer]
        assert not bias_detected(summary, alpha=0.01), (spec, layer, summary["bias_p"])
        assert summary["bias_ci"][0] == 0.0
    assert toy_rows[spec]["evaluations"] == 2


@pytest.mark.parametrize("spec", ["bernoulli", "gumbel"])
def test_straight_through_estimators_are_biased_on_the_toy(toy_rows, spec):
    for layer in (LOGITS, TOTAL):
        summary = toy_rows[spec]["layers"][layer]
        assert bias_detected(summary, alpha=0.01), (spec, layer)
        assert summary["bias_ci"][0] > 0.1
    assert toy_rows[spec]["evaluations"] == 1


def test_error_falls_with_m_for_an_unbiased_estimator_only_to_the_bias_otherwise(toy_rows):
    disarm = toy_rows["disarm"]["layers"][TOTAL]["by_m"]
    st = toy_rows["bernoulli"]["layers"][TOTAL]
    assert disarm[1]["rel_rmse"] < disarm[0]["rel_rmse"] / 4  # ≈ 1/8 = 1/√64 without bias
    assert st["by_m"][1]["rel_rmse"] >= st["bias"] * 0.999


def test_estimators_that_do_not_sample_the_encoders_law_are_refused():
    with pytest.raises(EstimatorSpecError, match="does not sample"):
        Sampler(get_estimator("hardtanh"))
    with pytest.raises(EstimatorSpecError, match="hard sigmoid"):
        Sampler(get_estimator("binarynet_stochastic"))
