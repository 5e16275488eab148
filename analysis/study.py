"""From a tidy table to the numbers of one comparison (no plotting, no files).

The conditions compared are the grid's factors other than the seed (usually the estimator alone);
their order is the spec's. Only `completed` runs with a finite final value enter the statistics;
every other cell (missing, failed, diverged, interrupted, running, corrupt, no value) is counted
per condition and listed, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.sources.tidy import STATUSES, StoreError, StudyData
from analysis.stats import planning
from analysis.stats.omnibus import omnibus
from analysis.stats.pairwise import pairwise as pairwise_comparisons
from analysis.stats.summary import N_RESAMPLES, summarize
from analysis.stats.ties import find_ties
from runners.store.records import TIMING_KEYS
from runners.store.records import direction as metric_direction

# A condition whose mean test MSE is above this share of the trivial reconstruction's barely
# beats it: its models learnt little more than the average image.
BARELY_BEATS = 0.9


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one comparison (all written into the report's methods paragraph)."""

    metric: str = "test_mse"
    direction: str | None = None  # None: from runners.store.records
    design: str = "auto"  # auto | paired | unpaired
    correction: str = "holm"  # holm | bh
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = N_RESAMPLES
    seed: int = 0
    power: float = 0.8
    target_diff: float | None = None  # seed planner: also plan for this absolute difference


@dataclass
class StudyResult:
    """Everything a report or a figure needs about one comparison."""

    config: StudyConfig
    direction: str
    group_by: list[str]
    order: list[str]
    estimators: dict[str, str]
    cells: pd.DataFrame
    final: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame
    pairwise: pd.DataFrame
    omnibus: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def lower_is_better(self) -> bool:
        """True when smaller values of the metric are better."""
        return self.direction == "lower"


def condition_labels(frame: pd.DataFrame, group_by: list[str]) -> pd.Series:
    """One readable label per row: the estimator spec, then `factor=value` for other factors."""
    parts = []
    for factor in group_by:
        values = frame[factor].astype("object")
        if factor == "estimator":
            parts.append(values.map(lambda v: "?" if _missing(v) else str(v)))
        else:
            parts.append(values.map(lambda v, f=factor: f"{f}={'?' if _missing(v) else v}"))
    if not parts:
        return pd.Series(["all"] * len(frame), index=frame.index, dtype="str")
    label = parts[0]
    for part in parts[1:]:
        label = label + ", " + part
    return label.astype("str")


def grouping(data: StudyData) -> list[str]:
    """The factors that define a condition: every grid axis but the seed."""
    group_by = [a for a in data.axes if a != "seed" and a in data.table.columns]
    # The estimator leads the label ("hardtanh, pre_threshold_relu=False"); other factors follow.
    group_by.sort(key=lambda a: a != "estimator")
    return group_by or ["estimator"]


