"""Conditions whose runs give the same results, seed for seed.

Two conditions are tied when they share at least two seeds and, on every shared seed, every
metric at every epoch (timing left out) is bit-identical ("identical") or equal within a relative
tolerance of `NEAR_RTOL` ("near-identical": float rounding, e.g. the same arithmetic in another
order). A tie is a finding (two estimators that never differ in this setting, such as identity
and hardtanh when the clamp never acts), and figures must not draw one curve hidden under
another. Ties are grouped transitively: {a, b, c} when a ~ b and b ~ c.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

NEAR_RTOL = 1e-6  # relative; float32 rounding is ~6e-8 per operation
MIN_SHARED_SEEDS = 2


def find_ties(
    table: pd.DataFrame,
    order: Sequence[str],
    *,
    exclude: Collection[str] = (),
    rtol: float = NEAR_RTOL,
) -> dict[str, Any]:
    """Tied pairs and groups of conditions.

    Args:
        table: one row per run x epoch x metric with columns condition, seed, epoch, metric,
            value (completed runs only).
        order: the conditions, in report order.
        exclude: metrics left out (timing).
        rtol: relative tolerance of a near-identical tie.

    Returns:
        {"rtol", "min_shared_seeds", "pairs": [{"a", "b", "kind", "seeds", "max_rel_diff"}],
        "groups": [{"conditions": [...], "kind": "identical" | "near-identical"}]}; a group is
        "identical" when every tie joining it is.
    """
    rows = table[~table["metric"].isin(list(exclude))]
    series = {
        cond: rows[rows["condition"] == cond].set_index(["seed", "epoch", "metric"])["value"]
        for cond in order
    }
    pairs = []
    for a, b in itertools.combinations(order, 2):
        tie = _compare(series[a], series[b], rtol)
        if tie is not None:
            pairs.append({"a": a, "b": b, **tie})
    return {
        "rtol": rtol,
        "min_shared_seeds": MIN_SHARED_SEEDS,
        "pairs": pairs,
        "groups": _groups(pairs, order),
    }


def _compare(x: pd.Series, y: pd.Series, rtol: float) -> dict[str, Any] | None:
    """The tie between two conditions' values, or None when they differ (or share < 2 seeds)."""
    seeds = sorted(set(x.index.get_level_values(0)) & set(y.index.get_level_values(0)))
    if len(seeds) < MIN_SHARED_SEEDS:
        return None
    x = x[x.index.get_level_values(0).isin(seeds)].sort_index()
    y = y[y.index.get_level_values(0).isin(seeds)].sort_index()
    if not x.index.equals(y.index):  # different epochs or metrics recorded
        return None
    u, v = x.to_numpy(float), y.to_numpy(float)
    if np.array_equal(u, v, equal_nan=True):
        return {"kind": "identical", "seeds": len(seeds), "max_rel_diff": 0.0}
    if not np.allclose(u, v, rtol=rtol, atol=0.0, equal_nan=True):
        return None
    finite = np.isfinite(u) & np.isfinite(v) & (u != v)
    scale = np.maximum(np.abs(u[finite]), np.abs(v[finite]))
    rel = float(np.max(np.abs(u[finite] - v[finite]) / scale))
    return {"kind": "near-identical", "seeds": len(seeds), "max_rel_diff": rel}


def _groups(pairs: list[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Connected components of the tie graph, members in report order."""
    parent = {c: c for c in order}

    def root(c: str) -> str:
        while parent[c] != c:
            c = parent[c]
        return c

    for pair in pairs:
        parent[root(pair["b"])] = root(pair["a"])
    members: dict[str, list[str]] = {}
    for cond in order:
        members.setdefault(root(cond), []).append(cond)
    groups = []
    for conds in members.values():
        if len(conds) < 2:
            continue
        inside = [p for p in pairs if p["a"] in conds]
        kind = "identical" if all(p["kind"] == "identical" for p in inside) else "near-identical"
        groups.append({"conditions": conds, "kind": kind})
    return groups


def tie_label(group: dict[str, Any]) -> str:
    """ "identity ≡ hardtanh" (identical) or "a ≈ b" (near-identical)."""
    sign = " ≡ " if group["kind"] == "identical" else " ≈ "
    return sign.join(group["conditions"])
