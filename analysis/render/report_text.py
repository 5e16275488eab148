"""The report's words: its opening findings, its tables (narrow enough for a 1280-pixel
screen) and a human title for every figure.

The findings say first what the numbers stand on: how long each run trained, and how far each
condition got beyond the trivial reconstruction (every test image replaced by the mean training
image). Then what a reader looks for: which pairs differ significantly after the correction,
and which conditions are tied (identical, or equal within a stated tolerance, on every seed). The tables join related numbers into one cell (mean and CI, p and adjusted p) and
use plain-language headers, so that nothing scrolls sideways; the CSV files keep every column.
"""

from __future__ import annotations

import html
import math
from typing import Any

from analysis.stats.ties import tie_label
from analysis.study import StudyResult
from runners.store.records import label as metric_label

_TEST_NAMES = {"wilcoxon": "Wilcoxon", "mannwhitney": "Mann–Whitney U"}


def budget_sentences(budget: dict[str, Any]) -> list[str]:
    """The training budget and every condition's test MSE against the trivial reconstruction."""
    if not budget.get("runs"):
        return []
    out = []
    steps, images, batch = budget.get("steps"), budget.get("images"), budget.get("batch_size")
    if steps:
        text = f"Each run trained {_span(steps)} steps"
        text += f" of batch {_span(batch)}" if batch else ""
        text += f" ({_span(images)} images)" if images else ""
        out.append(text + ".")
    rows = [c for c in budget.get("conditions", []) if c["share"] is not None]
    if not rows:
        return out
    floors = sorted(c["mean_image_mse"] for c in rows)
    floor = _num(floors[0], 3) + ("" if floors[0] == floors[-1] else f" to {_num(floors[-1], 3)}")
    shares = ", ".join(
        f"{c['condition']} {_num(c['test_mse'], 3)} ({100 * c['share']:.0f}%)" for c in rows
    )
    out.append(
        "The trivial reconstruction (every test image replaced by the mean training image) has "
        f"test MSE {floor}; mean final test MSE per condition (share of it): "
        f"{shares}."
    )
    worse = [c["condition"] for c in rows if c["share"] >= 1]
    barely = [c["condition"] for c in rows if c["barely"] and c["share"] < 1]
    flagged = []
    if worse:
        flagged.append(f"No better than it: {', '.join(worse)}.")
    if barely:
        flagged.append(
            f"Barely better (above {100 * budget['threshold']:.0f}% of it): {', '.join(barely)}."
        )
    if flagged:
        out += flagged
        out.append(
            "Those models learnt little beyond the average image, so comparisons involving them "
            "say little about the estimators (train for more steps or on more images)."
        )
    return out


def findings(result: StudyResult) -> list[str]:
    """Sentences for the report's first paragraph: the training budget against the trivial
    reconstruction, significant pairs, then ties."""
    alpha, correction = result.config.alpha, _correction(result)
    pw = result.pairwise
    out = budget_sentences(result.budget)
    sig = pw[pw["significant"]] if len(pw) else pw
    if len(sig):
        pairs = "; ".join(
            f"{row.better} better than {row.b if row.better == row.a else row.a} "
            f"(adjusted p = {_num(row.p_adj)})"
            for row in sig.itertuples(index=False)
        )
        out.append(
            f"{len(sig)} of {len(pw)} pairs differ significantly ({correction}-adjusted "
            f"rank-test p < {alpha:g}): {pairs}."
        )
    elif len(pw):
        out.append(
            f"No pair differs significantly after {correction}'s correction (alpha = {alpha:g})"
            + ("; see the seed planning note above." if result.warnings else ".")
        )
    ties = result.omnibus.get("ties") or {}
    groups = ties.get("groups") or []
    if groups:
        shown = "; ".join(tie_label(g) for g in groups)
        out.append(
            f"Tied conditions: {shown} (≡: bit-identical results on every shared seed, every "
            f"metric at every epoch; ≈: equal within a relative {ties['rtol']:g}). Their curves "
            "coincide: the figures draw the later one dashed and mark it."
        )
    elif len(pw):
        out.append(
            "No two conditions are tied (identical, or equal within a relative "
            f"{ties.get('rtol', 0):g}, on every shared seed)."
        )
    return out


