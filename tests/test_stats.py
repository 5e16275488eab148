"""analysis.stats (summary, pairwise, omnibus, planning) against hand-computed values and scipy on fixed data."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis.stats.omnibus import average_ranks, cd_groups, nemenyi_cd, omnibus
from analysis.stats.pairwise import (
    benjamini_hochberg,
    hedges_correction,
    hedges_g,
    holm,
    pairwise,
    prob_improvement,
)
from analysis.stats.planning import (
    min_mannwhitney_p,
    min_seeds_for_significance,
    min_wilcoxon_p,
    paired_t_power,
    seeds_needed,
    significance_warnings,
)
from analysis.stats.summary import bootstrap_ci, describe, iqm, mean_stat


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    assert iqm([100, 1, 3, 2]) == pytest.approx(2.5)  # mean(2, 3): outlier trimmed
    x = np.random.default_rng(0).normal(size=37)
    assert iqm(x) == pytest.approx(sps.trim_mean(x, 0.25))


def test_describe_hand_values():
    d = describe([1.0, 2.0, 3.0, 4.0, 10.0], rng=0, n_resamples=999)
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(4.0)
    assert d["std"] == pytest.approx(math.sqrt(50 / 4))  # squared deviations 9+4+1+0+36
    assert d["median"] == 3.0
    assert d["iqm"] == pytest.approx(3.0)  # trims 1 each side (int(0.25 * 5)): mean(2, 3, 4)
    assert d["ci_low"] < d["mean"] < d["ci_high"]


def test_bootstrap_is_seeded_and_matches_scipy():
    x = np.array([0.031, 0.029, 0.035, 0.030, 0.033, 0.028])
    a = bootstrap_ci([x], mean_stat, rng=7, n_resamples=999)
    b = bootstrap_ci([x], mean_stat, rng=7, n_resamples=999)
    c = bootstrap_ci([x], mean_stat, rng=8, n_resamples=999)
    assert a == b
    assert a[:2] != c[:2]
    # The same draw through scipy directly (the child seed is the first draw of the seed's rng).
    child = int(np.random.default_rng(7).integers(0, 2**63 - 1, size=2)[0])
    ref = sps.bootstrap(
        (x,), mean_stat, n_resamples=999, method="BCa", rng=np.random.default_rng(child)
    )
    assert a[0] == pytest.approx(ref.confidence_interval.low)
    assert a[1] == pytest.approx(ref.confidence_interval.high)
    assert a[2] == "BCa"


def test_bootstrap_small_and_constant_samples():
    assert all(math.isnan(v) for v in bootstrap_ci([[1.0]], mean_stat, rng=0)[:2])
    low, high, how = bootstrap_ci([[2.0, 2.0, 2.0]], mean_stat, rng=0)
    assert (low, high, how) == (2.0, 2.0, "degenerate")
    d = describe([5.0], rng=0)
    assert d["n"] == 1 and d["mean"] == 5.0 and math.isnan(d["std"]) and math.isnan(d["ci_low"])


def test_holm_hand_values():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> running max .06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # .5·2 = 1 (capped); .9·1 = .9 but never below the step before it: 1
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.01, float("nan"), 0.02])  # NaN: not tested, not counted
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])


def test_benjamini_hochberg_hand_values_and_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    # m p / rank: .005*4/1=.02, .01*4/2=.02, .03*4/3=.04, .04*4/4=.04; min from the top
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.random(12) ** 3
        np.testing.assert_allclose(benjamini_hochberg(q), sps.false_discovery_control(q))


def test_hedges_g_unpaired_hand_value():
    # means 2 and 5, both variances 1 -> d = -3; J(4) = Γ(2) / (√2 Γ(1.5)) = 0.797885
    g = hedges_g([1, 2, 3], [4, 5, 6], paired=False)
    assert g == pytest.approx(-3 * 0.7978845608, rel=1e-9)
    assert hedges_correction(4) == pytest.approx(1 - 3 / (4 * 4 - 1), abs=3e-3)


def test_hedges_g_paired_is_g_z():
    # d = [1, 2, 2, 3]: mean 2, sd √(2/3) -> d_z = √6; J(3) = Γ(1.5)/(√1.5 Γ(1)) -> g_z = √π
    g = hedges_g([1, 2, 3, 4], [0, 0, 1, 1], paired=True)
    assert g == pytest.approx(math.sqrt(math.pi), rel=1e-9)
    assert hedges_g([1, 1, 1], [1, 1, 1], paired=True) == 0.0
    assert hedges_g([2, 2, 2], [1, 1, 1], paired=True) == math.inf


def test_probability_of_improvement_hand_value_and_mann_whitney():
    x, y = [1, 2, 3], [2, 3, 4]
    # lower is better: P(x < y) + 1/2 P(x == y) = (3 + 2.5 + 1.5) / 9
    assert prob_improvement(x, y, lower_is_better=True) == pytest.approx(7 / 9)
    assert prob_improvement(x, y, lower_is_better=False) == pytest.approx(2 / 9)
    u = sps.mannwhitneyu(y, x).statistic  # U counts y > x (ties 1/2)
    assert prob_improvement(x, y, lower_is_better=True) == pytest.approx(u / 9)


def _series(values, seeds):
    return pd.Series(np.asarray(values, dtype=float), index=list(seeds))


def test_pairwise_uses_paired_tests_on_shared_seeds():
    a = _series([0.30, 0.31, 0.29, 0.33, 0.32, 0.30], range(6))
    b = _series([0.32, 0.34, 0.30, 0.35, 0.36, 0.31], range(6))
    pw = pairwise({"a": a, "b": b}, lower_is_better=True, n_resamples=999)
    row = pw.iloc[0]
    assert row["design"] == "paired" and row["test"] == "wilcoxon" and row["t_test"] == "paired_t"
    assert row["p"] == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert row["p"] == pytest.approx(0.03125)  # all 6 differences negative: 2 / 2**6
    assert row["p_t"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert row["effect"] == "hedges_g_z" and row["better"] == "a" and row["p_improve"] > 0.5
    assert row["diff_ci_low"] <= row["diff"] <= row["diff_ci_high"] < 0


def test_pairwise_unpaired_without_shared_seeds():
    a = _series([0.30, 0.31, 0.29, 0.33], [0, 1, 2, 3])
    b = _series([0.32, 0.34, 0.30, 0.35], [10, 11, 12, 13])
    pw = pairwise({"a": a, "b": b}, lower_is_better=True, n_resamples=999)
    row = pw.iloc[0]
    assert row["design"] == "unpaired" and row["test"] == "mannwhitney"
    assert row["p"] == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    assert row["p_t"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert row["n_pairs"] == 0 and row["effect"] == "hedges_g"


def test_pairwise_forced_design_and_holm_family():
    rng = np.random.default_rng(5)
    vals = {c: _series(rng.normal(i, 1, 8), range(8)) for i, c in enumerate("abcd")}
    pw = pairwise(vals, lower_is_better=False, design="unpaired", n_resamples=999)
    assert len(pw) == 6 and set(pw["design"]) == {"unpaired"}
    np.testing.assert_allclose(pw["p_adj"], holm(pw["p"]))
    np.testing.assert_allclose(pw["p_t_adj"], holm(pw["p_t"]))
    bh = pairwise(vals, lower_is_better=False, correction="bh", n_resamples=999)
    np.testing.assert_allclose(bh["p_adj"], sps.false_discovery_control(bh["p"]))
    with pytest.raises(ValueError):
        pairwise(vals, lower_is_better=True, correction="bonferoni")


def test_identical_results_give_p_one_not_an_error():
    a = _series([0.3, 0.31, 0.32], range(3))
    row = pairwise({"a": a, "b": a.copy()}, lower_is_better=True, n_resamples=99).iloc[0]
    assert row["p"] == 1.0 and math.isnan(row["p_t"]) and row["g"] == 0.0
    assert row["p_improve"] == 0.5 and row["better"] == ""


def test_average_ranks_friedman_and_nemenyi():
    matrix = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]])
    np.testing.assert_allclose(average_ranks(matrix, lower_is_better=True), [1.5, 1.5, 3])
    np.testing.assert_allclose(average_ranks(matrix, lower_is_better=False), [2.5, 2.5, 1])
    # Demšar 2006, table 5: q_0.05 = 2.569 for k = 4 -> CD = 2.569 √(4·5 / (6·10))
    assert nemenyi_cd(4, 10) == pytest.approx(2.569 * math.sqrt(20 / 60), abs=1e-3)
    rng = np.random.default_rng(2)
    data = rng.normal(size=(8, 4)) + np.array([0, 0.5, 1.0, 1.5])
    vals = {c: _series(data[:, j], range(8)) for j, c in enumerate("abcd")}
    omni = omnibus(vals, lower_is_better=True)
    ref = sps.friedmanchisquare(*data.T)
    assert omni["test"] == "friedman" and omni["design"] == "paired"
    assert omni["statistic"] == pytest.approx(ref.statistic) and omni["p"] == pytest.approx(
        ref.pvalue
    )
    assert omni["n_blocks"] == 8 and omni["cd"] == pytest.approx(nemenyi_cd(4, 8))


def test_omnibus_unpaired_is_kruskal():
    vals = {"a": _series([1, 2, 3], [0, 1, 2]), "b": _series([4, 5, 6], [3, 4, 5])}
    omni = omnibus(vals, lower_is_better=True)
    assert omni["test"] == "kruskal" and omni["cd"] is None
    assert omni["p"] == pytest.approx(sps.kruskal([1, 2, 3], [4, 5, 6]).pvalue)
    assert omni["average_ranks"] == {"a": 2.0, "b": 5.0}


def test_cd_groups_hand_cases():
    ranks = {"A": 1.0, "B": 1.5, "C": 2.8, "D": 3.0}
    assert cd_groups(ranks, 1.0) == [["A", "B"], ["C", "D"]]
    assert cd_groups(ranks, 1.5) == [["A", "B"], ["B", "C"], ["C", "D"]]
    assert cd_groups(ranks, 5.0) == [["A", "B", "C", "D"]]
    assert cd_groups(ranks, 0.1) == []


def test_wilcoxon_floor_and_warnings():
    assert min_wilcoxon_p(5) == 0.0625
    assert min_wilcoxon_p(6) == 0.03125
    assert sps.wilcoxon([0.1, 0.2, 0.3, 0.4, 0.5]).pvalue == pytest.approx(0.0625)  # the floor
    assert min_mannwhitney_p(3, 3) == pytest.approx(0.1)  # 2 / C(6, 3)
    assert min_seeds_for_significance(0.05, 1) == 6
    assert min_seeds_for_significance(0.05, 28) == 11  # 28 · 2 / 2**11 < 0.05 < 28 / 2**9
    (warning,) = significance_warnings(5, comparisons=1)
    assert "0.0625" in warning and "6 seeds" in warning
    assert significance_warnings(6, comparisons=1) == []
    assert "7 seeds are needed" in significance_warnings(6, comparisons=3)[0]
    assert significance_warnings(3, comparisons=1, design="unpaired") == []


def test_seed_planner_paired_t():
    # d_z = 1 at alpha .05, power .8: the paired t test needs 10 pairs (G*Power gives 10).
    assert seeds_needed(1.0, 1.0) == 10
    assert paired_t_power(1.0, 1.0, 10) >= 0.8 > paired_t_power(1.0, 1.0, 9)
    assert seeds_needed(10.0, 1.0) == 6  # huge effect: the Wilcoxon floor decides
    assert seeds_needed(0.0, 1.0) is None
    more = seeds_needed(1.0, 1.0, comparisons=6)
    assert more is not None and more > 10


def test_stats_never_imports_plotting():
    code = (
        "import sys, analysis.stats.omnibus, analysis.stats.pairwise, analysis.stats.planning, "
        "analysis.stats.summary, analysis.study; "
        "bad = [m for m in ('matplotlib', 'seaborn') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
