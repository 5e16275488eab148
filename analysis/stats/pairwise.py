"""Pairwise comparisons of conditions across seeds (numpy and scipy only).

Paired tests when seeds are shared (Wilcoxon signed-rank, paired t), otherwise Welch's t and
Mann–Whitney U; Holm (or Benjamini–Hochberg) across the family; Hedges' g, the probability of
improvement and the mean difference with its bootstrap CI. Each pair's bootstrap draws come from
a Generator derived from (seed, the pair's labels).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from analysis.stats.summary import (
    CONFIDENCE,
    N_RESAMPLES,
    bootstrap_ci,
    mean_diff_stat,
    mean_stat,
    rng_for,
)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and are not counted in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg step-up adjusted p-values (FDR; NaNs stay NaN, not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    running = 1.0
    for rank, i in reversed(list(enumerate(idx[np.argsort(p[idx], kind="stable")]))):
        running = min(running, m * p[i] / (rank + 1))
        out[i] = running
    return out


CORRECTIONS: dict[str, Callable[[Sequence[float]], np.ndarray]] = {
    "holm": holm,
    "bh": benjamini_hochberg,
}


def hedges_correction(df: float) -> float:
    """Hedges' exact small-sample factor J(df) = Γ(df/2) / (√(df/2) Γ((df−1)/2))."""
    if df < 2:
        return math.nan
    return math.exp(
        special.gammaln(df / 2) - special.gammaln((df - 1) / 2) - 0.5 * math.log(df / 2)
    )


def hedges_g(x: Sequence[float], y: Sequence[float], *, paired: bool) -> float:
    """Hedges' g for mean(x) − mean(y).

    Unpaired: Cohen's d with the pooled SD, times J(nx + ny − 2). Paired: g_z, the mean paired
    difference over the SD of the differences, times J(n − 1) (Lakens 2013, "d_z" corrected).
    Zero spread: 0 when the means are equal, ±inf otherwise; NaN when the sample is too small.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if paired:
        d = x - y
        df = d.size - 1
        diff, spread = (float(np.mean(d)), float(np.std(d, ddof=1))) if d.size > 1 else (0, 0)
    else:
        df = x.size + y.size - 2
        if x.size < 2 or y.size < 2:
            return math.nan
        pooled = ((x.size - 1) * np.var(x, ddof=1) + (y.size - 1) * np.var(y, ddof=1)) / df
        diff, spread = float(np.mean(x) - np.mean(y)), math.sqrt(pooled)
    correction = hedges_correction(df)
    if math.isnan(correction):
        return math.nan
    if spread == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return correction * diff / spread


def prob_improvement(x: Sequence[float], y: Sequence[float], *, lower_is_better: bool) -> float:
    """P(X better than Y) as rliable defines it: over all (x_i, y_j) pairs, ties count 1/2.

    Equals U / (nx·ny) for the Mann–Whitney U of x against y (for lower-is-better metrics, U of
    the negated values), whether or not the seeds are paired.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not x.size or not y.size:
        return math.nan
    a, b = (-x, -y) if lower_is_better else (x, y)
    greater = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(greater + 0.5 * ties)


