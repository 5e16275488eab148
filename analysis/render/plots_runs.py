"""Figures about the runs themselves: reconstructions, per-bit activation rates, surrogates.

Same conventions as `analysis.render.plots` (ax=None, returns the Figure, never shows). The surrogate
figure asks the estimator registry (`ste_variants`, pure torch) for each estimator's backward
rule; it is imported lazily so that the rest of the analysis does not need torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from analysis.render import style
from analysis.render.plots import tie_names


def _axes(ax: Axes | None, size: str | tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = style.new_figure(size)
    return fig, fig.add_subplot()


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB float array in [0, 1] (H, W, 3)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def composite(images: Sequence[np.ndarray], gap: int = 8) -> tuple[np.ndarray, list[float]]:
    """Place RGB images side by side on white, top-aligned; returns the canvas and the centre
    column of each image (for labels)."""
    height = max(img.shape[0] for img in images)
    width = sum(img.shape[1] for img in images) + gap * (len(images) - 1)
    canvas = np.ones((height, width, 3))
    centres, x = [], 0
    for img in images:
        canvas[: img.shape[0], x : x + img.shape[1]] = img[..., :3]
        centres.append(x + img.shape[1] / 2)
        x += img.shape[1] + gap
    return canvas, centres


def reconstructions(
    images: Mapping[str, str | Path | np.ndarray],
    *,
    ax: Axes | None = None,
    ncols: int = 2,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Each condition's reconstruction figure (the same test digits in every run), one panel per
    condition, `ncols` panels a row, large enough to read the digits; with `ax`, side by side in
    that axes.

    Args:
        images: condition -> the run's reconstruction.png (or an RGB/grey array), in display
            order.
        ax: axes to draw into; None makes a new figure.
        ncols: panels per row of a new figure.
        size: the width of a new figure in inches as (width, ignored), or "auto" (full page).
        title: optional title.
    """
    arrays = {}
    for cond, img in images.items():
        arr = read_image(img) if isinstance(img, (str, Path)) else np.asarray(img, dtype=float)
        arrays[cond] = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
    with style.rc():
        if ax is not None:
            canvas, centres = (
                composite(list(arrays.values())) if arrays else (np.ones((1, 1, 3)), [])
            )
            fig = ax.figure
            ax.imshow(canvas, interpolation="nearest")
            for centre, cond in zip(centres, arrays, strict=True):
                ax.text(centre, -4, cond, ha="center", va="bottom", fontsize=7)
            ax.set_axis_off()
            if title:
                ax.set_title(title, pad=12)
            return fig
        width = style.SIZES["double"][0] if size == "auto" else style.figsize(size)[0]
        ncols = max(1, min(ncols, len(arrays)))
        aspect = max((a.shape[0] / a.shape[1] for a in arrays.values()), default=0.5)
        panel = (width / ncols, width / ncols * aspect + 0.25)
        fig, panels = style.small_multiples(list(arrays) or ["none"], ncols=ncols, panel=panel)
        for panel_ax, (cond, arr) in zip(panels, arrays.items(), strict=False):
            panel_ax.imshow(arr, interpolation="antialiased")
            panel_ax.set_title(cond, fontsize=9)
        for panel_ax in panels:
            panel_ax.set_axis_off()
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def bit_rates(
    bits: pd.DataFrame,
    *,
    sty: style.Style | None = None,
    ax: Axes | None = None,
    ties: Sequence[Sequence[str]] = (),
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Per-bit activation rates, each run's bits sorted from most to least active and averaged
    over seeds per condition; the legend gives the mean count of dead (never on) and always-on
    bits per run. More than `style.MAX_CURVES_PER_AXES` conditions become small multiples; a
    condition tied to an earlier one is dashed ("b (≡ a)").

    Args:
        bits: columns condition, run_id, bit, rate (one epoch per run).
        sty: order and colours.
        ax: axes to draw into; None makes a new figure.
        ties: groups of tied conditions (`analysis.stats.ties`).
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title.
    """
    conds = list(dict.fromkeys(bits["condition"]))
    sty = sty if sty is not None else style.Style(conds)
    conds = sty.sort(conds)
    names = tie_names(conds, ties)
    lines = {}
    for cond in conds:
        curves, dead, full = [], [], []
        for _, run in bits[bits["condition"] == cond].groupby("run_id", sort=True):
            rates = np.sort(run.sort_values("bit")["rate"].to_numpy(float))[::-1]
            curves.append(rates)
            dead.append(int(np.sum(rates == 0.0)))
            full.append(int(np.sum(rates == 1.0)))
        width = min(len(c) for c in curves)
        lines[cond] = (
            (np.arange(width) + 0.5) / width,
            np.mean([c[:width] for c in curves], axis=0),
            f"{names[cond]} (dead {np.mean(dead):.1f}, always on {np.mean(full):.1f})",
        )
    with style.rc():
        if ax is None and len(conds) > style.MAX_CURVES_PER_AXES:
            fig, panels = style.small_multiples(conds)
            for cond, panel in zip(conds, panels, strict=True):
                _context(panel, [lines[c][:2] for c in conds if c != cond])
                panel.plot(*lines[cond][:2], color=sty.color(cond))
                panel.set_title(lines[cond][2], fontsize=6)
                panel.grid(True, alpha=0.3)
            fig.supxlabel("bits, sorted by activation rate (fraction of the code)", fontsize=8)
            fig.supylabel("activation rate", fontsize=8)
            panels[0].set_ylim(-0.02, 1.02)
        else:
            if size == "auto":
                size = style.auto_size("lines", conds)
            fig, ax = _axes(ax, size)
            for cond in conds:
                dash = "--" if names[cond] != cond else "-"
                ax.plot(*lines[cond][:2], color=sty.color(cond), label=lines[cond][2],
                        linestyle=dash)  # fmt: skip
            ax.set_xlabel("bits, sorted by activation rate (fraction of the code)")
            ax.set_ylabel("activation rate")
            ax.set_ylim(-0.02, 1.02)
            style.legend(ax, len(conds), fontsize=6)
            ax.grid(True, alpha=0.3)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig


def _context(ax: Axes, lines: Sequence[tuple[Any, Any]]) -> None:
    """The other conditions' curves, thin and grey, behind a panel's own."""
    for xs, ys in lines:
        ax.plot(xs, ys, color=style.CONTEXT_GREY, linewidth=0.6)


def surrogates(
    specs: Mapping[str, str],
    *,
    sty: style.Style | None = None,
    x_range: tuple[float, float] = (-3.0, 3.0),
    points: int = 601,
    ncols: int = 4,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """The surrogate derivative (backward / incoming gradient) of each estimator, from the
    registry's `Estimator.surrogate`, as small multiples: one panel per estimator over the
    others in grey, so that no curve hides another (several coincide, e.g. sigmoid(beta=1)
    and gumbel). Estimators the registry cannot draw get an empty panel marked n/a.

    Args:
        specs: condition -> estimator spec (e.g. {"sigmoid(beta=4)": "sigmoid(beta=4)"}).
        sty: order and colours.
        x_range: input range of the threshold.
        points: number of x values.
        ncols: panels per row.
        size: (width, ignored) in inches, or "auto" (1.7 inches a panel).
        title: optional title.
    """
    import torch  # lazily, with the registry below: only this figure needs torch (slow to import)

    from ste_variants import get_estimator

    sty = sty if sty is not None else style.Style(list(specs))
    conds = sty.sort(list(specs))
    x = torch.linspace(x_range[0], x_range[1], points, dtype=torch.float64)
    curves: dict[str, Any] = {}
    for cond in conds:
        try:
            est = get_estimator(specs[cond])
            with torch.no_grad():
                y = est.surrogate(x.clone()).detach().to(torch.float64).numpy()
            curves[cond] = np.broadcast_to(y, x.shape) if np.ndim(y) == 0 else y
        except Exception as exc:  # noqa: BLE001 - an undrawable estimator must not stop a report
            curves[cond] = f"n/a: {type(exc).__name__}"
    xs = x.numpy()
    ncols = max(1, min(ncols, len(conds)))
    panel = (1.7, 1.35) if size == "auto" else (style.figsize(size)[0] / ncols, 1.35)
    with style.rc():
        fig, panels = style.small_multiples(conds, ncols=ncols, panel=panel)
        drawn = [(xs, y) for y in curves.values() if not isinstance(y, str)]
        for cond, ax in zip(conds, panels, strict=True):
            own = curves[cond]
            _context(ax, [(a, b) for a, b in drawn if b is not own])
            if isinstance(own, str):
                ax.set_title(f"{cond} ({own})", fontsize=7)
            else:
                ax.plot(xs, own, color=sty.color(cond), label=cond)
                ax.set_title(cond, fontsize=7)
            ax.axvline(0.0, color=style.GREY, linewidth=0.5)
            ax.grid(True, alpha=0.3)
        fig.supxlabel("input to the threshold x", fontsize=8)
        fig.supylabel("surrogate dH/dx", fontsize=8)
        if title:
            fig.suptitle(title, fontsize=9)
    return fig
