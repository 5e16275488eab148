"""No hyperparameter in range makes a NaN: every registered estimator at the low and high end of
each hyperparameter, every float dtype, inputs from 0 to the dtype's largest number.

Also the bounds themselves: every numeric hyperparameter has finite ones, and the values that
used to overflow (a slope of 1e40, a temperature of 1e-300) are refused.
"""

from __future__ import annotations

import math

import pytest
import torch

from ste_variants import EstimatorSpecError, describe, get_estimator, list_estimators

NAMES = list_estimators()
THRESHOLD = [n for n in NAMES if describe(n)["family"] == "threshold"]  # with a backward rule
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
X_VALUES = [0.0, 1e-30, -1e-30, 1.0, -1.0, 1e4, -1e4, 3e38, -3e38]


def inputs(dtype: torch.dtype) -> torch.Tensor:
    """X_VALUES clipped to the dtype's range (1e-30 underflows to 0 in float16)."""
    big = torch.finfo(dtype).max
    return torch.tensor(X_VALUES, dtype=torch.float64).clamp(-big, big).to(dtype)


def _ends(info: dict) -> tuple[object, object]:
    """The smallest and largest values a hyperparameter accepts."""
    low, high = info["low"], info["high"]
    if info["type"] == "int":
        return (low if info["low_inclusive"] else low + 1), (
            high if info["high_inclusive"] else high - 1
        )
    return (
        low if info["low_inclusive"] else math.nextafter(low, high),
        high if info["high_inclusive"] else math.nextafter(high, low),
    )


def bound_settings(name: str) -> list[dict]:
    """Valid settings that together put every hyperparameter at each end of its range.

    One hyperparameter at an end, the others at their defaults; where a cross-check refuses
    that (e.g. beta_start above beta_end), every hyperparameter at the same end. String
    hyperparameters take each of their choices.
    """
    params = describe(name)["params"]
    numeric = {k: _ends(p) for k, p in params.items() if p["type"] != "str"}
    settings: list[dict] = []
    for key, ends in numeric.items():
        for side, value in enumerate(ends):
            for candidate in ({key: value}, {k: e[side] for k, e in numeric.items()}):
                try:
                    get_estimator({"name": name, **candidate})
                except EstimatorSpecError:
                    continue
                settings.append(candidate)
                break
            else:
                pytest.fail(f"{name}: no valid setting puts {key} at {value!r}")
    for key, p in params.items():
        if p["type"] == "str":
            settings += [{key: choice} for choice in p["choices"]]
    return settings or [{}]


CASES = [(name, setting) for name in THRESHOLD for setting in bound_settings(name)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize(("name", "setting"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_backward_finite_at_the_bounds(name, setting, dtype):
    x0 = inputs(dtype)
    for progress in (0.0, 1.0):
        est = get_estimator({"name": name, **setting})
        est.set_progress(progress)
        for training in (True, False):
            x = x0.clone().requires_grad_(True)
            y = est(x, training=training, generator=torch.Generator().manual_seed(0))
            (dx,) = torch.autograd.grad(y, x, torch.ones_like(x))
            assert dx.dtype == dtype
            assert torch.isfinite(dx).all(), (est.spec, progress, training, dx)
        assert torch.isfinite(est.surrogate(x0)).all(), (est.spec, progress)
        assert math.isfinite(est.peak())


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_hyperparameter_has_finite_bounds(name):
    for key, p in describe(name)["params"].items():
        if p["type"] != "str":
            assert p["low"] is not None and p["high"] is not None, (name, key)
            assert math.isfinite(p["low"]) and math.isfinite(p["high"]), (name, key)


@pytest.mark.parametrize(
    "spec",
    [
        "sigmoid(beta=1e40)",
        "tanh(beta=1e40)",
        "atan(alpha=1e40)",
        "swish_sign(beta=1e40)",
        "slope_annealed(beta_start=1, beta_end=1e40)",
        "superspike(beta=1e40)",
        "rbnn(t_max=1e30)",
        "ede(t_min=1e-300)",
        "gumbel(tau=1e-300)",
        "reste(interval=1e-300)",
        "saturated(clip=1e300)",
    ],
)
def test_values_that_overflowed_are_refused(spec):
    with pytest.raises(EstimatorSpecError, match="must be in"):
        get_estimator(spec)


def test_superspike_at_its_largest_beta_is_finite_at_zero():
    x = torch.zeros(3, requires_grad=True)
    (dx,) = torch.autograd.grad(get_estimator("superspike(beta=1000)")(x), x, torch.ones(3))
    assert dx.tolist() == [1.0, 1.0, 1.0]