def figure_titles(result: StudyResult) -> dict[str, str]:
    """A title per figure kind, in words (no column names)."""
    metric = metric_label(result.config.metric)
    return {
        "learning_curves": f"{metric[0].upper()}{metric[1:]} per epoch",
        "final_metric": f"Final {metric} per condition",
        "pairwise_p": f"{_correction(result)}-adjusted p-values (* p < {result.config.alpha:g})",
        "pairwise_improvement": "Probability that the row beats the column",
        "cd_diagram": "Average rank over seeds (1 = best)",
        "reconstructions": "Reconstructions of the same test digits (lowest seed)",
        "bit_rates": "Per-bit activation rates at the last epoch",
        "surrogates": "Surrogate derivatives of the estimators",
        "gradient_fidelity": "Gradient diagnostics per epoch (mean over seeds)",
        "gradcheck": "Every estimator's gradient on one trained model",
        "gradient_error": "Against the exact gradient during training (mean over seeds)",
        "gradcheck_exact": "Against the exact gradient on one trained model",
    }


def summary_table(result: StudyResult) -> str:
    """Per condition: runs used, mean [CI], SD, median, IQM, average rank, cells left out."""
    level = f"{100 * result.config.confidence:g}% CI"
    head = ["condition", "runs used", f"mean [{level}]", "SD", "median", "IQM", "avg rank",
            "not in the statistics"]  # fmt: skip
    counts = [c for c in result.summary.columns if c.startswith("n_") and c != "n_completed"]
    rows = []
    for row in result.summary.to_dict("records"):
        left_out = ", ".join(f"{int(row[c])} {c[2:].replace('_', ' ')}" for c in counts if row[c])
        cells = [
            row["condition"],
            f"{row['n']} of {row['cells']}",
            f"{_num(row['mean'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]",
            _num(row["std"]),
            _num(row["median"]),
            _num(row["iqm"]),
            _num(row["avg_rank"], 3),
            left_out or "–",
        ]
        rows.append((cells, bool(row.get("best"))))
    return _table(head, rows)


def pairwise_table(result: StudyResult) -> str:
    """Per pair: seeds, difference [CI], rank test and t test p (adjusted), effect sizes."""
    pw = result.pairwise
    correction = _correction(result)
    tied = {
        frozenset((p["a"], p["b"])): p["kind"]
        for p in (result.omnibus.get("ties") or {}).get("pairs", [])
    }
    tests = {_TEST_NAMES.get(str(t), str(t)) for t in pw["test"]} if len(pw) else set()
    rank_test = tests.pop() if len(tests) == 1 else "rank test"
    head = ["pair", "seeds", "difference a − b [CI]", f"{rank_test} p ({correction})",
            f"t test p ({correction})", "Hedges' g", "P(a better)", "better", "seeds needed"]  # fmt: skip
    rows = []
    for row in pw.to_dict("records"):
        seeds = row["n_pairs"] if row["design"] == "paired" else f"{row['n_a']} / {row['n_b']}"
        test = "" if rank_test != "rank test" else " " + _TEST_NAMES.get(row["test"], row["test"])
        tie = tied.get(frozenset((row["a"], row["b"])))
        better = f"tied ({tie})" if tie else (row["better"] or "–")
        needed = row.get("seeds_needed")
        cells = [
            f"{row['a']} vs {row['b']}",
            str(seeds),
            f"{_num(row['diff'], 3)} [{_num(row['diff_ci_low'], 3)}, "
            f"{_num(row['diff_ci_high'], 3)}]",
            f"{_num(row['p'], 3)} ({_num(row['p_adj'], 3)}){test}",
            f"{_num(row['p_t'], 3)} ({_num(row['p_t_adj'], 3)})",
            _num(row["g"], 3),
            _num(row["p_improve"], 3),
            better,
            "–" if needed is None or _missing(needed) else str(int(needed)),
        ]
        rows.append((cells, bool(row["significant"])))
    note = (
        '<p class="muted">Bold: significant after the correction (rank test). p (adjusted p) '
        "and the test used. seeds needed: paired seeds for 80% power at the observed "
        "difference (see Methods).</p>"
    )
    return _table(head, rows) + note


def _table(head: list[str], rows: list[tuple[list[Any], bool]]) -> str:
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    lines = []
    for cells, strong in rows:
        tds = "".join(
            f'<td class="l">{esc(str(c))}</td>' if i == 0 else f"<td>{esc(str(c))}</td>"
            for i, c in enumerate(cells)
        )
        lines.append(f'<tr class="best">{tds}</tr>' if strong else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _num(value: Any, digits: int = 4) -> str:
    if value is None or _missing(value):
        return "–"
    return f"{float(value):.{digits}g}"


def _span(values: list[int]) -> str:
    low, high = values
    return f"{low:,}" if low == high else f"{low:,} to {high:,}"


def _missing(value: Any) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _correction(result: StudyResult) -> str:
    return {"holm": "Holm", "bh": "Benjamini–Hochberg"}[result.config.correction]
