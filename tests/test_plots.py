"""analysis.render.plots, plots_runs and style: figures returned (never shown), stable colours, and
deterministic files (SYNTHETIC TEST DATA)."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis.render import plots, plots_runs, style


def _final(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "condition": c,
            "seed": s,
            "run_id": f"{c}-{s}",
            "value": 0.03 + 0.002 * i + rng.normal(0, 1e-3),
        }
        for i, c in enumerate(["identity", "hardtanh", "sigmoid(beta=4)"])
        for s in range(5)
    ]
    return pd.DataFrame(rows)


def _curves() -> pd.DataFrame:
    final = _final()
    return pd.concat(
        [final.assign(epoch=e, value=final["value"] * (1 + 0.3 * (3 - e))) for e in (1, 2, 3)]
    )


def test_style_order_and_colours_are_stable():
    sty = style.Style(["b", "a", "c"])
    assert sty.palette() == list(style.PALETTE[:3])
    assert sty.color("a") == style.PALETTE[1]  # by position in the spec's order, not by name
    assert sty.sort(["c", "zz", "a", "b"]) == ["b", "a", "c", "zz"]
    other = style.Style(["b", "a", "c"])
    assert other.color("unknown") == sty.color("unknown")  # hash-based fallback is stable
    # Okabe–Ito first (the colours of it that are readable on white)
    assert style.PALETTE[:3] == ("#0072B2", "#D55E00", "#009E73")
    with pytest.raises(ValueError):
        style.figsize("poster")


def _draw_all(ax=None) -> list[Figure]:
    sty = style.Style(["identity", "hardtanh", "sigmoid(beta=4)"])
    final = _final()
    pw = pd.DataFrame(
        [
            {"a": "identity", "b": "hardtanh", "p_adj": 0.01, "p_improve": 0.9},
            {"a": "identity", "b": "sigmoid(beta=4)", "p_adj": 0.2, "p_improve": 0.7},
            {"a": "hardtanh", "b": "sigmoid(beta=4)", "p_adj": 1.0, "p_improve": 0.5},
        ]
    )
    bits = pd.DataFrame(
        [
            {"condition": c, "run_id": f"{c}-{s}", "bit": b, "rate": (b / 7) ** (i + 1)}
            for i, c in enumerate(sty.order)
            for s in range(2)
            for b in range(8)
        ]
    )
    image = np.linspace(0, 1, 28 * 56).reshape(28, 56)
    return [
        plots.learning_curves(_curves(), metric="test_mse", sty=sty, ax=ax, n_resamples=200),
        plots.final_metric(final, metric="test_mse", sty=sty, ax=ax),
        plots.final_metric(final, metric="test_mse", sty=sty, kind="violin", ax=ax),
        plots.pairwise_heatmap(pw, order=sty.order, ax=ax),
        plots.pairwise_heatmap(pw, order=sty.order, value="p_improve", ax=ax),
        plots.cd_diagram(
            {"identity": 1.2, "hardtanh": 2.0, "sigmoid(beta=4)": 2.8},
            1.0,
            [["identity", "hardtanh"]],
            sty=sty,
            ax=ax,
        ),  # fmt: skip
        plots_runs.reconstructions({c: image for c in sty.order}, ax=ax),
        plots_runs.bit_rates(bits, sty=sty, ax=ax),
    ]


def test_every_plot_returns_a_figure_and_never_registers_with_pyplot():
    plt.close("all")
    figures = _draw_all()
    assert all(isinstance(f, Figure) for f in figures)
    assert plt.get_fignums() == []  # nothing for a GUI to show
    curves = figures[0].axes[0]
    assert [line.get_label() for line in curves.get_lines()] == [
        "identity",
        "hardtanh",
        "sigmoid(beta=4)",
    ]
    assert curves.get_lines()[1].get_color().lower() == style.PALETTE[1].lower()
    dots = [c for c in figures[1].axes[0].collections if len(c.get_offsets()) == 5]
    assert len(dots) == 3  # one dot per seed for each condition


def test_plots_draw_into_a_given_axes():
    fig = style.new_figure("double")
    ax = fig.add_subplot()
    out = plots.final_metric(_final(), metric="test_mse", ax=ax)
    assert out is fig and len(fig.axes) == 1 and ax.get_ylabel() == "test MSE"


@pytest.mark.slow
def test_files_are_byte_identical_and_fonts_embedded():
    # Two independent drawings of every figure, rendered as PDF and PNG: the same bytes.
    first = [style.render(f, fmt) for f in _draw_all() for fmt in ("pdf", "png")]
    second = [style.render(f, fmt) for f in _draw_all() for fmt in ("pdf", "png")]
    assert first == second
    pdf = first[0]
    assert b"/FontFile2" in pdf  # TrueType (Type 42) embedded, not Type 3
    assert b"/Type3" not in pdf and b"/CreationDate" not in pdf
    png = first[1]
    assert png.startswith(b"\x89PNG") and b"tIME" not in png and b"Software" not in png
    svg = [style.render(plots.final_metric(_final(), metric="test_mse"), "svg") for _ in range(2)]
    assert svg[0] == svg[1] and re.search(rb"\d{4}-\d{2}-\d{2}T", svg[0]) is None


def test_save_writes_each_format(tmp_path):
    fig = plots.final_metric(_final(), metric="test_mse")
    paths = style.save(fig, tmp_path / "fig", ["pdf", "png"])
    assert [p.name for p in paths] == ["fig.pdf", "fig.png"]
    assert (tmp_path / "fig.png").read_bytes() == style.render(fig, "png")


def test_surrogates_from_the_registry():
    pytest.importorskip("ste_variants")
    fig = plots_runs.surrogates({"identity": "identity", "sigmoid(beta=4)": "sigmoid(beta=4)"})
    # Small multiples: one panel per estimator, the others in grey behind it.
    assert [ax.get_title() for ax in fig.axes] == ["identity", "sigmoid(beta=4)"]
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    assert lines["sigmoid(beta=4)"].get_color() == style.PALETTE[1]
    sig = lines["sigmoid(beta=4)"]
    x, y = sig.get_xdata(), sig.get_ydata()
    assert y[np.argmin(np.abs(x))] == pytest.approx(1.0, abs=1e-6)  # β σ'(0) = β/4 = 1
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)  # area 1 (0/1 step)
    bogus = plots_runs.surrogates({"nope": "no_such_estimator"})
    assert "n/a" in bogus.axes[0].get_title()


def test_more_than_six_curves_become_small_multiples_and_ties_are_dashed():
    conds = [f"est{i}" for i in range(8)]
    curves = pd.DataFrame(
        [
            {"condition": c, "seed": s, "epoch": e, "value": 1.0 / e + (i // 2) * 0.1 + s * 0.01}
            for i, c in enumerate(conds)
            for s in range(2)
            for e in (1, 2, 3)
        ]
    )
    fig = plots.learning_curves(curves, metric="test_mse", n_resamples=50,
                                ties=[["est0", "est1"]])  # fmt: skip
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 8 and panels[1].get_title() == "est1 (≡ est0)"
    few = curves[curves["condition"].isin(conds[:3])]
    fig = plots.learning_curves(few, metric="test_mse", n_resamples=50, ties=[["est0", "est1"]])
    (ax,) = fig.axes
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"est0": "-", "est1 (≡ est0)": "--", "est2": "-"}


def _contrast_on_white(color: str) -> float:
    """WCAG contrast ratio of an sRGB hex colour against white."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_the_palette_has_24_colours_readable_on_white_and_apart():
    assert len(set(style.PALETTE)) == len(style.PALETTE) == 24
    assert min(_contrast_on_white(c) for c in style.PALETTE) >= 3.0
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in style.PALETTE], float)
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=2) + np.eye(24) * 1e9
    assert gaps.min() > 25  # no two colours nearly the same (sRGB distance)
