"""Spec strings that are hostile rather than mistaken: other scripts' digits, numbers and names
of any length. Each is one EstimatorSpecError line of bounded length, never a raw ValueError."""

from __future__ import annotations

import pytest

from ste_variants import EstimatorSpecError, get_estimator

LONG = 100_000
MAX_MESSAGE = 300


@pytest.mark.parametrize(
    "spec",
    [
        "sigmoid(beta=٤)",  # Arabic-Indic four
        "sigmoid(beta=４)",  # full-width four
        "sigmoid(beta=1٤)",
        "sigmoid(beta=4.٥)",
        "sigmoid(beta=4e٣)",
        "gumbel_rao(samples=３)",
    ],
)
def test_only_ascii_digits(spec):
    with pytest.raises(EstimatorSpecError, match="malformed"):
        get_estimator(spec)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("sigmoid(beta=" + "9" * 5000 + ")", ["must be finite"]),
        ("sigmoid(beta=-" + "9" * 5000 + ")", ["must be finite"]),
        ("gumbel_rao(samples=" + "9" * 5000 + ")", ["must be finite"]),
        ("sigmoid(beta=" + "9" * 5000 + ".5)", ["must be finite"]),
        ("sigmoid(beta=0." + "0" * 5000 + "1)", ["must be in (0, 1000]"]),
        ("x" * LONG, ["unknown estimator", "100000 characters"]),
        ({"name": "x" * LONG}, ["unknown estimator", "100000 characters"]),
        ("sigmoid(" + "b" * LONG + "=1)", ["unknown hyperparameter", "characters"]),
        ("bernoulli(backward=" + "s" * LONG + ")", ["must be one of st, sigmoid", "characters"]),
        ("sigmoid(beta=" + "1 " * LONG + ")", ["malformed", "characters"]),
        ("sigmoid(beta=1" + ", beta=1" * LONG + ")", ["malformed", "given twice"]),
        ("si gmoid" + " x" * LONG, ["malformed", "characters"]),
        ({"name": "sigmoid", "beta": "4" * LONG}, ["must be a number", "characters"]),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_long_input_gives_one_short_line(spec, words):
    with pytest.raises(EstimatorSpecError) as info:
        get_estimator(spec)
    message = str(info.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message[:500]
    for word in words:
        assert word in message, message


def test_integers_keep_their_type_up_to_eighteen_digits():
    est = get_estimator("gumbel_rao(samples=00000000000000007)")
    assert est.params["samples"] == 7 and type(est.params["samples"]) is int