def compare(
    x: Sequence[float],
    y: Sequence[float],
    *,
    paired: bool,
    lower_is_better: bool,
    rng: np.random.Generator | int,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """Tests and effect sizes for condition x against y (x − y).

    Paired (x[i] and y[i] share a seed): Wilcoxon signed-rank (zero differences dropped, scipy's
    "wilcox") and paired t. Unpaired: Mann–Whitney U and Welch's t. A test whose statistic is
    undefined (too few values, zero variance) reports NaN, except that identical paired values
    give Wilcoxon p = 1 (no evidence of any difference).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    row: dict[str, Any] = {"design": "paired" if paired else "unpaired"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if paired:
            d = x - y
            row.update(test="wilcoxon", t_test="paired_t", effect="hedges_g_z")
            if d.size < 2:
                row.update(stat=math.nan, p=math.nan)
            elif np.all(d == 0):
                row.update(stat=0.0, p=1.0)
            else:
                res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
                row.update(stat=float(res.statistic), p=float(res.pvalue))
            if d.size < 2 or np.std(d) == 0:
                row.update(t_stat=math.nan, p_t=math.nan)
            else:
                res = sps.ttest_rel(x, y)
                row.update(t_stat=float(res.statistic), p_t=float(res.pvalue))
            sd_diff = float(np.std(d, ddof=1)) if d.size > 1 else math.nan
            low, high, how = bootstrap_ci(
                [d], mean_stat, rng=rng, confidence=confidence, n_resamples=n_resamples
            )
        else:
            row.update(test="mannwhitney", t_test="welch_t", effect="hedges_g")
            if x.size < 1 or y.size < 1 or np.ptp(np.concatenate([x, y])) == 0:
                same = x.size > 0 and y.size > 0
                row.update(stat=float(x.size * y.size / 2) if same else math.nan)
                row.update(p=1.0 if same else math.nan)
            else:
                res = sps.mannwhitneyu(x, y, alternative="two-sided")
                row.update(stat=float(res.statistic), p=float(res.pvalue))
            if x.size < 2 or y.size < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
                row.update(t_stat=math.nan, p_t=math.nan)
            else:
                res = sps.ttest_ind(x, y, equal_var=False)
                row.update(t_stat=float(res.statistic), p_t=float(res.pvalue))
            var = (np.var(x, ddof=1) if x.size > 1 else math.nan) + (
                np.var(y, ddof=1) if y.size > 1 else math.nan
            )
            sd_diff = float(math.sqrt(var)) if np.isfinite(var) else math.nan
            low, high, how = bootstrap_ci(
                [x, y], mean_diff_stat, rng=rng, confidence=confidence, n_resamples=n_resamples
            )
    mean_x = float(np.mean(x)) if x.size else math.nan
    mean_y = float(np.mean(y)) if y.size else math.nan
    row.update(
        n_a=int(x.size),
        n_b=int(y.size),
        mean_a=mean_x,
        mean_b=mean_y,
        diff=mean_x - mean_y,
        diff_ci_low=low,
        diff_ci_high=high,
        diff_ci_method=how,
        sd_diff=sd_diff,
        g=hedges_g(x, y, paired=paired),
        p_improve=prob_improvement(x, y, lower_is_better=lower_is_better),
    )
    return row


def pairwise(
    values: Mapping[str, pd.Series],
    *,
    lower_is_better: bool,
    design: str = "auto",
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """Every pair of conditions (mapping order), corrected across the family.

    Args:
        values: condition -> final values indexed by seed.
        lower_is_better: the metric's direction (p_improve = P(a better than b)).
        design: "auto" (paired on the shared seeds when the two conditions share at least two,
            else unpaired), "paired" or "unpaired".
        correction: "holm" or "bh", applied to the rank tests and to the t tests separately.
        alpha: level for the `significant` column (on the adjusted rank-test p).
        seed: base seed of the bootstrap draws (one derived Generator per pair).
        confidence: CI level.
        n_resamples: bootstrap resamples.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, not {correction!r}")
    if design not in ("auto", "paired", "unpaired"):
        raise ValueError(f"design must be auto, paired or unpaired, not {design!r}")
    rows = []
    for a, b in combinations(list(values), 2):
        sa, sb = values[a].dropna(), values[b].dropna()
        shared = sa.index.intersection(sb.index).sort_values()
        paired = design == "paired" or (design == "auto" and len(shared) >= 2)
        if paired:
            x, y = sa.loc[shared].to_numpy(), sb.loc[shared].to_numpy()
        else:
            x, y = sa.sort_index().to_numpy(), sb.sort_index().to_numpy()
        row = {"a": a, "b": b}
        row.update(
            compare(
                x,
                y,
                paired=paired,
                lower_is_better=lower_is_better,
                rng=rng_for(seed, f"{a}\x00{b}"),
                confidence=confidence,
                n_resamples=n_resamples,
            )
        )
        row["n_pairs"] = len(shared) if paired else 0
        row["seeds_unpaired"] = len(sa) + len(sb) - 2 * len(shared) if paired else 0
        rows.append(row)
    columns = [
        "a", "b", "design", "n_a", "n_b", "n_pairs", "seeds_unpaired", "mean_a", "mean_b",
        "diff", "diff_ci_low", "diff_ci_high", "diff_ci_method", "sd_diff", "test", "stat", "p",
        "p_adj", "t_test", "t_stat", "p_t", "p_t_adj", "effect", "g", "p_improve", "better",
        "significant",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame
    adjust = CORRECTIONS[correction]
    frame["p_adj"] = adjust(frame["p"].to_numpy())
    frame["p_t_adj"] = adjust(frame["p_t"].to_numpy())
    sign = -1.0 if lower_is_better else 1.0
    frame["better"] = [
        (a if sign * d > 0 else b) if np.isfinite(d) and d != 0 else ""
        for a, b, d in zip(frame["a"], frame["b"], frame["diff"], strict=True)
    ]
    frame["significant"] = (frame["p_adj"] < alpha).astype(bool)
    return frame
