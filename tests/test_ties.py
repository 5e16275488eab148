"""Ties between conditions: identical on every seed, near-identical within the stated tolerance."""

from __future__ import annotations

import pandas as pd

from analysis.stats.ties import NEAR_RTOL, find_ties, tie_label
from runners.store.records import TIMING_KEYS


def _table(values: dict[str, list[float]]) -> pd.DataFrame:
    """Two epochs of test_mse per seed (value x epoch), plus timing metrics that always differ."""
    rows = []
    for i, (cond, per_seed) in enumerate(values.items()):
        for seed, value in enumerate(per_seed):
            for epoch in (1, 2):
                rows.append((cond, seed, epoch, "test_mse", value * epoch))
                rows.append((cond, seed, epoch, "epoch_time_s", 1.0 + i + seed / 10))
                rows.append((cond, seed, epoch, "diag_time_s", 0.5 + i + seed / 10))
    return pd.DataFrame(rows, columns=["condition", "seed", "epoch", "metric", "value"])


def test_identical_and_near_identical_conditions_are_grouped_and_timing_is_ignored() -> None:
    base = [0.2, 0.3, 0.25]
    table = _table(
        {
            "identity": base,
            "hardtanh": base,
            "sigmoid": [0.21, 0.3, 0.25],  # differs on one seed
            "tanh": [v * (1 + 0.2 * NEAR_RTOL) for v in [0.5, 0.6, 0.7]],
            "tanh2": [0.5, 0.6, 0.7],
            "alone": [0.9, 0.8, 0.7],
        }
    )
    order = ["identity", "hardtanh", "sigmoid", "tanh", "tanh2", "alone"]
    ties = find_ties(table, order, exclude=TIMING_KEYS)  # what `analyze` leaves out
    assert [(p["a"], p["b"], p["kind"], p["seeds"]) for p in ties["pairs"]] == [
        ("identity", "hardtanh", "identical", 3),
        ("tanh", "tanh2", "near-identical", 3),
    ]
    assert 0 < ties["pairs"][1]["max_rel_diff"] <= NEAR_RTOL
    assert [tie_label(g) for g in ties["groups"]] == ["identity ≡ hardtanh", "tanh ≈ tanh2"]
    assert ties["rtol"] == NEAR_RTOL
    # With timing compared, nothing is tied: every run's epoch time differs.
    assert find_ties(table, order)["pairs"] == []


def test_groups_are_transitive_and_one_shared_seed_is_not_a_tie() -> None:
    table = _table({"a": [0.1, 0.2], "b": [0.1, 0.2], "c": [0.1, 0.2], "d": [0.1]})
    ties = find_ties(table, ["a", "b", "c", "d"], exclude=TIMING_KEYS)
    assert ties["groups"] == [{"conditions": ["a", "b", "c"], "kind": "identical"}]
    assert all("d" not in (p["a"], p["b"]) for p in ties["pairs"])


def test_tied_conditions_get_identical_bootstrap_intervals() -> None:
    """Shared seeds are resampled jointly: the same data on the same seeds, the same interval,
    whatever the conditions are called; a condition on other seeds draws other resamples."""
    from analysis.stats.summary import summarize

    x = [0.3422, 0.3638, 0.351, 0.3475, 0.356, 0.3391, 0.3602, 0.3533, 0.3449]
    seeds = list(range(9))
    values = {"identity": x, "hardtanh": x, "saturated": x}
    got = summarize(
        values,
        n_resamples=999,
        seeds={"identity": seeds, "hardtanh": seeds, "saturated": seeds[::-1]},
    ).set_index("condition")
    assert got.loc["identity", "ci_low"] == got.loc["hardtanh", "ci_low"]
    assert got.loc["identity", "ci_high"] == got.loc["hardtanh", "ci_high"]
    assert (
        got.loc["identity", "ci_low"] < got.loc["identity", "mean"] < got.loc["identity", "ci_high"]
    )
    assert got.loc["saturated", "ci_low"] != got.loc["identity", "ci_low"]
    # Without the seeds each label seeds its own draws (the intervals of tied data then differ).
    alone = summarize(values, n_resamples=999).set_index("condition")
    assert alone.loc["identity", "ci_low"] != alone.loc["hardtanh", "ci_low"]
