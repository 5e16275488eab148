"""Per-condition statistics across seeds, with seeded bootstrap intervals (numpy and scipy only).

Per condition: n, mean, std, median, interquartile mean and a bootstrap CI of the mean. Every
random draw comes from an explicit seed. Conditions measured on the same seeds are resampled
jointly: their bootstrap seed is derived from (seed, the seed list), so each draws the same
resamples of seeds, and identical data give identical intervals. Without seed lists it is
derived from (seed, crc32(label)). Either way, adding a condition never changes another's
interval.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

N_RESAMPLES = 9999
CONFIDENCE = 0.95


def rng_for(seed: int, label: str) -> np.random.Generator:
    """A Generator derived from a base seed and a label (stable across runs and orderings)."""
    return np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8"))])


def iqm(x: Sequence[float]) -> float:
    """Interquartile mean as rliable defines it: `scipy.stats.trim_mean(x, 0.25)`."""
    x = np.asarray(x, dtype=float)
    return float(sps.trim_mean(x, 0.25)) if x.size else math.nan


def bootstrap_ci(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., Any],
    *,
    rng: np.random.Generator | int,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    method: str = "BCa",
) -> tuple[float, float, str]:
    """A bootstrap confidence interval with `scipy.stats.bootstrap`, robust to tiny samples.

    Args:
        samples: one array (one-sample statistic) or two (e.g. a difference of means), resampled
            independently.
        statistic: vectorised statistic `f(*samples, axis)`.
        rng: Generator or seed (required: every draw is seeded).
        confidence: confidence level.
        n_resamples: bootstrap resamples.
        method: "BCa" (scipy's default) or "percentile"; BCa falls back to percentile when its
            jackknife is degenerate.

    Returns:
        (low, high, method used): (nan, nan, "none") below two values per sample; the point
        value twice with "degenerate" when every sample is constant.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if any(a.size < 2 for a in arrays) or any(not np.all(np.isfinite(a)) for a in arrays):
        return math.nan, math.nan, "none"
    if all(np.ptp(a) == 0 for a in arrays):
        point = float(statistic(*arrays, axis=-1))
        return point, point, "degenerate"
    seed_rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    # One child seed per attempt, so that the fallback does not depend on what BCa consumed.
    seeds = seed_rng.integers(0, 2**63 - 1, size=2)
    methods = [method] if method == "percentile" else [method, "percentile"]
    for attempt, name in enumerate(methods):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = sps.bootstrap(
                tuple(arrays),
                statistic,
                vectorized=True,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method=name,
                rng=np.random.default_rng(int(seeds[attempt])),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return low, high, name
    return math.nan, math.nan, "none"


def mean_stat(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean as a vectorised bootstrap statistic."""
    return np.mean(x, axis=axis)


def mean_diff_stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(x) − mean(y) as a vectorised two-sample bootstrap statistic."""
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def describe(
    x: Sequence[float],
    *,
    rng: np.random.Generator | int,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """n, mean, std (ddof=1), median, IQM and a bootstrap CI of the mean for one sample."""
    x = np.asarray(x, dtype=float)
    low, high, how = bootstrap_ci(
        [x], mean_stat, rng=rng, confidence=confidence, n_resamples=n_resamples
    )
    return {
        "n": int(x.size),
        "mean": float(np.mean(x)) if x.size else math.nan,
        "std": float(np.std(x, ddof=1)) if x.size > 1 else math.nan,
        "median": float(np.median(x)) if x.size else math.nan,
        "iqm": iqm(x),
        "min": float(np.min(x)) if x.size else math.nan,
        "max": float(np.max(x)) if x.size else math.nan,
        "ci_low": low,
        "ci_high": high,
        "ci_method": how,
    }


def summarize(
    values: Mapping[str, Sequence[float]],
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seeds: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """`describe` for each condition (in the mapping's order); one row per condition.

    Args:
        seeds: each condition's run seeds, in the order of its values. Conditions with the same
            seed list then draw the same resamples of seeds (joint resampling).
    """
    rows = []
    for label, x in values.items():
        key = label if seeds is None else "seeds " + ",".join(str(int(s)) for s in seeds[label])
        row = {"condition": label}
        row.update(
            describe(x, rng=rng_for(seed, key), confidence=confidence, n_resamples=n_resamples)
        )
        rows.append(row)
    return pd.DataFrame(rows)
