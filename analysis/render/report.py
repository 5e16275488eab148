"""Write every output of one comparison: CSV tables, omnibus.json, figures, LaTeX, report.html.

The HTML report is self-contained (figures inline as base64 PNG data URIs, no scripts, no
external files) and states the tests, the correction, the seed counts and the bootstrap
settings. Everything is deterministic: two runs on the same data give the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.render import report_text, style, tables
from analysis.render.figures import FigureUnavailable, make_figure
from analysis.sources.snapshot import package_versions
from analysis.sources.tidy import StudyData
from analysis.study import StudyResult
from runners.store.format import atomic_write_bytes, atomic_write_json, atomic_write_text
from runners.store.records import label as metric_label

DEFAULT_FIGURES: tuple[str, ...] = (
    "learning_curves",
    "final_metric",
    "pairwise_p",
    "pairwise_improvement",
    "cd_diagram",
    "reconstructions",
    "bit_rates",
    "surrogates",
    "gradient_fidelity",
    "gradcheck",
    "gradient_error",
    "gradcheck_exact",
)
# Drawn only when the data has them (runs with diagnostics, `ste-ablate gradcheck` results);
# otherwise left out of the report without a note.
OPTIONAL_FIGURES = frozenset(
    {"gradient_fidelity", "gradcheck", "gradient_error", "gradcheck_exact"}
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right}
th{border-bottom:2px solid #444}td:first-child,th:first-child{text-align:left}
td.l,th.l{text-align:left}tr.best td{font-weight:600}
.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:.5em 1em;margin:.5em 0}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
td.l{overflow-wrap:anywhere}.findings{font-size:1.05em}
.scroll{overflow-x:auto}
figcaption{font-size:.88em;color:#444}code{background:#f4f4f4;padding:0 .2em}
.muted{color:#666;font-size:.88em}
"""


def figure_captions(result: StudyResult) -> dict[str, str]:
    """One caption per figure kind, with this study's settings."""
    metric = metric_label(result.config.metric)
    conf = f"{100 * result.config.confidence:g}%"
    test = _test_names(result)[0]
    correction = _correction_name(result)
    cd = result.omnibus.get("cd")
    return {
        "learning_curves": f"Mean {metric} per epoch over the completed runs of each condition; "
        f"band: {conf} percentile bootstrap CI of the mean (no band with one seed).",
        "final_metric": f"Final {metric} per condition: each dot is one seed; the box spans the "
        "quartiles.",
        "pairwise_p": f"{correction}-adjusted p-values of the {test} for each pair; "
        f"* marks p < {result.config.alpha:g}.",
        "pairwise_improvement": "Probability of improvement P(row better than column) over all "
        "pairs of runs, ties counting 1/2 (as in rliable).",
        "cd_diagram": "Average ranks (1 = best) over the seeds shared by every condition; a bar "
        "joins conditions whose ranks differ by less than the Nemenyi critical difference"
        + (f" (CD = {cd:.2f})." if isinstance(cd, float) and math.isfinite(cd) else "."),
        "reconstructions": "The reconstruction figure of each condition's lowest-seed completed "
        "run (originals beside reconstructions; the same test digits in every run).",
        "bit_rates": "Per-bit activation rates at the last epoch, each run's bits sorted, mean "
        "over seeds; the legend gives the mean number of dead and always-on bits per run.",
        "surrogates": "Surrogate derivatives (backward / incoming gradient) of the compared "
        "estimators, from the estimator registry.",
        "gradient_fidelity": "Gradient diagnostics per epoch (docs/diagnostics.md): each run's "
        "own estimator on a fixed probe batch of test images, against the exact effect of "
        f"flipping each code bit; mean over seeds with a {conf} bootstrap band.",
        "gradcheck": "Every estimator's gradient on one trained model's weights and the same "
        "probe batch (ste-ablate gradcheck): the differences are the estimators' alone.",
        "gradient_error": "Each run's own estimator against the exact gradient of the expected "
        "objective at a few checkpoints of training (docs/gradients.md): bias, variance, "
        "relative RMSE and cosine of the mean of M estimates, for the whole encoder; mean over "
        f"seeds with a {conf} bootstrap band.",
        "gradcheck_exact": "Relative RMSE of the mean of M estimates against the exact gradient, "
        "on one trained model (ste-ablate gradcheck --exact), against M and against the "
        "objective evaluations it costs; bands: 95% bootstrap intervals; dotted: the bias of "
        "each biased estimator.",
    }


