"""How many seeds a comparison needs, and when significance cannot be reached at all.

With n paired seeds and no ties, the exact two-sided Wilcoxon signed-rank p-value is at least
2 / 2**n (every difference of one sign): 5 seeds give 0.0625, so no pair of estimators can be
significant at 0.05 whatever the data; Holm over m pairs multiplies the smallest p by m. The
sample-size estimate uses the paired t test's exact power (noncentral t).
"""

from __future__ import annotations

import math

from scipy import stats as sps


def min_wilcoxon_p(n: int) -> float:
    """Smallest exact two-sided Wilcoxon signed-rank p with n non-zero paired differences."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2**n)


def min_mannwhitney_p(n: int, m: int) -> float:
    """Smallest exact two-sided Mann–Whitney U p with samples of sizes n and m (no ties)."""
    return 1.0 if n <= 0 or m <= 0 else min(1.0, 2.0 / math.comb(n + m, n))


def min_seeds_for_significance(alpha: float = 0.05, comparisons: int = 1) -> int:
    """Fewest paired seeds with which a Wilcoxon test can reach `alpha` after Holm over
    `comparisons` tests (the smallest p is multiplied by the family size)."""
    n = 1
    while comparisons * min_wilcoxon_p(n) > alpha:
        n += 1
    return n


def paired_t_power(delta: float, sd_diff: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t test with n pairs to detect a mean difference `delta`."""
    if n < 2:
        return 0.0
    if sd_diff == 0:
        return 1.0 if delta != 0 else alpha
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) / sd_diff * math.sqrt(n)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_needed(
    delta: float,
    sd_diff: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    comparisons: int = 1,
    max_n: int = 10_000,
) -> int | None:
    """Paired seeds needed to detect `delta` with the given power (paired t approximation).

    `alpha` is divided by `comparisons` (Bonferroni, what Holm demands of the smallest p).
    Returns None when the difference is zero, the SD unknown, or more than `max_n` seeds would
    be needed. Never less than what the Wilcoxon floor needs for the same family.
    """
    if not (math.isfinite(delta) and math.isfinite(sd_diff)) or delta == 0:
        return None
    level = alpha / max(1, comparisons)
    floor = min_seeds_for_significance(alpha, comparisons)
    n = 2
    while paired_t_power(delta, sd_diff, n, level) < power:
        n += 1
        if n > max_n:
            return None
    return max(n, floor)


def significance_warnings(
    n_seeds: int, *, comparisons: int, alpha: float = 0.05, design: str = "paired"
) -> list[str]:
    """Plain-language warnings when the seed count makes the rank tests' significance unreachable."""
    out: list[str] = []
    if design != "paired" or n_seeds < 1:
        return out
    floor = min_wilcoxon_p(n_seeds)
    if floor > alpha:
        out.append(
            f"With {n_seeds} paired seeds the smallest possible two-sided Wilcoxon p is "
            f"2/2^{n_seeds} = {floor:.4g} > {alpha:g}: no pair can be significant, whatever the "
            f"data. {min_seeds_for_significance(alpha, 1)} seeds are the minimum for one test"
            + (
                f", {min_seeds_for_significance(alpha, comparisons)} with Holm over "
                f"{comparisons} pairs."
                if comparisons > 1
                else "."
            )
        )
    elif comparisons > 1 and comparisons * floor > alpha:
        out.append(
            f"With {n_seeds} paired seeds and Holm over {comparisons} pairs the smallest adjusted "
            f"Wilcoxon p is {comparisons} × {floor:.4g} = {comparisons * floor:.4g} > {alpha:g}: "
            f"no pair can be significant; "
            f"{min_seeds_for_significance(alpha, comparisons)} seeds are needed."
        )
    return out
