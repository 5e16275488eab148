"""Omnibus tests across all conditions, average ranks and critical-difference groups.

Paired design (every condition has the same seeds): Friedman's test on the complete blocks
(seeds), average ranks within blocks (1 = best), Nemenyi's critical difference
CD = q_α √(k(k+1) / 6N) with q_α the studentized range quantile / √2 (Demšar 2006), and the
CD groups: maximal sets of conditions whose average ranks differ by less than CD.
Unpaired: Kruskal–Wallis and the mean rank of each condition in the pooled ranking (no CD).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps


def average_ranks(matrix: np.ndarray, *, lower_is_better: bool) -> np.ndarray:
    """Average rank of each column over the rows (blocks); rank 1 is the best, ties averaged."""
    matrix = np.asarray(matrix, dtype=float)
    keyed = matrix if lower_is_better else -matrix
    return sps.rankdata(keyed, axis=1).mean(axis=0)


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference for k conditions ranked over n_blocks blocks."""
    if k < 2 or n_blocks < 1:
        return math.nan
    q = sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def cd_groups(ranks: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal groups (≥ 2 members) of conditions whose average ranks span less than `cd`.

    Groups are listed from the best-ranked one; members are in rank order.
    """
    if not math.isfinite(cd):
        return []
    ordered = sorted(ranks, key=lambda c: (ranks[c], c))
    groups: list[list[str]] = []
    last_end = -1
    for i in range(len(ordered)):
        j = i
        while j + 1 < len(ordered) and ranks[ordered[j + 1]] - ranks[ordered[i]] < cd:
            j += 1
        # A group ending where the previous one ended is contained in it.
        if j > i and j > last_end:
            groups.append(ordered[i : j + 1])
            last_end = j
    return groups


def omnibus(
    values: Mapping[str, pd.Series],
    *,
    lower_is_better: bool,
    design: str = "auto",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Friedman (paired) or Kruskal–Wallis (unpaired) across every condition.

    Args:
        values: condition -> final values indexed by seed (mapping order = display order).
        lower_is_better: the metric's direction (ranks: 1 = best).
        design: "auto" (paired when every condition shares at least two seeds), "paired",
            "unpaired".
        alpha: level of the critical difference.

    Returns:
        A JSON-ready dict: test, statistic, p, k, n_blocks (paired), the seeds used, average
        ranks, cd, cd_groups and notes.
    """
    labels = [c for c in values if len(values[c].dropna())]
    notes: list[str] = []
    dropped = [c for c in values if c not in labels]
    if dropped:
        notes.append(f"no usable values for {', '.join(dropped)}: left out")
    series = {c: values[c].dropna() for c in labels}
    shared: pd.Index = pd.Index([])
    if labels:
        shared = series[labels[0]].index
        for c in labels[1:]:
            shared = shared.intersection(series[c].index)
    shared = shared.sort_values()
    paired = design == "paired" or (design == "auto" and len(shared) >= 2)
    if design == "auto" and not paired and len(labels) >= 2:
        notes.append(f"only {len(shared)} seed(s) shared by every condition: unpaired omnibus test")
    result: dict[str, Any] = {
        "design": "paired" if paired else "unpaired",
        "k": len(labels),
        "alpha": alpha,
        "conditions": labels,
        "test": None,
        "statistic": None,
        "p": None,
        "n_blocks": None,
        "seeds": None,
        "average_ranks": {},
        "cd": None,
        "cd_groups": [],
        "notes": notes,
    }
    if len(labels) < 2:
        notes.append("fewer than two conditions with values: no omnibus test")
        return result
    if paired:
        matrix = np.column_stack([series[c].loc[shared].to_numpy(float) for c in labels])
        left_out = sorted({_plain(s) for c in labels for s in series[c].index} - set(shared))
        if left_out:
            notes.append(f"seeds {left_out} are not complete blocks: left out of the ranks")
        ranks = average_ranks(matrix, lower_is_better=lower_is_better)
        result.update(n_blocks=len(shared), seeds=[_plain(s) for s in shared])
        result["average_ranks"] = {c: float(r) for c, r in zip(labels, ranks, strict=True)}
        if len(labels) >= 3:
            stat, p = _safe(sps.friedmanchisquare, *matrix.T)
            result.update(test="friedman", statistic=stat, p=p)
        else:
            notes.append("two conditions: the pairwise test is the omnibus test")
        cd = nemenyi_cd(len(labels), len(shared), alpha)
        result["cd"] = cd
        result["cd_groups"] = cd_groups(result["average_ranks"], cd)
    else:
        samples = [series[c].to_numpy(float) for c in labels]
        pooled = np.concatenate(samples)
        ranks = sps.rankdata(pooled if lower_is_better else -pooled)
        bounds = np.cumsum([0] + [len(s) for s in samples])
        result["average_ranks"] = {
            c: float(ranks[bounds[i] : bounds[i + 1]].mean()) for i, c in enumerate(labels)
        }
        stat, p = _safe(sps.kruskal, *samples)
        result.update(test="kruskal", statistic=stat, p=p)
        notes.append("unpaired design: average ranks are pooled ranks; no critical difference")
    return result


def _safe(test: Any, *samples: Sequence[float]) -> tuple[float | None, float | None]:
    # Identical values everywhere make both rank tests undefined (scipy raises or returns NaN).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = test(*samples)
    except ValueError:
        return None, None
    stat, p = float(res.statistic), float(res.pvalue)
    return (stat, p) if math.isfinite(stat) and math.isfinite(p) else (None, None)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
