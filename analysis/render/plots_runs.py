"""Figures about the runs themselves: reconstructions, per-bit activation rates, surrogates.

Same conventions as `analysis.render.plots` (ax=None, returns the Figure, never shows). The surrogate
figure asks the estimator registry (`ste_variants`, pure torch) for each estimator's backward
rule; it is imported lazily so that the rest of the analysis does not need torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from analysis.render import style


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
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Each condition's reconstruction figure side by side (same test digits in every run).

    Args:
        images: condition -> the run's reconstruction.png (or an RGB/grey array), in display
            order.
        ax: axes to draw into; None makes a new figure.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title.
    """
    arrays = []
    for img in images.values():
        arr = read_image(img) if isinstance(img, (str, Path)) else np.asarray(img, dtype=float)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arrays.append(arr)
    canvas, centres = composite(arrays) if arrays else (np.ones((1, 1, 3)), [])
    if size == "auto":
        width = style.SIZES["double"][0]
        size = (width, min(9.0, width * canvas.shape[0] / canvas.shape[1] + 0.35))
    with style.rc():
        fig, ax = _axes(ax, size)
        if arrays:
            ax.imshow(canvas, interpolation="nearest")
            for centre, cond in zip(centres, images, strict=True):
                ax.text(centre, -4, cond, ha="center", va="bottom", fontsize=7)
        ax.set_axis_off()
        if title:
            ax.set_title(title, pad=12)
    return fig


def bit_rates(
    bits: pd.DataFrame,
    *,
    sty: style.Style | None = None,
    ax: Axes | None = None,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """Per-bit activation rates, each run's bits sorted from most to least active and averaged
    over seeds per condition; the legend gives the mean count of dead (never on) and always-on
    bits per run.

    Args:
        bits: columns condition, run_id, bit, rate (one epoch per run).
        sty: order and colours.
        ax: axes to draw into; None makes a new figure.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title.
    """
    conds = list(dict.fromkeys(bits["condition"]))
    sty = sty if sty is not None else style.Style(conds)
    if size == "auto":
        size = style.auto_size("lines", conds)
    with style.rc():
        fig, ax = _axes(ax, size)
        for cond in sty.sort(conds):
            part = bits[bits["condition"] == cond]
            curves, dead, full = [], [], []
            for _, run in part.groupby("run_id", sort=True):
                rates = np.sort(run.sort_values("bit")["rate"].to_numpy(float))[::-1]
                curves.append(rates)
                dead.append(int(np.sum(rates == 0.0)))
                full.append(int(np.sum(rates == 1.0)))
            width = min(len(c) for c in curves)
            mean = np.mean([c[:width] for c in curves], axis=0)
            x = (np.arange(width) + 0.5) / width
            label = f"{cond} (dead {np.mean(dead):.1f}, always on {np.mean(full):.1f})"
            ax.plot(x, mean, color=sty.color(cond), label=label)
        ax.set_xlabel("bits, sorted by activation rate (fraction of the code)")
        ax.set_ylabel("activation rate")
        ax.set_ylim(-0.02, 1.02)
        style.legend(ax, len(ax.get_lines()), fontsize=6)
        ax.grid(True, alpha=0.3)
        if title:
            ax.set_title(title)
    return fig


def surrogates(
    specs: Mapping[str, str],
    *,
    sty: style.Style | None = None,
    ax: Axes | None = None,
    x_range: tuple[float, float] = (-3.0, 3.0),
    points: int = 601,
    size: str | tuple[float, float] = "auto",
    title: str | None = None,
) -> Figure:
    """The surrogate derivative (backward / incoming gradient) of each estimator, from the
    registry's `Estimator.surrogate`; estimators the registry cannot draw are listed as n/a.

    Args:
        specs: condition -> estimator spec (e.g. {"sigmoid(beta=4)": "sigmoid(beta=4)"}).
        sty: order and colours.
        ax: axes to draw into; None makes a new figure.
        x_range: input range of the threshold.
        points: number of x values.
        size: paper size when a new figure is made ("auto": sized for the conditions).
        title: optional title.
    """
    import torch  # lazily, with the registry below: only this figure needs torch (slow to import)

    from ste_variants import get_estimator

    sty = sty if sty is not None else style.Style(list(specs))
    x = torch.linspace(x_range[0], x_range[1], points, dtype=torch.float64)
    if size == "auto":
        size = style.auto_size("lines", list(specs))
    with style.rc():
        fig, ax = _axes(ax, size)
        # Line styles vary too: several surrogates coincide (identity and the article's clamp).
        dashes = ("-", "--", ":", "-.")
        for i, cond in enumerate(sty.sort(list(specs))):
            try:
                est = get_estimator(specs[cond])
                with torch.no_grad():
                    y = est.surrogate(x.clone()).detach().to(torch.float64).numpy()
                y = np.broadcast_to(y, x.shape) if np.ndim(y) == 0 else y
                ax.plot(x.numpy(), y, color=sty.color(cond), label=cond, linestyle=dashes[i % 4])
            except Exception as exc:  # noqa: BLE001 - an undrawable estimator must not stop a report
                ax.plot([], [], color=sty.color(cond), label=f"{cond} (n/a: {type(exc).__name__})")
        ax.axvline(0.0, color=style.GREY, linewidth=0.5)
        ax.set_xlabel("input to the threshold x")
        ax.set_ylabel("surrogate dH/dx")
        style.legend(ax, len(ax.get_lines()), fontsize=6)
        ax.grid(True, alpha=0.3)
        if title:
            ax.set_title(title)
    return fig
