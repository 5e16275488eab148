"""Comparison figures (seaborn and matplotlib, never pyplot: nothing is ever shown).

Each function takes the data as a small DataFrame or mapping, `ax=None` (draw into that axes, or a
new figure in the paper style) and style keywords, and returns the Figure. Colours and order come
from one `analysis.render.style.Style`, so a condition looks the same in every figure. Random
draws (the bootstrap bands) take an explicit seed. The figures about codes and runs
(reconstructions, bit rates, surrogate gradients) are in `analysis.render.plots_runs`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.render import style
from analysis.stats.summary import bootstrap_ci, mean_stat, rng_for
from runners.store.records import label as metric_label

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _axes(ax: Axes | None, size: str | tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = style.new_figure(size)
    return fig, fig.add_subplot()


def _style(data_labels: Sequence[str], sty: style.Style | None) -> style.Style:
    return sty if sty is not None else style.Style(list(dict.fromkeys(data_labels)))


def learning_curves(
    curves: pd.DataFrame,
    *,
    metric: str,
    sty: style.Style | None = None,
    ax: Axes | None = None,
    x: str = "epoch",
    seed: int = 0,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    logy: bool = False,
    ties: Sequence[Sequence[str]] = (),
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Mean over seeds per condition, with a bootstrap CI band of the mean (no band below n=2).

    Up to `style.MAX_CURVES_PER_AXES` conditions share one axes; more (with `ax` None) become
    small multiples, one panel per condition over the others' means in grey. A condition tied
    to an earlier one (`ties`) is drawn dashed and labelled "b (≡ a)", so that neither hides.

    Args:
        curves: columns condition, seed, `x` (epoch or step), value.
        metric: metric name (axis label).
        sty: order and colours; default: order of appearance.
        ax: axes to draw into; None makes a new figure.
        x: the x column.
        seed: bootstrap seed (each point derives its own Generator from it).
        confidence: band level.
        n_resamples: bootstrap resamples per point.
        logy: log-scaled y axis.
        ties: groups of tied conditions (`analysis.stats.ties`), in display order.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title.
    """
    sty = _style(curves["condition"], sty)
    conds = sty.sort(curves["condition"].unique())
    lines = {c: _mean_band(curves[curves["condition"] == c], c, x, seed, confidence, n_resamples)
             for c in conds}  # fmt: skip
    names = tie_names(conds, ties)
    with style.rc():
        if ax is None and len(conds) > style.MAX_CURVES_PER_AXES:
            fig, panels = style.small_multiples(conds)
            for cond, panel in zip(conds, panels, strict=True):
                for other in conds:
                    if other != cond:
                        panel.plot(*lines[other][:2], color=style.CONTEXT_GREY, linewidth=0.7)
                _draw_curve(panel, lines[cond], sty.color(cond), names[cond], "-", "o")
                panel.set_title(names[cond], fontsize=7)
            axes = panels
            fig.supxlabel(x, fontsize=8)
            fig.supylabel(metric_label(metric), fontsize=8)
        else:
            if size == "auto":
                size = style.auto_size("lines", conds)
            fig, ax = _axes(ax, size)
            for cond in conds:
                follower = names[cond] != cond
                marker = (
                    _MARKERS[sty.order.index(cond) % len(_MARKERS)] if cond in sty.order else "o"
                )
                _draw_curve(ax, lines[cond], sty.color(cond), names[cond],
                            "--" if follower else "-", marker)  # fmt: skip
            ax.set_xlabel(x)
            ax.set_ylabel(metric_label(metric))
            style.legend(ax, len(conds))
            axes = [ax]
        for panel in axes:
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
            panel.grid(True, alpha=0.3)
            if logy:
                panel.set_yscale("log")
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def tie_names(conds: Sequence[str], ties: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each condition's legend name: "b (≡ a)" for a condition tied to an earlier one `a`."""
    names = {c: c for c in conds}
    for group in ties:
        members = [c for c in group if c in names]
        for cond in members[1:]:
            names[cond] = f"{cond} (≡ {members[0]})"
    return names


def _mean_band(
    part: pd.DataFrame, cond: str, x: str, seed: int, confidence: float, n_resamples: int
) -> tuple[list, list, list, list]:
    """(xs, means, CI lows, CI highs) of one condition's curve."""
    xs, means, lows, highs = [], [], [], []
    for xv, group in part.groupby(x, sort=True):
        vals = group["value"].to_numpy(float)
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            continue
        low, high, _ = bootstrap_ci(
            [vals],
            mean_stat,
            rng=rng_for(seed, f"{cond}\x00{xv}"),
            confidence=confidence,
            n_resamples=n_resamples,
            method="percentile",
        )
        xs.append(xv)
        means.append(vals.mean())
        lows.append(low)
        highs.append(high)
    return xs, means, lows, highs


def _draw_curve(ax: Axes, line: tuple, color: str, label: str, dash: str, marker: str) -> None:
    xs, means, lows, highs = line
    ax.plot(xs, means, color=color, label=label, linestyle=dash, marker=marker, markersize=3)
    ax.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)


