"""Figures of estimators against the exact gradient (docs/gradients.md): the error of the mean of
M estimates, against M and against objective evaluations, one line per estimator.

Same conventions as `analysis.render.plots` (returns the Figure, never shows it). The input is
the document `ste-ablate gradcheck --exact` writes (a plain dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from analysis.render import style

PANELS = (
    ("by_m", "m", "estimates averaged, M"),
    ("by_evaluations", "evaluations", "objective evaluations per example"),
)


def gradient_error(
    result: Mapping[str, Any],
    *,
    layer: str = "total",
    metric: str = "rel_rmse",
    sty: style.Style | None = None,
    title: str | None = None,
) -> Figure:
    """Relative RMSE (or `metric`, e.g. "cosine") of the M-sample mean, log-log, per estimator.

    Left: against M; right: against the evaluations it costs (M × evaluations per estimate), so
    estimators that evaluate the objective more often are compared at equal cost. Bands: the
    95% bootstrap intervals. A dashed line marks each biased estimator's floor (its bias).
    """
    rows = [r for r in result.get("estimators", []) if r.get("layers", {}).get(layer)]
    labels = [r["estimator"] for r in rows]
    sty = sty or style.Style(labels)
    with style.rc():
        fig = style.new_figure((style.SIZES["double"][0], 2.6))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, (key, x_key, x_label) in zip(axes, PANELS, strict=True):
            for row in rows:
                summary = row["layers"][layer]
                points = summary.get(key) or []
                if not points:
                    continue
                x = np.array([p[x_key] for p in points], dtype=float)
                y = np.array([p[metric] for p in points], dtype=float)
                lo, hi = (np.array([p[f"{metric}_ci"][i] for p in points]) for i in (0, 1))
                color = sty.color(row["estimator"])
                ax.plot(x, y, color=color, label=row["estimator"], lw=1.2)
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
                if metric == "rel_rmse" and summary.get("bias_p", 1.0) < 0.05:
                    ax.axhline(summary["bias"], color=color, ls=":", lw=0.8)
            ax.set_xscale("log", base=2)
            if metric == "rel_rmse":
                ax.set_yscale("log")
            ax.set_xlabel(x_label)
            ax.grid(True, which="major", alpha=0.3)
        axes[0].set_ylabel(
            "relative RMSE ‖ḡ_M − ∇‖/‖∇‖" if metric == "rel_rmse" else "cosine with ∇"
        )
        style.legend(axes[1], len(labels), fontsize=6)
        ref = result.get("reference", {})
        fig.suptitle(
            title
            or f"{result.get('run_estimator', '')} run, epoch {result.get('epoch', '?')}: layer "
            f"{layer}, reference {ref.get('method', '?')} ({result.get('latents', '?')} latents)",
            fontsize=8,
        )
    return fig