def run_study(data: StudyData, config: StudyConfig = StudyConfig()) -> StudyResult:
    """Compute the summary, pairwise comparisons, omnibus test and seed plan of one metric."""
    direction = metric_direction(config.metric, config.direction)
    lower = direction == "lower"
    group_by = grouping(data)
    table = data.table.copy()
    table["condition"] = condition_labels(table, group_by)
    cells = data.cells.copy()
    for factor in group_by:
        if factor not in cells.columns:
            cells[factor] = cells["run_id"].map(
                table.drop_duplicates("run_id").set_index("run_id")[factor]
            )
    cells["condition"] = condition_labels(cells, group_by)
    order = list(dict.fromkeys(cells["condition"]))
    estimators = {
        cond: str(est)
        for cond, est in cells.drop_duplicates("condition")[["condition", "estimator"]].itertuples(
            index=False
        )
        if not _missing(est)
    }

    rows = table[(table["metric"] == config.metric) & (table["status"] == "completed")]
    curves = rows[["condition", "run_id", "seed", "epoch", "value"]].reset_index(drop=True)
    last = rows.sort_values(["run_id", "epoch"]).groupby("run_id", sort=False).tail(1)
    final = last[["condition", "run_id", "seed", "value"]]
    final = final[np.isfinite(final["value"].to_numpy(float))]
    final = _in_order(final, order)
    cells["usable"] = cells["run_id"].isin(set(final["run_id"]))
    cells["final_value"] = cells["run_id"].map(last.set_index("run_id")["value"])

    duplicated = final[final.duplicated(["condition", "seed"], keep=False)]
    if not duplicated.empty:
        cond, seed = duplicated.iloc[0][["condition", "seed"]]
        raise StoreError(
            f"condition {cond!r} has several completed runs with seed {seed}: some factor varies "
            "that is not a grid axis (analyse with the spec, or a store holding one study)"
        )
    values = {
        cond: final[final["condition"] == cond].set_index("seed")["value"].astype(float)
        for cond in order
    }
    summary = summarize(
        {c: v.to_numpy() for c, v in values.items()},
        seed=config.seed,
        confidence=config.confidence,
        n_resamples=config.n_resamples,
        seeds={c: v.index.to_numpy() for c, v in values.items()},
    )
    summary = _add_counts(summary, cells)
    pairwise = pairwise_comparisons(
        values,
        lower_is_better=lower,
        design=config.design,
        correction=config.correction,
        alpha=config.alpha,
        seed=config.seed,
        confidence=config.confidence,
        n_resamples=config.n_resamples,
    )
    omni = omnibus(values, lower_is_better=lower, design=config.design, alpha=config.alpha)
    summary["avg_rank"] = summary["condition"].map(omni["average_ranks"]).astype(float)
    summary["best"] = _best(summary, lower)
    warnings = _partial_warnings(cells)
    omni["planning"] = _plan(pairwise, config, warnings)
    # Ties compare whole runs (every metric, every epoch), not only the analysed value.
    completed = table[(table["status"] == "completed") & table["condition"].isin(order)]
    omni["ties"] = find_ties(completed, order, exclude=TIMING_KEYS)
    budget = training_budget(completed, order)
    return StudyResult(
        config=config,
        direction=direction,
        group_by=group_by,
        order=order,
        estimators=estimators,
        cells=cells,
        final=final.reset_index(drop=True),
        curves=curves,
        summary=summary,
        pairwise=pairwise,
        omnibus=omni,
        warnings=warnings,
        budget=budget,
    )


def training_budget(completed: pd.DataFrame, order: list[str]) -> dict[str, Any]:
    """What the completed runs trained for, and each condition against the trivial baseline.

    Args:
        completed: tidy rows of completed runs, with a `condition` column.
        order: the conditions, in report order.

    Returns:
        steps, images, batch_size: [min, max] over the runs' last epochs (None where the runs do
        not record it); conditions: per condition its mean final test MSE, the mean
        `mean_image_mse` (the test MSE of the mean training image) and their ratio `share`
        (None without both), and `barely` (share above BARELY_BEATS); threshold: BARELY_BEATS.
    """
    rows = completed[completed["metric"].notna()]
    last = rows[rows["epoch"] == rows.groupby("run_id")["epoch"].transform("max")]

    def span(values: pd.Series) -> list[int] | None:
        values = pd.to_numeric(values, errors="coerce").dropna()
        return [int(values.min()), int(values.max())] if len(values) else None

    def per_run(metric: str) -> pd.Series:
        picked = last[last["metric"] == metric]
        return picked.set_index("run_id")["value"].astype(float)

    runs = last.drop_duplicates("run_id").set_index("run_id")
    batch = runs["batch_size"] if "batch_size" in runs.columns else pd.Series(dtype=float)
    mse, trivial = per_run("test_mse"), per_run("mean_image_mse")
    conditions = []
    for cond in order:
        ids = runs.index[runs["condition"] == cond]
        own = mse.reindex(ids).dropna()
        base = trivial.reindex(ids).dropna()
        mean = float(own.mean()) if len(own) else None
        floor = float(base.mean()) if len(base) else None
        share = mean / floor if mean is not None and floor else None
        conditions.append(
            {
                "condition": cond,
                "test_mse": mean,
                "mean_image_mse": floor,
                "share": share,
                "barely": share is not None and share > BARELY_BEATS,
            }
        )
    return {
        "runs": len(runs),
        "steps": span(runs["step"]) if "step" in runs.columns else None,
        "images": span(per_run("images_seen")),
        "batch_size": span(batch),
        "conditions": conditions,
        "threshold": BARELY_BEATS,
    }