def final_metric(
    final: pd.DataFrame,
    *,
    metric: str,
    sty: style.Style | None = None,
    kind: str = "box",
    ax: Axes | None = None,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """The final value per condition: each seed a dot, over a box (or violin) of the seeds.

    Args:
        final: columns condition, seed, value.
        metric: metric name (axis label).
        sty: order and colours.
        kind: "box" or "violin".
        ax: axes to draw into; None makes a new figure.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional axes title.
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', not {kind!r}")
    sty = _style(final["condition"], sty)
    order = sty.sort(final["condition"].unique())
    data = final[np.isfinite(final["value"].to_numpy(float))]
    if size == "auto":
        size = style.auto_size("categorical", order)
    with style.rc():
        fig, ax = _axes(ax, size)
        common = dict(
            data=data,
            x="condition",
            y="value",
            order=order,
            hue="condition",
            hue_order=order,
            palette=sty.palette(order),
            legend=False,
            ax=ax,
        )
        with warnings.catch_warnings():
            # seaborn 0.13 still passes arguments that newer matplotlib deprecates
            warnings.simplefilter("ignore", (DeprecationWarning, PendingDeprecationWarning))
            _box_or_violin(kind, common)
        # Deterministic jitter: seeds spread evenly by their rank (seaborn's jitter is random).
        for pos, cond in enumerate(order):
            part = data[data["condition"] == cond].sort_values("seed")
            n = len(part)
            offsets = np.linspace(-0.15, 0.15, n) if n > 1 else np.zeros(n)
            ax.scatter(
                pos + offsets,
                part["value"],
                s=9,
                color=sty.color(cond),
                edgecolor="black",
                linewidth=0.3,
                zorder=3,
            )
        ax.set_xlabel("")
        ax.set_ylabel(metric_label(metric))
        _rotate_if_long(ax, order)
        if title:
            ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    return fig


def pairwise_matrix(pw: pd.DataFrame, order: Sequence[str], value: str) -> pd.DataFrame:
    """A k × k matrix of a pairwise column: p-values symmetric, P(row better than column) for
    "p_improve" (the lower triangle is 1 − the upper)."""
    matrix = pd.DataFrame(np.nan, index=list(order), columns=list(order))
    for _, row in pw.iterrows():
        if row["a"] not in matrix.index or row["b"] not in matrix.index:
            continue
        v = float(row[value])
        matrix.loc[row["a"], row["b"]] = v
        matrix.loc[row["b"], row["a"]] = 1.0 - v if value == "p_improve" else v
    return matrix


def pairwise_heatmap(
    pw: pd.DataFrame,
    *,
    order: Sequence[str],
    value: str = "p_adj",
    alpha: float = 0.05,
    ax: Axes | None = None,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Heatmap of adjusted p-values ("p_adj", "p_t_adj") or P(row better than column).

    Args:
        pw: the output of `analysis.stats.pairwise.pairwise`.
        order: conditions in display order.
        value: pairwise column to show.
        alpha: p-values below it are marked with "*".
        ax: axes to draw into; None makes a new figure.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title (default names the value).
    """
    matrix = pairwise_matrix(pw, order, value)
    if size == "auto":
        size = style.auto_size("matrix", list(order))
    is_p = value != "p_improve"
    annot = matrix.map(
        lambda v: "" if not math.isfinite(v) else (f"{v:.2g}" + ("*" if is_p and v < alpha else ""))
    )
    with style.rc():
        fig, ax = _axes(ax, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, PendingDeprecationWarning))
            _heatmap(ax, matrix, annot, is_p)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=45)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        default = f"adjusted p-value (* p < {alpha:g})" if is_p else "P(row better than column)"
        ax.set_title(title or default)
    return fig