def write_analysis(
    result: StudyResult,
    data: StudyData,
    out_dir: str | Path,
    *,
    title: str,
    spec: dict[str, Any] | None = None,
    formats: Sequence[str] = ("pdf", "png"),
    figure_kinds: Sequence[str] = DEFAULT_FIGURES,
) -> Path:
    """Write summary.csv, pairwise.csv, cells.csv, omnibus.json, table.tex, figures/ and
    report.html into `out_dir` (each file atomically); returns the report's path."""
    out_dir = Path(out_dir)
    metric = result.config.metric
    captions = figure_captions(result)
    titles = report_text.figure_titles(result)
    figures: list[tuple[str, str, bytes]] = []
    unavailable: list[tuple[str, str]] = []
    for kind in figure_kinds:
        name = f"{kind}_{metric}" if kind in ("learning_curves", "final_metric") else kind
        try:
            fig = make_figure(kind, result, data, title=titles[kind])
        except FigureUnavailable as exc:
            if kind not in OPTIONAL_FIGURES:
                unavailable.append((kind, str(exc)))
            # A figure left from an earlier analysis in this folder would contradict the report.
            for fmt in ("pdf", "png", "svg"):
                (out_dir / "figures" / f"{name}.{fmt}").unlink(missing_ok=True)
            continue
        rendered = {fmt: style.render(fig, fmt) for fmt in dict.fromkeys([*formats, "png"])}
        for fmt in formats:
            atomic_write_bytes(out_dir / "figures" / f"{name}.{fmt}", rendered[fmt])
        figures.append((name, captions[kind], rendered["png"]))

    atomic_write_text(out_dir / "summary.csv", tables.to_csv(tables.summary_frame(result)))
    atomic_write_text(out_dir / "pairwise.csv", tables.to_csv(tables.pairwise_frame(result)))
    atomic_write_text(out_dir / "cells.csv", tables.to_csv(result.cells))
    omnibus = dict(result.omnibus)
    omnibus.update(metric=metric, direction=result.direction, warnings=list(result.warnings))
    atomic_write_json(out_dir / "omnibus.json", _json_ready(omnibus))
    atomic_write_text(
        out_dir / "table.tex", tables.latex_table(result, label=f"tab:{_slug(title)}-{metric}")
    )
    page = render_html(
        result,
        title=title,
        spec=spec,
        figures=figures,
        unavailable=unavailable,
        link_format="pdf" if "pdf" in formats else formats[0],
    )
    report = out_dir / "report.html"
    atomic_write_text(report, page)
    return report


