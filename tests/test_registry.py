"""The registry: spec parsing, canonical specs, every bad-input path, registration, plugins."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import ste_variants
from ste_variants import (
    Estimator,
    EstimatorSpecError,
    Param,
    canonical_spec,
    describe,
    get_estimator,
    list_estimators,
    register_estimator,
)
from ste_variants import registry as registry_module


@pytest.mark.parametrize(
    ("spec", "name", "params", "canonical"),
    [
        ("sigmoid", "sigmoid", {"beta": 1.0}, "sigmoid"),
        ("sigmoid(beta=1)", "sigmoid", {"beta": 1.0}, "sigmoid"),
        ("sigmoid(beta=1.0)", "sigmoid", {"beta": 1.0}, "sigmoid"),
        ("sigmoid()", "sigmoid", {"beta": 1.0}, "sigmoid"),
        ("  sigmoid ( beta = 4 ) ", "sigmoid", {"beta": 4.0}, "sigmoid(beta=4)"),
        ("sigmoid(beta=4.0)", "sigmoid", {"beta": 4.0}, "sigmoid(beta=4)"),
        ("sigmoid(beta=0.5)", "sigmoid", {"beta": 0.5}, "sigmoid(beta=0.5)"),
        ("sigmoid(beta=2.5e-1)", "sigmoid", {"beta": 0.25}, "sigmoid(beta=0.25)"),
        ({"name": "sigmoid", "beta": 4}, "sigmoid", {"beta": 4.0}, "sigmoid(beta=4)"),
        ({"name": "sigmoid"}, "sigmoid", {"beta": 1.0}, "sigmoid"),
        (
            "bernoulli(backward=sigmoid)",
            "bernoulli",
            {"backward": "sigmoid"},
            "bernoulli(backward=sigmoid)",
        ),
        (
            "bernoulli(backward='sigmoid')",
            "bernoulli",
            {"backward": "sigmoid"},
            "bernoulli(backward=sigmoid)",
        ),
        ('bernoulli(backward="st")', "bernoulli", {"backward": "st"}, "bernoulli"),
        (
            "tanh(scale=1, beta=3)",
            "tanh",
            {"beta": 3.0, "scale": 1.0},
            "tanh(beta=3, scale=1)",
        ),
        (
            "ede(t_max=20, t_min=0.05)",
            "ede",
            {"t_min": 0.05, "t_max": 20.0, "scale": 0.5},
            "ede(t_max=20, t_min=0.05)",
        ),
    ],
)
def test_spec_forms(spec, name, params, canonical):
    est = get_estimator(spec)
    assert est.name == name
    assert est.params == params
    assert est.spec == canonical
    assert canonical_spec(spec) == canonical
    # The canonical string resolves to the same estimator.
    assert get_estimator(canonical).params == params
    assert all(type(v) is type(params[k]) for k, v in est.params.items())


@pytest.mark.parametrize("name", list_estimators())
def test_default_spec_is_the_name_and_roundtrips(name):
    est = get_estimator(name)
    assert est.spec == name
    assert get_estimator(est.params | {"name": name}).spec == name


def test_numpy_scalars_are_numbers():
    np = pytest.importorskip("numpy")
    est = get_estimator({"name": "sigmoid", "beta": np.int64(4)})
    assert est.params == {"beta": 4.0} and type(est.params["beta"]) is float
    assert get_estimator({"name": "gumbel", "tau": np.float32(0.5)}).spec == "gumbel(tau=0.5)"


def test_instance_passes_through():
    est = get_estimator("sigmoid(beta=3)")
    assert get_estimator(est) is est
    assert canonical_spec(est) == "sigmoid(beta=3)"
    assert repr(est) == "<Estimator sigmoid(beta=3)>"
    assert get_estimator(est.spec).params == est.params


def test_specs_give_fresh_instances():
    a, b = get_estimator("ede"), get_estimator("ede")
    a.set_progress(1.0)
    assert b.progress == 0.0


BAD_SPECS = [
    # (spec, words the message must contain)
    ("sigmod", ["unknown estimator 'sigmod'", "did you mean sigmoid"]),
    ("nothing_like_it", ["unknown estimator", "ste-ablate estimators"]),
    ({"name": "hardtahn"}, ["unknown estimator", "hardtanh"]),
    ("sigmoid(betta=2)", ["unknown hyperparameter 'betta'", "did you mean beta"]),
    ("identity(beta=2)", ["unknown hyperparameter 'beta'", "takes none"]),
    ({"name": "sigmoid", "bta": 2}, ["unknown hyperparameter 'bta'", "beta"]),
    ("sigmoid(beta=0)", ["'beta' must be in (0, 1000]", "got 0"]),
    ("sigmoid(beta=-1)", ["must be in (0, 1000]"]),
    ("sigmoid(beta=1e40)", ["must be in (0, 1000]", "got 1e+40"]),
    ("sigmoid(beta=1e999)", ["must be finite"]),
    ("sigmoid(beta=1" + "0" * 400 + ")", ["must be finite"]),
    ({"name": "sigmoid", "beta": float("nan")}, ["must be finite", "nan"]),
    ("sigmoid(beta=abc)", ["must be a number", "'abc'"]),
    ("sigmoid(beta=true)", ["must be a number", "True"]),
    ({"name": "sigmoid", "beta": "4"}, ["must be a number", "'4'"]),
    ({"name": "sigmoid", "beta": None}, ["must be a number"]),
    ({"name": "sigmoid", "beta": [1]}, ["must be a number"]),
    ("bernoulli(backward=foo)", ["must be one of st, sigmoid", "'foo'"]),
    ("bernoulli(backward=1)", ["must be a string"]),
    ("gumbel(tau=1000)", ["must be in [0.01, 100]"]),
    ("gumbel(tau=1e-300)", ["must be in [0.01, 100]"]),
    ("reinmax(tau=0.5)", ["must be in [1, 100]"]),
    ("hard_slope_annealed(a_start=6)", ["a_start", "must not exceed a_end"]),
    ("reste(o_start=0.5)", ["must be in [1, 100]"]),
    ("slope_annealed(beta_start=6)", ["beta_start", "must not exceed beta_end"]),
    ("reste(interval=1, threshold=0.5)", ["interval", "below threshold"]),
    ("sigmoid(", ["malformed", "missing closing ')'"]),
    ("sigmoid(beta=1", ["malformed"]),
    ("sigmoid(beta)", ["malformed", "key=value"]),
    ("sigmoid(beta=)", ["malformed", "key=value"]),
    ("sigmoid(=1)", ["malformed", "key=value"]),
    ("sigmoid(beta=1,)", ["malformed"]),
    ("sigmoid(beta=1, beta=2)", ["'beta' given twice"]),
    ("sigmoid(beta=[1])", ["malformed", "'['"]),
    ("sigmoid(beta=(1))", ["malformed"]),
    ("sigmoid(beta='1)", ["malformed", "unclosed quote"]),
    ("sigmoid(beta=1 2)", ["malformed", "cannot read the value"]),
    ("sigmoid(beta=__import__('os'))", ["malformed"]),
    ("sig moid", ["malformed"]),
    ("(beta=1)", ["malformed"]),
    ("2sigmoid", ["malformed"]),
    ("", ["empty estimator spec"]),
    ("   ", ["empty estimator spec"]),
    ({"beta": 1}, ["needs a string 'name'"]),
    ({"name": 3}, ["needs a string 'name'"]),
    ({"name": "sigmoid", 1: 2}, ["hyperparameter names must be strings"]),
    (3, ["a name, 'name(key=value)', a mapping or an Estimator", "int"]),
    (None, ["NoneType"]),
]


@pytest.mark.parametrize(("spec", "words"), BAD_SPECS, ids=[repr(s[0]) for s in BAD_SPECS])
def test_bad_spec_fails_with_one_clear_line(spec, words):
    with pytest.raises(EstimatorSpecError) as info:
        get_estimator(spec)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert isinstance(info.value, ValueError)
    with pytest.raises(EstimatorSpecError):
        canonical_spec(spec)


def test_describe_accepts_spec_and_reports_bad_name():
    info = describe("sigmoid(beta=4)")
    assert info["spec"] == "sigmoid(beta=4)"
    assert info["params"]["beta"] == pytest.approx(
        {
            "default": 1.0,
            "value": 4.0,
            "type": "float",
            "low": 0.0,
            "high": 1000.0,
            "low_inclusive": False,
            "high_inclusive": True,
            "choices": None,
            "range": "(0, 1000]",
            "doc": "slope of the sigmoid",
        }
    )
    assert "arXiv:1308.3432" in info["paper"] and info["arxiv"] == "1308.3432"
    assert describe("ede")["area"] == pytest.approx(10.0)
    assert describe("ede")["area_end"] == pytest.approx(1.0)
    with pytest.raises(EstimatorSpecError, match="did you mean"):
        describe("sigmoi")


def test_the_required_four_formulas_as_text():
    assert describe("identity")["backward"] == "g"
    assert "clamp(g, -1, 1)" in describe("hardtanh")["backward"]
    assert "1{|x| ≤ clip}" in describe("saturated")["backward"]
    assert describe("saturated")["params"]["clip"]["default"] == 1.0
    assert describe("saturated")["params"]["scale"]["default"] == 1.0
    assert describe("sigmoid")["params"]["beta"]["default"] == 1.0
    assert describe("identity")["area"] is None
    assert describe("hardtanh")["area"] is None
    assert describe("relu")["area"] is None
    assert describe("sigmoid")["area"] == 1.0
    assert describe("saturated")["area"] == 2.0
    assert describe("saturated(scale=0.5)")["area"] == 1.0


# --- registration -----------------------------------------------------------------------------


def _make(name, **attrs):
    body = {
        "name": name,
        "backward_text": "g · 2",
        "paper": "A. Tester. Test estimators. 2024",
        "cite": "Tester 2024",
        "__doc__": "Test estimator.\n\nForward: 1{x > 0}. Backward: 2g. Reference: none.",
        "backward_rule": lambda self, g, x, noise, **kw: 2 * g,
    }
    body.update(attrs)
    return type(f"Est_{name}", (Estimator,), body)


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for name in names:
        registry_module._unregister(name)


def test_register_new_estimator_is_usable(cleanup):
    cleanup.append("double_test")
    cls = register_estimator(
        _make("double_test", hyperparams=(Param("k", 2, kind="int", low=1, high=9),))
    )
    assert "double_test" in list_estimators()
    est = get_estimator("double_test(k=3)")
    assert isinstance(est, cls) and est.params == {"k": 3} and est.spec == "double_test(k=3)"
    assert get_estimator("double_test(k=3.0)").params["k"] == 3
    with pytest.raises(EstimatorSpecError, match="must be an integer"):
        get_estimator("double_test(k=2.5)")
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    (dx,) = torch.autograd.grad(est(x), x, torch.ones(2))
    assert dx.tolist() == [2.0, 2.0]


def test_duplicate_name_raises(cleanup):
    with pytest.raises(ValueError, match="already registered"):
        register_estimator(_make("sigmoid"))
    assert get_estimator("sigmoid").backward_text.startswith("g · β")


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (object, "expects an Estimator subclass"),
        (_make("no paper", paper=""), "identifier"),
        (_make("nopaper", paper=""), "lacks metadata: paper"),
        (
            _make("norule", backward_rule=Estimator.backward_rule),
            "does not implement backward_rule",
        ),
        (
            _make("twice", hyperparams=(Param("a", 1.0), Param("a", 2.0))),
            "hyperparameter twice",
        ),
    ],
)
def test_register_rejects_incomplete(obj, match):
    with pytest.raises(TypeError, match=match):
        register_estimator(obj)


def test_register_checks_defaults_against_ranges():
    with pytest.raises(TypeError, match="invalid default: .*must be in"):
        register_estimator(_make("baddefault", hyperparams=(Param("a", -1.0, low=0.0, high=1.0),)))
    assert "baddefault" not in list_estimators()


@pytest.mark.parametrize(
    "param",
    [Param("a", 1.0, low=0.0), Param("a", 1.0, high=2.0), Param("a", 1.0, low=0.0, high=math.inf)],
)
def test_register_requires_finite_bounds(param):
    with pytest.raises(TypeError, match="'a' needs finite low and high bounds"):
        register_estimator(_make("unbounded", hyperparams=(param,)))
    assert "unbounded" not in list_estimators()


# --- entry-point plugins ----------------------------------------------------------------------


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch, cleanup):
    """A real installed distribution (dist-info with entry_points.txt) on sys.path."""
    site = tmp_path / "site"
    dist = site / "ste_plugin_demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ste-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [ste_variants]
            triple = ste_plugin_demo
            quad = ste_plugin_demo_cls:Quad
            broken = ste_plugin_broken
            """
        )
    )
    common = textwrap.dedent(
        '''\
        from ste_variants import Estimator

        class _Base(Estimator):
            """Plugin estimator.

            Forward: 1{x > 0}. Backward: k g. Reference: a plugin.
            """

            paper = "Plugin paper"
            backward_text = "k g"
        '''
    )
    (site / "ste_plugin_demo.py").write_text(
        common
        + textwrap.dedent(
            """
            from ste_variants import register_estimator

            @register_estimator
            class Triple(_Base):
                name = "triple_plugin"

                def backward_rule(self, g, x, noise):
                    return 3 * g
            """
        )
    )
    (site / "ste_plugin_demo_cls.py").write_text(
        common
        + textwrap.dedent(
            """
            class Quad(_Base):
                name = "quad_plugin"

                def backward_rule(self, g, x, noise):
                    return 4 * g
            """
        )
    )
    (site / "ste_plugin_broken.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(site))
    cleanup.extend(["triple_plugin", "quad_plugin"])
    yield site
    for mod in ("ste_plugin_demo", "ste_plugin_demo_cls", "ste_plugin_broken"):
        sys.modules.pop(mod, None)


def test_entry_point_plugins_load_lazily_once(plugin_dist, monkeypatch):
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    with pytest.warns(
        RuntimeWarning, match=r"plugin 'broken' .*failed to load: RuntimeError: boom$"
    ):
        names = list_estimators()  # first lookup loads the plugins
    assert "triple_plugin" in names and "quad_plugin" in names
    x = torch.tensor([0.5], requires_grad=True)
    for spec, factor in (("triple_plugin", 3.0), ("quad_plugin", 4.0)):
        (dx,) = torch.autograd.grad(get_estimator(spec)(x), x, torch.ones(1))
        assert dx.item() == factor
    # Loaded once: the next lookups neither reload nor warn again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list_estimators() == names
        assert ste_variants.load_plugins() == []


def test_load_plugins_force_reports_loaded(plugin_dist):
    with pytest.warns(RuntimeWarning, match="broken"):
        loaded = ste_variants.load_plugins(force=True)
    assert {"triple", "quad"} <= set(loaded) and "broken" not in loaded


# --- package hygiene --------------------------------------------------------------------------


def test_registry_is_pure_torch():
    code = (
        "import sys, ste_variants; ste_variants.list_estimators(); "
        "print(sorted(m for m in ('wandb', 'matplotlib', 'seaborn', 'runners', 'analysis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