def _add_counts(summary: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    counts = cells.groupby(["condition", "status"], sort=False).size().unstack(fill_value=0)
    summary = summary.copy()
    summary.insert(1, "cells", summary["condition"].map(cells["condition"].value_counts()))
    for i, status in enumerate(STATUSES):
        col = counts[status] if status in counts.columns else pd.Series(dtype="int64")
        summary.insert(2 + i, f"n_{status}", summary["condition"].map(col).fillna(0).astype(int))
    no_value = (cells["status"] == "completed") & ~cells["usable"]
    summary.insert(
        2 + len(STATUSES),
        "n_no_value",
        summary["condition"].map(cells[no_value]["condition"].value_counts()).fillna(0).astype(int),
    )
    summary["cells"] = summary["cells"].fillna(0).astype(int)
    return summary


def _best(summary: pd.DataFrame, lower: bool) -> list[bool]:
    means = summary["mean"].to_numpy(float)
    if not np.isfinite(means).any():
        return [False] * len(means)
    target = np.nanmin(means) if lower else np.nanmax(means)
    return [bool(np.isfinite(m) and m == target) for m in means]


def _plan(pairwise: pd.DataFrame, config: StudyConfig, warnings: list[str]) -> dict[str, Any]:
    m = int(pairwise["p"].notna().sum()) if not pairwise.empty else 0
    family = m if config.correction == "holm" else 1
    paired = pairwise[pairwise["design"] == "paired"] if not pairwise.empty else pairwise
    n_seeds = int(paired["n_pairs"].max()) if len(paired) else 0
    if len(paired):
        warnings.extend(
            planning.significance_warnings(
                n_seeds, comparisons=family, alpha=config.alpha, design="paired"
            )
        )
    both = (pairwise["n_a"] > 0) & (pairwise["n_b"] > 0) if not pairwise.empty else None
    if not pairwise.empty and ((pairwise["design"] == "unpaired") & both).any():
        warnings.append(
            "Some pairs share fewer than two seeds: they were compared with unpaired tests "
            "(Mann–Whitney U, Welch's t), which have less power than the paired design."
        )
    if not pairwise.empty:
        pairwise["seeds_needed"] = [
            planning.seeds_needed(
                d, s, alpha=config.alpha, power=config.power, comparisons=max(family, 1)
            )
            for d, s in zip(pairwise["diff"], pairwise["sd_diff"], strict=True)
        ]
        if config.target_diff is not None:
            pairwise["seeds_needed_target"] = [
                planning.seeds_needed(
                    config.target_diff,
                    s,
                    alpha=config.alpha,
                    power=config.power,
                    comparisons=max(family, 1),
                )
                for s in pairwise["sd_diff"]
            ]
    return {
        "comparisons": m,
        "correction": config.correction,
        "n_paired_seeds": n_seeds,
        "min_wilcoxon_p": planning.min_wilcoxon_p(n_seeds) if n_seeds else None,
        "min_seeds_for_significance": planning.min_seeds_for_significance(
            config.alpha, max(family, 1)
        ),
        "power": config.power,
        "alpha": config.alpha,
        "target_diff": config.target_diff,
        "method": (
            "seeds_needed: smallest n whose two-sided paired t test (alpha / comparisons, "
            "Bonferroni as Holm's first step) reaches the power for the observed mean difference "
            "and SD of paired differences; never below the Wilcoxon floor"
        ),
    }


def _partial_warnings(cells: pd.DataFrame) -> list[str]:
    bad = cells[~cells["usable"]]
    if bad.empty:
        return []
    counts = bad["status"].value_counts()
    parts = [f"{int(counts[s])} {s}" for s in STATUSES if s in counts.index]
    no_value = int((bad["status"] == "completed").sum())
    if no_value:
        parts = [p for p in parts if not p.endswith(" completed")]
        parts.append(f"{no_value} completed without a finite value")
    return [
        f"Partial results: {len(bad)} of {len(cells)} cells are not in the statistics "
        f"({', '.join(parts)}); they are listed under 'Cells'."
    ]


def _in_order(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {c: i for i, c in enumerate(order)}
    key = frame["condition"].map(rank)
    return frame.assign(_k=key).sort_values(["_k", "seed"]).drop(columns="_k")


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