def methods_paragraph(result: StudyResult) -> str:
    """Plain-text methods: data used, tests, correction, effect sizes, bootstrap settings."""
    cfg = result.config
    seeds = sorted({int(s) for s in result.final["seed"]})
    per_cond = ", ".join(
        f"{c}: {n}" for c, n in zip(result.summary["condition"], result.summary["n"], strict=True)
    )
    rank_test, t_test = _test_names(result)
    omni = result.omnibus
    if omni.get("test") == "friedman":
        omnibus_text = (
            f"Across all conditions: Friedman's test on the {omni['n_blocks']} seeds shared by "
            "every condition, average ranks within seeds (1 = best) and the Nemenyi critical "
            f"difference at alpha = {cfg.alpha:g} (Demšar 2006), with its groups."
        )
    elif omni.get("test") == "kruskal":
        omnibus_text = "Across all conditions: the Kruskal–Wallis test and pooled mean ranks."
    else:
        omnibus_text = "No omnibus test (" + "; ".join(omni.get("notes", [])) + ")."
    pairs = len(result.pairwise)
    return (
        f"Metric: {cfg.metric} ({'lower' if result.lower_is_better else 'higher'} is better), "
        "the value at each run's last epoch (summary.json's value for finished runs). Only "
        "completed runs with a finite value enter the statistics; every other cell is listed "
        f"below. Seeds used: {seeds} (usable runs per condition: {per_cond}). Per condition: "
        "n, mean, standard deviation (ddof = 1), median, interquartile mean (mean of the middle "
        "50%, scipy.stats.trim_mean(x, 0.25), as in rliable) and a "
        f"{100 * cfg.confidence:g}% bootstrap CI of the mean (scipy.stats.bootstrap, BCa, "
        f"{cfg.n_resamples} resamples, percentile method where BCa is degenerate; seed "
        f"{cfg.seed}, one Generator derived per condition and per pair). Pairs that share at "
        "least two seeds were compared on their shared seeds as paired samples (the same seed "
        "gives the same initial weights and batch order): Wilcoxon signed-rank test (two-sided, "
        "zero differences dropped) and paired t test; other pairs with the Mann–Whitney U test "
        f"and Welch's t test. Tests used here: {rank_test}; {t_test}. The p-values of the "
        f"{pairs} pairs were adjusted with {_correction_name(result)}'s method, separately for "
        f"the rank tests and the t tests; 'significant' means adjusted rank-test p < "
        f"{cfg.alpha:g}. Effect sizes: Hedges' g_z for paired pairs (mean paired difference / "
        "SD of the differences, times the exact small-sample factor J(n − 1)), Hedges' g with "
        "the pooled SD for unpaired pairs; the probability of improvement P(a better than b) "
        "over all pairs of runs, ties counting 1/2 (rliable); and the mean difference with its "
        f"bootstrap CI. {omnibus_text} Seed planning: seeds needed for the observed difference "
        f"at power {cfg.power:g} (paired t, alpha / number of pairs); the smallest exact "
        "two-sided Wilcoxon p with n paired seeds is 2/2^n."
    )


