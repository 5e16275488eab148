"""One figure style: colours and order per condition, paper sizes, fonts, deterministic files.

Each condition keeps its colour and position in every figure of a study: the order is the spec's
order and the colour its index in a palette of 24 colours that all stay readable on white
(contrast ratio at least 3:1, WCAG's level for graphics) and stay apart from each other (CIE76
distance at least 19): Okabe & Ito's (2008) and Paul Tol's colours that pass, then colours picked
to be as far as possible from those already chosen. More than `MAX_CURVES_PER_AXES` curves are
drawn as small multiples (`small_multiples`), one panel per condition. Files are byte-identical on rerun: no creation dates in PDFs, no timestamps in PNGs,
a fixed SVG hash salt, TrueType (Type 42) fonts embedded in PDFs, and the DejaVu fonts that ship
with matplotlib so that no machine-specific font is picked.
"""

from __future__ import annotations

import contextlib
import io
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from runners.store.format import atomic_write_bytes

# Okabe–Ito and Tol colours with contrast >= 3:1 on white, then a greedy max-min CIELAB pick of
# dark, saturated hues (tests/test_plots.py checks contrast and separation).
PALETTE: tuple[str, ...] = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#332288", "#117733", "#882255", "#AA4499",
    "#CC6677", "#999933", "#877BF6", "#B40E25", "#106463", "#7C5001", "#E2347F", "#BF7E02",
    "#1D98B2", "#409F2B", "#5A5D02", "#0357B2", "#904ABE", "#F35452", "#5E8801", "#CF1A50",
)  # fmt: skip
GREY = "#7F7F7F"
CONTEXT_GREY = "#C8C8C8"  # the other conditions, behind the one a panel is about
MAX_CURVES_PER_AXES = 6  # beyond this, curves go to small multiples

# Widths in inches: a single column and a full page width of a two-column paper.
SIZES: dict[str, tuple[float, float]] = {
    "single": (3.4, 2.4),
    "double": (7.0, 2.8),
    "double-tall": (7.0, 4.6),
    "square": (3.4, 3.4),
}

RC: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "grid.linewidth": 0.4,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "ste-ablations",
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "path.simplify": True,
    "image.interpolation": "nearest",
    "image.resample": False,
}

# Metadata that would otherwise change from run to run (or from machine to machine).
_METADATA: dict[str, dict[str, object]] = {
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": "ste-ablations"},
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": "ste-ablations"},
}


@dataclass
class Style:
    """Order and colours of the compared conditions.

    Attributes:
        order: the conditions in display order (the spec's order).
        colors: condition -> hex colour (by position in `order`; unknown conditions get a stable
            colour from a hash of their label).
    """

    order: list[str]
    colors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, label in enumerate(self.order):
            self.colors.setdefault(label, PALETTE[i % len(PALETTE)])

    def color(self, label: str) -> str:
        """The colour of one condition."""
        if label not in self.colors:
            self.colors[label] = PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]
        return self.colors[label]

    def palette(self, labels: Sequence[str] | None = None) -> list[str]:
        """Colours for `labels` (default: the whole order), in that order."""
        return [self.color(c) for c in (self.order if labels is None else labels)]

    def sort(self, labels: Sequence[str]) -> list[str]:
        """`labels` in display order (unknown ones last, alphabetically)."""
        rank = {c: i for i, c in enumerate(self.order)}
        return sorted(labels, key=lambda c: (rank.get(c, len(rank)), c))


def auto_size(kind: str, labels: Sequence[str]) -> tuple[float, float]:
    """A size that fits `labels` (the compared conditions) in a figure of this kind.

    Kinds: "categorical" (one slot per condition on the x axis), "matrix" (k × k heatmap),
    "ranks" (critical-difference diagram), "lines" (curves with a legend).
    """
    k, longest = max(1, len(labels)), max((len(lbl) for lbl in labels), default=0)
    if kind == "categorical":
        width = max(SIZES["single"][0], min(7.0, 0.55 * k + 0.8))
        rotated = sum(len(lbl) for lbl in labels) > 40
        return width, 2.4 + (0.055 * longest if rotated else 0.0)
    if kind == "matrix":
        side = max(SIZES["square"][0], min(7.0, 0.4 * k + 1.4 + 0.055 * longest))
        return side, side
    if kind == "ranks":
        width = SIZES["single"][0] if k <= 4 and longest <= 16 else SIZES["double"][0]
        return width, 0.9 + 0.3 * math.ceil(k / 2)
    if kind == "lines":
        return SIZES["single"] if k <= 5 and longest <= 24 else SIZES["double"]
    raise ValueError(f"unknown figure kind {kind!r}")


def small_multiples(
    labels: Sequence[str], *, ncols: int = 4, panel: tuple[float, float] = (1.7, 1.35)
) -> tuple[Figure, list[Axes]]:
    """A figure with one panel per label (row by row, `ncols` wide, shared axes); call inside
    `with rc():`. Unused cells of the last row are hidden."""
    ncols = max(1, min(ncols, len(labels)))
    nrows = math.ceil(len(labels) / ncols)
    fig = new_figure((panel[0] * ncols, panel[1] * nrows + 0.3))
    grid = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    return fig, axes[: len(labels)]


def legend(ax: Axes, n_entries: int, **kwargs: Any) -> None:
    """A legend inside the axes for a few entries, beside it (right) for many."""
    if n_entries > 5:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs)
    else:
        ax.legend(loc="best", **kwargs)


def figsize(size: str | tuple[float, float] = "single") -> tuple[float, float]:
    """A paper size by name ("single", "double", "double-tall", "square") or (w, h) in inches."""
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown figure size {size!r}; use one of {sorted(SIZES)}")
        return SIZES[size]
    return float(size[0]), float(size[1])


@contextlib.contextmanager
def rc() -> Iterator[None]:
    """The style's rcParams, for the duration of a `with` block (global state restored after)."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(size: str | tuple[float, float] = "single") -> Figure:
    """A pyplot-free Figure (never shown, never registered with a GUI) in the paper style.

    Call it, and draw on it, inside `with rc():` so that fonts and line widths apply.
    """
    return Figure(figsize=figsize(size), layout="constrained")


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as bytes in `fmt` ("pdf", "png" or "svg"), without run-dependent metadata."""
    if fmt not in _METADATA:
        raise ValueError(f"unsupported figure format {fmt!r}")
    buffer = io.BytesIO()
    with rc():
        fig.savefig(buffer, format=fmt, metadata=dict(_METADATA[fmt]))
    return buffer.getvalue()


def save(fig: Figure, path_stem: str | Path, formats: Sequence[str] = ("pdf", "png")) -> list[Path]:
    """Write the figure atomically as `<stem>.<fmt>` for each format; returns the paths."""
    paths = []
    for fmt in formats:
        path = Path(f"{path_stem}.{fmt}")
        atomic_write_bytes(path, render(fig, fmt))
        paths.append(path)
    return paths
