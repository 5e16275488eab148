"""Every registered estimator: exact forward, backward against an independent formula table,
area, stochastic behaviour, progress, and use inside a module.

The tests iterate over the registry, so a newly registered estimator is tested at once (the
sampled ones also in test_estimator_stochastic.py), and
``test_every_estimator_has_a_reference`` fails until its formula is added to ``REFERENCE``.
The formulas below are written from the papers (see docs/estimators.md), independently of
``ste_variants.functional``, in float64.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ste_variants import Binarize, describe, get_estimator, list_estimators

# Threshold estimators (a backward rule); the unbiased family has tests/test_unbiased.py.
NAMES = [n for n in list_estimators() if describe(n)["family"] == "threshold"]
ANNEALED = [n for n in NAMES if describe(n)["annealed"]]
FLOATS = [torch.float32, torch.float64]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dsig(z):
    return torch.sigmoid(z) * torch.sigmoid(-z)


def q(value, dtype):
    """A threshold as the input dtype sees it (a float32 input compares to 0.1 in float32)."""
    return torch.tensor(value, dtype=dtype).double()


def lin(a, b, p):
    return a + (b - a) * p


def logsched(a, b, p):
    return a * 10 ** (p * math.log10(b / a))


def _ede(x, g, P, p, dt):
    t = logsched(P["t_min"], P["t_max"], p)
    k = max(1 / t, 1)
    return g * P["scale"] * k * t * (1 - torch.tanh(t * x) ** 2)


def _rbnn(x, g, P, p, dt):
    t = logsched(P["t_min"], P["t_max"], p)
    k = max(1 / t, 1)
    inside = x.abs() < q(math.sqrt(2) / t, dt)
    return g * P["scale"] * torch.where(inside, k * (math.sqrt(2) * t - t * t * x.abs()), 0.0)


def _reste(x, g, P, p, dt):
    o = P["o_start"] + (P["o_end"] - P["o_start"]) * (1 - math.cos(p * math.pi / 2))
    a, m, t = x.abs(), q(P["interval"], dt), q(P["threshold"], dt)
    near = P["interval"] ** (1 / o) / P["interval"]
    far = (1 / o) * a.clamp_min(1e-300) ** ((1 - o) / o)
    s = torch.where(a <= m, torch.full_like(a, near), far)
    return g * P["scale"] * torch.where(a <= t, s, 0.0)


def _reinmax(x, g, P, p, dt):
    y = (x > 0).double()  # eval mode: the threshold is the sample
    s = (y + torch.sigmoid(x / P["tau"])) / 2
    return g * (2 * s * (1 - s) - 0.5 * dsig(x))


def _gapped(x, g, P, p, dt):
    d = torch.where(x > 0, x.clamp_min(P["gap"]), x.clamp_max(-P["gap"]))
    return g * dsig(d / P["tau"]) / P["tau"]


def _hard_slope(x, g, P, p, dt):
    a = lin(P["a_start"], P["a_end"], p)
    return torch.where(x.abs() <= q(1 / a, dt), g * (a / 2), 0.0)


def _swish(x, g, P, p, dt):
    b = P["beta"]
    z = b * x
    return g * P["scale"] * b * (2 - z * torch.tanh(z / 2)) / (1 + torch.cosh(z))


# name -> f(x, g, params, progress, dtype) = dL/dx (x, g in float64; noise-free / eval mode).
REFERENCE = {
    "identity": lambda x, g, P, p, dt: g,
    "hardtanh": lambda x, g, P, p, dt: torch.nn.functional.hardtanh(g),
    "saturated": lambda x, g, P, p, dt: torch.where(
        x.abs() <= q(P["clip"], dt), g * P["scale"], 0.0
    ),
    "sigmoid": lambda x, g, P, p, dt: g * P["beta"] * dsig(P["beta"] * x),
    "tanh": lambda x, g, P, p, dt: (
        g * P["scale"] * P["beta"] * (1 - torch.tanh(P["beta"] * x) ** 2)
    ),
    "approx_sign": lambda x, g, P, p, dt: (
        g * P["scale"] * torch.where(x.abs() <= 1, 2 - 2 * x.abs(), 0.0)
    ),
    "swish_sign": _swish,
    "relu": lambda x, g, P, p, dt: torch.where(x > 0, g, 0.0),
    "clipped_relu": lambda x, g, P, p, dt: torch.where((x > 0) & (x < q(P["clip"], dt)), g, 0.0),
    "atan": lambda x, g, P, p, dt: g * (P["alpha"] / 2) / (1 + (math.pi / 2 * P["alpha"] * x) ** 2),
    "superspike": lambda x, g, P, p, dt: g / (1 + P["beta"] * x.abs()) ** 2,
    "slope_annealed": lambda x, g, P, p, dt: (
        g
        * lin(P["beta_start"], P["beta_end"], p)
        * dsig(lin(P["beta_start"], P["beta_end"], p) * x)
    ),
    "hard_slope_annealed": _hard_slope,
    "ede": _ede,
    "rbnn": _rbnn,
    "reste": _reste,
    "bernoulli": lambda x, g, P, p, dt: g if P["backward"] == "st" else g * dsig(x),
    "gumbel": lambda x, g, P, p, dt: g * dsig(x / P["tau"]) / P["tau"],
    "binarynet_stochastic": lambda x, g, P, p, dt: torch.where(x.abs() <= 1, g * P["scale"], 0.0),
    "reinmax": _reinmax,
    "gapped_st": _gapped,
    "gumbel_rao": lambda x, g, P, p, dt: g * dsig(x / P["tau"]) / P["tau"],
}

# Non-default settings to test too (name -> specs).
EXTRA_SPECS = {
    "saturated": ["saturated(clip=0.5)", "saturated(clip=2)", "saturated(scale=0.5)"],
    "sigmoid": ["sigmoid(beta=4)", "sigmoid(beta=25)"],
    "tanh": ["tanh(beta=3, scale=1)"],
    "approx_sign": ["approx_sign(scale=1)"],
    "swish_sign": ["swish_sign(beta=1)", "swish_sign(scale=1)"],
    "clipped_relu": ["clipped_relu(clip=2)"],
    "atan": ["atan(alpha=5)"],
    "superspike": ["superspike(beta=1)"],
    "reste": ["reste(interval=0.25, threshold=1)"],
    "bernoulli": ["bernoulli(backward=sigmoid)"],
    "gumbel": ["gumbel(tau=0.5)", "gumbel(tau=2)"],
    "hard_slope_annealed": ["hard_slope_annealed(a_end=10)", "hard_slope_annealed(a_start=2)"],
    "binarynet_stochastic": ["binarynet_stochastic(scale=1)"],
    "reinmax": ["reinmax(tau=2)", "reinmax(tau=30)"],
    "gapped_st": ["gapped_st(gap=0.5, tau=0.5)", "gapped_st(gap=0)", "gapped_st(gap=3, tau=2)"],
    "gumbel_rao": ["gumbel_rao(tau=0.5, samples=3)"],
}
ALL_SPECS = NAMES + [s for n in NAMES for s in EXTRA_SPECS.get(n, [])]
PROGRESS = [0.0, 0.3, 1.0]
# (spec, progress): every progress for annealed estimators, 0 for the others.
CASES = [
    (spec, p) for spec in ALL_SPECS for p in (PROGRESS if get_estimator(spec).annealed else [0.0])
]

BOUNDARIES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1.5, -1.5, 0.25, -0.25, 0.125, -0.125]


def sample_x(dtype, n=3000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=torch.float64) * 2.0
    tiny = torch.finfo(dtype).tiny
    extra = torch.tensor(BOUNDARIES + [tiny, -tiny, 1e-7, -1e-7, 5.0, -5.0, 30.0, -30.0])
    return torch.cat([x, extra]).to(dtype)


HUGE = [1e8, -1e8, 1e30, -1e30, 3e38, -3e38]


def test_every_estimator_has_a_reference():
    missing = sorted(set(NAMES) - set(REFERENCE))
    assert not missing, f"add the backward formula of {missing} to REFERENCE in this file"


def test_at_least_twenty_two_with_the_required_four():
    assert len(NAMES) >= 22
    assert {"identity", "hardtanh", "saturated", "sigmoid"} <= set(NAMES)
    new = {"reinmax", "hard_slope_annealed", "binarynet_stochastic", "gapped_st", "gumbel_rao"}
    assert new <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_states_forward_backward_reference(name):
    doc = describe(name)["doc"]
    for word in ("Forward", "Backward", "Reference"):
        assert word in doc, f"{name} docstring lacks {word!r}"


@pytest.mark.parametrize("dtype", FLOATS + [torch.bfloat16, torch.float16], ids=dtype_id)
@pytest.mark.parametrize("name", NAMES)
def test_forward_is_exact_step(name, dtype):
    est = get_estimator(name)
    fin = torch.finfo(dtype)
    x = torch.cat(
        [
            sample_x(torch.float64).to(dtype),
            torch.tensor([fin.max, -fin.max, fin.tiny, -fin.tiny, 0.0, -0.0], dtype=dtype),
            torch.tensor([v for v in HUGE if abs(v) < fin.max], dtype=torch.float64).to(dtype),
        ]
    )
    want = (x > 0).to(dtype)
    y = est(x, training=False)
    assert y.dtype == dtype
    assert torch.equal(y, want)
    y_train = est(x, training=True, generator=torch.Generator().manual_seed(0))
    assert y_train.dtype == dtype
    assert set(y_train.unique().tolist()) <= {0.0, 1.0}
    if not est.stochastic:
        assert torch.equal(y_train, want)
    else:
        # Noise is bounded (|L| < 750): far from 0 the sample is certain.
        far = x.double().abs() > 1e3
        assert torch.equal(y_train[far], want[far])


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize(("spec", "progress"), CASES)
def test_backward_matches_reference(spec, dtype, progress):
    est = get_estimator(spec)
    est.set_progress(progress)
    x = sample_x(dtype).requires_grad_(True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.cat([g[:-4], torch.tensor([1.0, -1.0, 3.0, -0.25], dtype=torch.float64)]).to(dtype)
    y = est(x, training=False)
    (dx,) = torch.autograd.grad(y, x, g)
    want = REFERENCE[est.name](x.detach().double(), g.double(), est.params, progress, dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(dx.double(), want, **tol)
    # surrogate(x) is backward / g at g = 1
    s = est.surrogate(x.detach())
    ones = torch.ones(x.shape, dtype=torch.float64)
    torch.testing.assert_close(
        s.double(),
        REFERENCE[est.name](x.detach().double(), ones, est.params, progress, dtype),
        **tol,
    )


def test_hardtanh_is_the_article_rule_independent_of_x():
    est = get_estimator("hardtanh")
    x = torch.tensor([-100.0, -1.0, 0.0, 0.3, 1.0, 50.0], requires_grad=True)
    g = torch.tensor([-5.0, -1.0, 0.5, 2.0, 1.0, -0.2])
    (dx,) = torch.autograd.grad(est(x), x, g)
    assert dx.tolist() == pytest.approx([-1.0, -1.0, 0.5, 1.0, 1.0, -0.2])


def test_saturated_boundary_inclusive():
    x = torch.tensor([-1.0, 1.0, 1.0000001, -1.0000001], requires_grad=True)
    (dx,) = torch.autograd.grad(get_estimator("saturated")(x), x, torch.ones(4))
    assert dx.tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_id)
@pytest.mark.parametrize("name", NAMES)
def test_no_nan_for_huge_inputs(name, dtype):
    est = get_estimator(name)
    huge = HUGE + ([1e300, -1e300] if dtype == torch.float64 else [])
    x = torch.tensor(huge, dtype=dtype, requires_grad=True)
    for training in (True, False):
        y = est(x, training=training, generator=torch.Generator().manual_seed(3))
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(x))
        assert torch.isfinite(dx).all(), (name, training, dx)
        assert torch.equal(y, (x > 0).to(dtype))
    assert torch.isfinite(est.surrogate(x.detach())).all()


def _integrate(est):
    """∫ surrogate dx over a wide grid: dense near 0, log-spaced tails out to 1e6."""
    dense = torch.linspace(-50, 50, 1_000_001, dtype=torch.float64)
    tail = torch.logspace(math.log10(50), 6, 20_000, dtype=torch.float64)[1:]
    x = torch.cat([-tail.flip(0), dense, tail])
    return torch.trapezoid(est.surrogate(x), x).item()


@pytest.mark.parametrize("name", NAMES)
def test_area_metadata_matches_integral(name):
    for progress in PROGRESS if describe(name)["annealed"] else [0.0]:
        est = get_estimator(name)
        est.set_progress(progress)
        area = est.area()
        numeric = _integrate(est)
        if area is None:
            assert numeric > 1e5, f"{name}: area None (infinite) but integral is {numeric}"
        else:
            assert numeric == pytest.approx(area, rel=2e-3), (name, progress)
    info = describe(name)
    fresh = get_estimator(name)
    assert info["area"] == (None if fresh.area() is None else pytest.approx(fresh.area()))


def _grid_peak(est):
    """max surrogate over a dense grid, with 0 and ±1e-9 (one-sided boxes) included."""
    dense = torch.linspace(-50, 50, 2_000_001, dtype=torch.float64)
    x = torch.cat([dense, torch.tensor([0.0, 1e-9, -1e-9], dtype=torch.float64)])
    return est.surrogate(x).max().item()


@pytest.mark.parametrize(("spec", "progress"), CASES)
def test_peak_metadata_matches_the_surrogate(spec, progress):
    est = get_estimator(spec)
    est.set_progress(progress)
    assert est.peak() == pytest.approx(_grid_peak(est), rel=1e-4), (spec, progress)
    info = describe(spec)
    start = get_estimator(spec)
    assert info["peak"] == pytest.approx(start.peak())
    start.set_progress(1.0)
    assert info["peak_end"] == pytest.approx(start.peak())


@pytest.mark.parametrize("name", ANNEALED)
def test_annealed_surrogate_follows_progress_and_is_frozen_at_forward(name):
    est = get_estimator(name)
    x = torch.linspace(-1.2, 1.2, 101, dtype=torch.float64)
    start = est.surrogate(x)
    est.set_progress(1.0)
    end = est.surrogate(x)
    assert not torch.allclose(start, end)
    # The rule in force at the forward is the one used by its backward.
    est.set_progress(0.0)
    xr = x.clone().requires_grad_(True)
    y = est(xr)
    est.set_progress(1.0)
    (dx,) = torch.autograd.grad(y, xr, torch.ones_like(x))
    torch.testing.assert_close(dx, start)


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(ANNEALED)))
def test_progress_does_not_change_other_estimators(name):
    est = get_estimator(name)
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    before = est.surrogate(x)
    est.set_progress(0.7)
    assert torch.equal(before, est.surrogate(x))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_progress_out_of_range(bad):
    with pytest.raises(ValueError, match="progress"):
        get_estimator("ede").set_progress(bad)


@pytest.mark.parametrize("name", NAMES)
def test_binarize_in_a_module_gives_gradients(name):
    torch.manual_seed(0)
    layer = Binarize(name, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(8, 16), layer, nn.Linear(16, 1))
    x = torch.randn(32, 8)
    loss = model(x).pow(2).mean()
    loss.backward()
    first = model[0].weight.grad
    assert first is not None and torch.isfinite(first).all()
    assert first.abs().sum() > 0
    hidden = layer(model[0](x))
    assert set(hidden.unique().tolist()) <= {0.0, 1.0}
    layer.set_progress(0.5)
    assert layer.estimator.progress == 0.5
    layer.eval()
    pre = model[0](x)
    assert torch.equal(layer(pre), (pre > 0).float())
    assert name in repr(layer)


@pytest.mark.parametrize("name", NAMES)
def test_describe_is_complete_and_json_ready(name):
    info = describe(name)
    json.dumps(info)
    for key in ("name", "forward", "backward", "params", "paper", "stochastic", "annealed", "area"):
        assert key in info
    assert info["name"] == name and info["paper"] and info["backward"]
    for p in info["params"].values():
        assert {"default", "low", "high", "type", "range"} <= set(p)
        if p["type"] != "str":
            assert p["low"] is None or p["default"] >= p["low"]
            assert p["high"] is None or p["default"] <= p["high"]
        else:
            assert p["default"] in p["choices"]


def test_reste_starts_as_a_halved_box_not_the_plain_saturated():
    x = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    reste = get_estimator("reste").surrogate(x)
    torch.testing.assert_close(reste, get_estimator("saturated(clip=1.5, scale=0.5)").surrogate(x))
    assert not torch.equal(reste, get_estimator("saturated").surrogate(x))
    doc = describe("reste")["doc"]
    assert "0.5·1{|x| ≤ 1.5}" in doc and "o = 1 is the saturated STE" not in doc


def test_hard_slope_annealed_is_chungs_hard_sigmoid_slope():
    # d/dx of max(0, min(1, (a·x + 1)/2)) by autograd, a = 1 at the start and 5 at the end.
    x = torch.linspace(-2, 2, 4001, dtype=torch.float64)
    est = get_estimator("hard_slope_annealed")
    for progress, a in ((0.0, 1.0), (1.0, 5.0)):
        est.set_progress(progress)
        xr = x.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(((a * xr + 1) / 2).clamp(0, 1).sum(), xr)
        inside = (a * x).abs() != 1  # autograd's clamp picks a side at the kinks
        torch.testing.assert_close(est.surrogate(x)[inside], want[inside])