def render_html(
    result: StudyResult,
    *,
    title: str,
    spec: dict[str, Any] | None,
    figures: list[tuple[str, str, bytes]],
    unavailable: list[tuple[str, str]],
    link_format: str = "pdf",
) -> str:
    """The self-contained report page (figures inline; each links to its `link_format` file)."""
    cfg = result.config
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}: {esc(cfg.metric)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<p class="findings"><strong>Findings.</strong> '
        + esc(" ".join(report_text.findings(result)))
        + "</p>",
        f'<p class="muted">Metric <code>{esc(cfg.metric)}</code> '
        f"({'lower' if result.lower_is_better else 'higher'} is better). "
        f"Source: {esc(result_source(spec))}.</p>",
    ]
    for warning in result.warnings:
        parts.append(f'<p class="warn">{esc(warning)}</p>')
    parts += ["<h2>Summary</h2>", report_text.summary_table(result)]
    parts.append(
        '<p class="muted">Files: <a href="summary.csv">summary.csv</a>, '
        '<a href="pairwise.csv">pairwise.csv</a>, <a href="cells.csv">cells.csv</a>, '
        '<a href="omnibus.json">omnibus.json</a>, <a href="table.tex">table.tex</a>.</p>'
    )
    parts += ["<h2>Pairwise comparisons</h2>", report_text.pairwise_table(result)]
    parts += ["<h2>Omnibus</h2>", _omnibus_html(result)]
    parts.append("<h2>Figures</h2>")
    for name, caption, png in figures:
        data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        # Shown at 150 dpi (the PNGs are 200 dpi), at most the page's width.
        width = int.from_bytes(png[16:20], "big") * 3 // 4
        parts.append(
            f'<figure id="fig-{esc(name)}"><img src="{data_uri}" width="{width}" '
            f'alt="{esc(name)}">'
            f"<figcaption>{esc(caption)} "
            f'<a href="figures/{esc(name)}.{link_format}">{link_format.upper()}</a>'
            "</figcaption></figure>"
        )
    for kind, reason in unavailable:
        parts.append(f'<p class="muted">Figure {esc(kind)} not drawn: {esc(reason)}.</p>')
    parts += ["<h2>Methods</h2>", f"<p>{esc(methods_paragraph(result))}</p>"]
    cell_cols = ["run_id", "condition", "seed", "status", "epochs_done", "final_value", "issues"]
    cells = result.cells.assign(_u=result.cells["usable"].astype(int)).sort_values(
        ["_u"], kind="stable"
    )
    parts += ["<h2>Cells</h2>", _html_table(cells, cell_cols)]
    versions = package_versions()
    parts.append(
        '<p class="muted">Versions: '
        + esc(", ".join(f"{k} {v}" for k, v in versions.items() if v))
        + "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def result_source(spec: dict[str, Any] | None) -> str:
    """A one-line description of the analysed spec and data source."""
    if not spec:
        return "unknown"
    bits = []
    if spec.get("name"):
        bits.append(f"spec {spec['name']}")
    if spec.get("sha256"):
        bits.append(f"sha256 {str(spec['sha256'])[:12]}")
    if spec.get("source"):
        bits.append(str(spec["source"]))
    return ", ".join(bits) or "unknown"


def _omnibus_html(result: StudyResult) -> str:
    omni, esc = result.omnibus, html.escape
    lines = []
    if omni.get("test"):
        name = {"friedman": "Friedman", "kruskal": "Kruskal–Wallis"}[omni["test"]]
        stat, p = omni.get("statistic"), omni.get("p")
        shown = (
            "undefined (identical values)" if p is None else f"statistic {stat:.4g}, p = {p:.3g}"
        )
        lines.append(f"<p>{name} test over {omni['k']} conditions: {shown}.</p>")
    if omni.get("cd") is not None:
        groups = "; ".join("{" + ", ".join(g) + "}" for g in omni["cd_groups"]) or "none"
        lines.append(
            f"<p>Nemenyi critical difference {omni['cd']:.3g} over {omni['n_blocks']} seeds; "
            f"groups not significantly different: {esc(groups)}.</p>"
        )
    for note in omni.get("notes", []):
        lines.append(f'<p class="muted">{esc(note)}</p>')
    plan = omni.get("planning") or {}
    if plan:
        floor = plan.get("min_wilcoxon_p")
        lines.append(
            f"<p>Seed planning: {plan['comparisons']} pairwise comparisons "
            f"({esc(str(plan['correction']))}); up to {plan['n_paired_seeds']} paired seeds"
            + (f", smallest exact Wilcoxon p {floor:.4g}" if floor is not None else "")
            + f"; at least {plan['min_seeds_for_significance']} paired seeds are needed for any "
            f"pair to reach alpha = {plan['alpha']:g}. See seeds_needed in the pairwise table.</p>"
        )
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame, columns: list[str], best: str | None = None) -> str:
    columns = [c for c in columns if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for _, row in frame.iterrows():
        cls = ' class="best"' if best and bool(row.get(best)) else ""
        cells = "".join(_td(row[c]) for c in columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    body = "".join(rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _td(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "<td>–</td>"
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{'yes' if value else ''}</td>"
    if isinstance(value, numbers.Integral):
        return f"<td>{int(value)}</td>"
    if isinstance(value, numbers.Real):
        return f"<td>{float(value):.4g}</td>"
    return f'<td class="l">{html.escape(str(value))}</td>'


def _test_names(result: StudyResult) -> tuple[str, str]:
    designs = set(result.pairwise["design"]) if len(result.pairwise) else {"paired"}
    rank = " / ".join(
        n
        for d, n in (("paired", "Wilcoxon signed-rank"), ("unpaired", "Mann–Whitney U"))
        if d in designs
    )
    t = " / ".join(
        n for d, n in (("paired", "paired t"), ("unpaired", "Welch's t")) if d in designs
    )
    return rank, t


def _correction_name(result: StudyResult) -> str:
    return {"holm": "Holm", "bh": "Benjamini–Hochberg"}[result.config.correction]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "study"


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
