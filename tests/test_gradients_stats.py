"""Bias/variance statistics against Gaussian draws with a known mean and covariance."""

from __future__ import annotations

import numpy as np
import pytest

from runners.gradients.stats import bias_detected, layer_sums, powers_of_two, summarise


def _draws(rng, r, mean, scale):
    return mean + scale * rng.standard_normal((r, mean.size))


def test_estimates_recover_a_known_bias_and_variance():
    rng = np.random.default_rng(0)
    exact = np.array([1.0, -2.0, 0.5, 0.0])
    bias = np.array([0.3, 0.0, -0.4, 0.0])  # ‖bias‖/‖g*‖ = 0.5/√5.25
    scale = np.array([1.0, 2.0, 0.5, 0.1])
    out = summarise(layer_sums(_draws(rng, 4096, exact + bias, scale), exact, 64), [1, 16], seed=1)
    norm2 = exact @ exact
    assert out["bias"] == pytest.approx(0.5 / np.sqrt(norm2), rel=0.1)
    assert out["bias_ci"][0] <= 0.5 / np.sqrt(norm2) <= out["bias_ci"][1]
    assert out["variance"] == pytest.approx((scale**2).sum() / norm2, rel=0.08)
    assert bias_detected(out)
    one, sixteen = out["by_m"]
    expected_rmse = np.sqrt((0.25 + (scale**2).sum() / 16) / norm2)
    assert sixteen["rel_rmse"] == pytest.approx(expected_rmse, rel=0.08)
    assert one["rel_rmse"] > sixteen["rel_rmse"]
    assert -1 <= sixteen["cosine_ci"][0] <= sixteen["cosine"] <= sixteen["cosine_ci"][1] <= 1


def test_the_m_sample_formulas_match_disjoint_means_of_m_draws():
    rng = np.random.default_rng(3)
    exact = rng.standard_normal(6)
    draws = _draws(rng, 8192, exact + 0.2, 1.5)
    out = summarise(layer_sums(draws, exact, 64), [4], seed=0)
    means = draws.reshape(-1, 4, 6).mean(axis=1)
    errors = np.linalg.norm(means - exact, axis=1) / np.linalg.norm(exact)
    assert out["by_m"][0]["rel_rmse"] == pytest.approx(np.sqrt((errors**2).mean()), rel=0.05)
    cosines = means @ exact / (np.linalg.norm(means, axis=1) * np.linalg.norm(exact))
    assert out["by_m"][0]["cosine"] == pytest.approx(cosines.mean(), abs=0.05)


@pytest.mark.parametrize("true_bias", [0.0, 0.15])
def test_the_squared_bias_interval_covers_the_truth_at_its_level(true_bias):
    """Coverage and detection over 150 experiments, also at zero bias (a skewed statistic)."""
    rng = np.random.default_rng(7)
    exact = np.ones(20)
    bias = np.zeros(20)
    bias[0] = true_bias * np.sqrt(20)
    truth = (bias @ bias) / 20
    hits, detected = 0, 0
    for seed in range(150):
        sums = layer_sums(_draws(rng, 256, exact + bias, 1.0), exact, 32)
        out = summarise(sums, [], resamples=400, seed=seed)
        lo, hi = out["bias2_ci"]
        hits += lo <= truth <= hi
        detected += bias_detected(out)
    assert hits / 150 >= 0.9  # conservative at zero bias (see runners.gradients.stats)
    if true_bias == 0.0:
        assert detected / 150 <= 0.1  # the sign-flip test's false alarms: about 5%
    else:
        assert detected / 150 >= 0.9


def test_budget_rows_use_m_equal_to_the_budget_over_the_evaluations():
    rng = np.random.default_rng(1)
    exact = np.ones(3)
    out = summarise(
        layer_sums(_draws(rng, 64, exact, 1.0), exact, 8),
        [1, 2],
        evaluations=2,
        budgets=[1, 2, 4],
        resamples=50,
    )
    assert [row["m"] for row in out["by_evaluations"]] == [1.0, 2.0]
    assert [row["evaluations"] for row in out["by_m"]] == [2.0, 4.0]
    assert out["by_evaluations"][1]["rel_rmse"] == out["by_m"][1]["rel_rmse"]


def test_a_reference_noise_is_taken_out_of_the_squared_bias():
    rng = np.random.default_rng(2)
    exact = np.ones(50)
    noisy = exact + 0.1 * rng.standard_normal(50)  # a reference with variance 50 · 0.01
    draws = _draws(rng, 2048, exact, 1.0)
    plain = summarise(layer_sums(draws, noisy, 32), [], resamples=200)
    corrected = summarise(layer_sums(draws, noisy, 32, ref_var=0.5), [], resamples=200)
    assert bias_detected(plain)
    assert not bias_detected(corrected)


def test_powers_of_two():
    assert powers_of_two(1024) == [2**k for k in range(11)]
    assert powers_of_two(3) == [1, 2]


def test_the_sign_flip_p_value_is_uniform_without_bias():
    rng = np.random.default_rng(11)
    exact = np.ones(8)
    ps = [
        summarise(layer_sums(_draws(rng, 128, exact, 2.0), exact, 16), [], resamples=200)["bias_p"]
        for _ in range(200)
    ]
    assert 0.03 <= np.mean(np.array(ps) < 0.1) <= 0.18
    assert 0.4 <= np.mean(ps) <= 0.6


@pytest.mark.parametrize("ref_scale", [0.5, 4.0])
def test_with_a_noisy_reference_the_p_value_counts_its_noise(ref_scale):
    """Reference from 256 draws in 32 groups, noisier than (4.0) or comparable to (0.5) the
    estimator's mean over 128 draws: uniform p without bias, small p with one."""
    rng = np.random.default_rng(5)
    exact = np.ones(12)

    def p_value(bias):
        ref_draws = _draws(rng, 256, exact, ref_scale)
        groups = ref_draws.reshape(32, 8, -1).mean(axis=1)
        reference = groups.mean(axis=0)
        ref_var = float(groups.var(axis=0, ddof=1).sum()) / 32
        sums = layer_sums(_draws(rng, 128, exact + bias, 1.0), reference, 16, ref_var, groups)
        return summarise(sums, [], resamples=200)["bias_p"]

    nulls = np.array([p_value(0.0) for _ in range(150)])
    assert 0.02 <= np.mean(nulls < 0.1) <= 0.2
    assert 0.4 <= nulls.mean() <= 0.6
    biased = np.array([p_value(0.6 * ref_scale) for _ in range(40)])
    assert np.mean(biased < 0.05) >= 0.8