def cd_diagram(
    average_ranks: Mapping[str, float],
    cd: float | None,
    groups: Sequence[Sequence[str]],
    *,
    sty: style.Style | None = None,
    ax: Axes | None = None,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Critical-difference diagram (Demšar 2006): average ranks on an axis (1 = best at left),
    the CD as a bar, and a thick line under each group whose ranks differ by less than CD."""
    labels = sorted(average_ranks, key=lambda c: (average_ranks[c], c))
    sty = _style(labels, sty)
    k = len(labels)
    if size == "auto":
        size = style.auto_size("ranks", labels)
    with style.rc():
        fig, ax = _axes(ax, size)
        lo, hi = 1, max(k, 2)
        ax.set_xlim(lo - 0.3, hi + 0.3)
        half = math.ceil(k / 2)
        rows = max(half, k - half)
        ax.set_ylim(-(rows + 1.0), 1.6)
        ax.hlines(0, lo, hi, color="black", linewidth=0.8)
        for r in range(lo, hi + 1):
            ax.vlines(r, 0, 0.12, color="black", linewidth=0.6)
            ax.text(r, 0.22, str(r), ha="center", va="bottom", fontsize=6)
        if cd is not None and math.isfinite(cd):
            ax.hlines(1.2, lo, lo + cd, color="black", linewidth=1.0)
            ax.vlines([lo, lo + cd], 1.12, 1.28, color="black", linewidth=0.8)
            ax.text(lo + cd / 2, 1.32, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=6)
        for i, cond in enumerate(labels):
            r = average_ranks[cond]
            left = i < half
            depth = -(i + 1 if left else k - i) * 0.8
            end = lo - 0.25 if left else hi + 0.25
            ax.plot([r, r, end], [0, depth, depth], color=sty.color(cond), linewidth=0.8)
            ax.text(
                end,
                depth,
                f"{cond} ({r:.2f})",
                ha="right" if left else "left",
                va="center",
                fontsize=6,
                color="black",
            )
        for g, group in enumerate(groups):
            ranks = [average_ranks[c] for c in group]
            y = -0.25 - 0.18 * g
            ax.hlines(y, min(ranks) - 0.03, max(ranks) + 0.03, color="black", linewidth=2.0)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
    return fig


def _heatmap(ax: Axes, matrix: pd.DataFrame, annot: pd.DataFrame, is_p: bool) -> None:
    sns.heatmap(
        matrix,
        ax=ax,
        annot=annot.to_numpy(),
        fmt="",
        cmap="viridis" if is_p else "RdBu_r",
        vmin=0.0,
        vmax=1.0,
        center=None if is_p else 0.5,
        square=True,
        linewidths=0.5,
        cbar_kws={"shrink": 0.7},
        annot_kws={"fontsize": 6},
    )


def _box_or_violin(kind: str, common: dict[str, Any]) -> None:
    ax = common["ax"]
    if kind == "box":
        sns.boxplot(**common, width=0.6, fliersize=0, boxprops={"alpha": 0.35}, linewidth=0.7)
    else:
        sns.violinplot(**common, inner=None, cut=0, density_norm="width", linewidth=0.7)
        for art in ax.collections:
            art.set_alpha(0.35)


def _rotate_if_long(ax: Axes, labels: Sequence[str]) -> None:
    if sum(len(lbl) for lbl in labels) > 40:
        ax.tick_params(axis="x", rotation=35)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
