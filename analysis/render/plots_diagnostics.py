"""Figures of the gradient diagnostics (docs/diagnostics.md): per epoch, and per estimator on one
model (`ste-ablate gradcheck`).

Same conventions as `analysis.render.plots` (returns the Figure, never shows it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.render import plots, style
from runners.store.records import DIAGNOSTICS_PREFIX
from runners.store.records import label as metric_label


def _panels(count: int, width: float, height: float) -> tuple[Figure, list, int]:
    cols = min(3, count)
    rows = math.ceil(count / cols)
    fig = style.new_figure((width, height * rows))
    return fig, [fig.add_subplot(rows, cols, n + 1) for n in range(count)], cols


def gradient_fidelity(
    curves: Mapping[str, pd.DataFrame],
    *,
    sty: style.Style | None = None,
    seed: int = 0,
    n_resamples: int = 2000,
    title: str | None = None,
    logy: Collection[str] = (),
) -> Figure:
    """One panel per diagnostic: its mean per epoch and condition, with a bootstrap band of the
    mean across seeds.

    Args:
        curves: metric -> frame with columns condition, seed, epoch, value.
        sty: order and colours of the conditions.
        seed, n_resamples: the bootstrap of the bands.
        title: the figure's title.
        logy: metrics drawn on a log scale.
    """
    metrics = list(curves)
    labels = list(dict.fromkeys(c for f in curves.values() for c in f["condition"]))
    sty = sty or style.Style(labels)
    with style.rc():
        fig, axes, _ = _panels(len(metrics), style.SIZES["double"][0], 2.0)
        for ax, metric in zip(axes, metrics, strict=True):
            plots.learning_curves(
                curves[metric],
                metric=metric,
                sty=sty,
                ax=ax,
                seed=seed,
                n_resamples=n_resamples,
                logy=metric in logy,
            )
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        handles, names = axes[0].get_legend_handles_labels()
        # Below the panels: the title (suptitle) takes the top.
        fig.legend(handles, names, loc="outside lower center", ncol=min(5, len(names)))
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def gradcheck(
    frame: pd.DataFrame,
    *,
    metrics: Sequence[str],
    sty: style.Style | None = None,
    title: str | None = None,
) -> Figure:
    """Estimators side by side on one model: one panel of horizontal bars per diagnostic.

    Args:
        frame: `analysis.sources.gradcheck` rows of one run (estimator, metric, value).
        metrics: the diagnostics drawn, in order.
        sty: colours (estimators not in its order get stable colours of their own).
        title: the figure's title (e.g. which model).
    """
    estimators = list(dict.fromkeys(frame["estimator"]))
    sty = sty or style.Style(estimators)
    height = 0.9 + 0.16 * len(estimators)
    with style.rc():
        fig, axes, cols = _panels(len(metrics), style.SIZES["double"][0], height)
        for n, (ax, metric) in enumerate(zip(axes, metrics, strict=True)):
            part = frame[frame["metric"] == metric].set_index("estimator")["value"]
            values = np.array([part.get(e, np.nan) for e in estimators], dtype=float)
            y = np.arange(len(estimators))
            ax.barh(y, np.nan_to_num(values), color=[sty.color(e) for e in estimators])
            for yi, value in zip(y, values, strict=True):
                if not np.isfinite(value):
                    ax.text(0, yi, " n/a", va="center", fontsize=6, color="#666")
            ax.set_yticks(y, estimators if n % cols == 0 else [""] * len(estimators))
            ax.invert_yaxis()
            ax.set_title(metric_label(f"{DIAGNOSTICS_PREFIX}{metric}"))
            ax.grid(True, axis="x", alpha=0.3)
        if title:
            fig.suptitle(title, fontsize=8)
    return fig
