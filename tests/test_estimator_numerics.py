"""What ``ste_variants.base`` states about the backward's numbers, over every threshold estimator
of the registry (the unbiased family has no backward rule: its surrogate is built from objective
values, tests/test_unbiased.py).

- A NaN input gives a NaN gradient at that element and changes no other element's.
- At every corner of the hyperparameter ranges the surrogate stays within ``MAX_SURROGATE``,
  and the backward is finite for |g| up to ``finfo.max / MAX_SURROGATE`` (for every finite g
  for identity and hardtanh); a larger g overflows to ±inf, never to NaN.
- The estimators that compute their backward in float64 (the sampled family) are within two
  roundings of the float64 value in bfloat16.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_estimator_bounds import DTYPES, _ends, inputs

from ste_variants import EstimatorSpecError, describe, get_estimator, list_estimators
from ste_variants.base import MAX_SURROGATE

# The estimators with a backward rule at a threshold: the statements below are about that rule.
NAMES = [n for n in list_estimators() if describe(n)["family"] == "threshold"]
FLOAT64_BACKWARD = ["gumbel", "reinmax", "gapped_st", "gumbel_rao"]
ANY_G = {"identity", "hardtanh"}


def _grad(est, x, g, training, seed=0):
    x = x.clone().requires_grad_(True)
    y = est(x, training=training, generator=torch.Generator().manual_seed(seed))
    (dx,) = torch.autograd.grad(y, x, g)
    return dx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_nan_input_gives_nan_gradient_there_and_nowhere_else(name, dtype):
    est = get_estimator(name)
    est.set_progress(0.5)
    finite = torch.tensor([0.0, 0.3, -0.3, 1.0, -1.0, 2.5, -4.0, 0.05, 30.0, -0.7], dtype=dtype)
    nan_at = torch.tensor([1, 4, 8])
    x = finite.clone()
    x[nan_at] = math.nan
    g = torch.linspace(-2.0, 2.0, len(x), dtype=dtype)
    for training in (True, False):
        got = _grad(est, x, g, training)
        # The same draws for the same shape: the finite elements' values are compared exactly.
        clean = _grad(est, x.nan_to_num(0.5), g, training)
        assert torch.isnan(got[nan_at]).all(), (name, training, got)
        keep = ~torch.isnan(x)
        assert torch.equal(got[keep], clean[keep]), (name, training)
    s = est.surrogate(x)
    assert torch.isnan(s[nan_at]).all() and torch.isfinite(s[~torch.isnan(x)]).all()


def corner_settings(name: str) -> list[dict]:
    """Every valid combination of the numeric hyperparameters' ends, with each string choice."""
    params = describe(name)["params"]
    numeric = {k: _ends(p) for k, p in params.items() if p["type"] != "str"}
    choices = {k: p["choices"] for k, p in params.items() if p["type"] == "str"}
    keys = list(numeric) + list(choices)
    settings = []
    for values in itertools.product(*numeric.values(), *choices.values()):
        setting = dict(zip(keys, values, strict=True))
        try:
            get_estimator({"name": name, **setting})
        except EstimatorSpecError:
            continue
        settings.append(setting)
    assert settings, name
    return settings


@pytest.mark.parametrize("name", NAMES)
def test_surrogate_and_backward_within_the_stated_bounds(name):
    grid = torch.cat([torch.linspace(-3, 3, 60_001, dtype=torch.float64), inputs(torch.float64)])
    for setting, progress in itertools.product(corner_settings(name), (0.0, 1.0)):
        est = get_estimator({"name": name, **setting})
        est.set_progress(progress)
        where = (est.spec, progress)
        assert est.peak() <= MAX_SURROGATE, where
        assert est.surrogate(grid).abs().max() <= MAX_SURROGATE, where
        for dtype, training in itertools.product(DTYPES, (True, False)):
            x = inputs(dtype)
            big = torch.finfo(dtype).max
            signs = torch.tensor([(-1.0) ** i for i in range(len(x))], dtype=torch.float64)
            g_ok = (signs * (big / MAX_SURROGATE)).to(dtype)
            dx = _grad(est, x, g_ok, training)
            assert dx.dtype == dtype and torch.isfinite(dx).all(), (*where, dtype, training, dx)
            dx = _grad(est, x, torch.full_like(x, big), training)
            assert not torch.isnan(dx).any(), (*where, dtype, training, dx)
            if name in ANY_G:
                assert torch.isfinite(dx).all(), (*where, dtype)


def test_max_surrogate_is_reached():
    """The bound is tight: rbnn at its sharpest, largest scale reaches √2·10^4 of it."""
    est = get_estimator("rbnn(t_min=1000, t_max=1000, scale=10)")
    assert est.peak() == pytest.approx(math.sqrt(2.0) * 1e4)
    assert est.peak() <= MAX_SURROGATE < 1.1 * est.peak()


@pytest.mark.parametrize("name", FLOAT64_BACKWARD)
def test_float64_backward_in_bfloat16_within_two_roundings(name):
    est = get_estimator(name)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(20_000, generator=gen, dtype=torch.float64) * 3).to(torch.bfloat16)
    g = torch.randn(20_000, generator=gen, dtype=torch.float64).to(torch.bfloat16)
    unit = 2.0**-8  # bfloat16's unit roundoff
    for training in (True, False):
        want = _grad(est, x.double(), g.double(), training)
        got = _grad(est, x, g, training).double()
        assert torch.equal(got == 0, want == 0), (name, training)
        nonzero = want != 0
        rel = ((got - want).abs()[nonzero] / want.abs()[nonzero]).max().item()
        assert rel <= 2 * unit * (1 + unit), (name, training, rel)
