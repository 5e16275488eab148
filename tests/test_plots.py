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
    # Okabe–Ito first: the colour-blind-safe set
    assert style.PALETTE[:3] == ("#0072B2", "#E69F00", "#009E73")
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
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    sig = lines["sigmoid(beta=4)"]
    x, y = sig.get_xdata(), sig.get_ydata()
    assert y[np.argmin(np.abs(x))] == pytest.approx(1.0, abs=1e-6)  # β σ'(0) = β/4 = 1
    assert np.trapezoid(y, x) == pytest.approx(1.0, abs=1e-3)  # area 1 (0/1 step)
    bogus = plots_runs.surrogates({"nope": "no_such_estimator"})
    assert "n/a" in bogus.axes[0].get_legend().get_texts()[0].get_text()
