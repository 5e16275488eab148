"""The registry as text: the table of ``ste-ablate estimators`` and the generated Markdown.

docs/estimators.md and the README's estimator table are written from here (by
``scripts/gen_estimator_docs.py``), so each formula lives once, in its estimator's class; a test
fails when a committed file differs from what this module generates.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

from ste_variants.spec import format_value

__all__ = [
    "area_text",
    "markdown_reference",
    "markdown_table",
    "peak_text",
    "replace_between",
    "table_rows",
]

TABLE_HEADER = ("name", "backward dL/dx", "defaults", "area", "peak", "paper")


def _number(value: float | None) -> str:
    """Three significant digits (exact integers as they are); None is infinite."""
    if value is None:
        return "∞"
    return format_value(float(f"{value:.3g}"))


def _span(start: float | None, end: float | None) -> str:
    first, last = _number(start), _number(end)
    return first if first == last else f"{first} → {last}"


def area_text(info: dict[str, Any]) -> str:
    """Area of the surrogate on the 0/1 step: ``1``, ``∞`` or ``10 → 1`` (annealed); ``-`` for
    the unbiased family (no surrogate)."""
    if info.get("family", "threshold") != "threshold":
        return "-"
    return _span(info["area"], info["area_end"])


def peak_text(info: dict[str, Any]) -> str:
    """Largest value of the surrogate: ``0.25`` or ``0.25 → 1.25`` (annealed); ``-`` for the
    unbiased family."""
    if info.get("family", "threshold") != "threshold":
        return "-"
    return _span(info["peak"], info["peak_end"])


def _defaults(params: dict[str, Any]) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={format_value(p['default'])}" for k, p in params.items())


def table_rows(infos: Iterable[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per estimator, in TABLE_HEADER's columns; the name is bare."""
    rows = []
    for info in infos:
        paper = info["cite"] + (f", arXiv:{info['arxiv']}" if info["arxiv"] else "")
        rows.append(
            (
                info["name"],
                " ".join(info["backward_short"].split()),
                _defaults(info["params"]),
                area_text(info),
                peak_text(info),
                paper,
            )
        )
    return rows


def _kind(info: dict[str, Any]) -> str:
    if info.get("family", "threshold") != "threshold":
        return info["family"]
    kinds = [k for k in ("stochastic", "annealed") if info[k]]
    return ", ".join(kinds) if kinds else "deterministic"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(infos: Iterable[dict[str, Any]]) -> str:
    """The estimator table in Markdown (README and docs/estimators.md)."""
    infos = list(infos)
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    for info, row in zip(infos, table_rows(infos), strict=True):
        name = f"`{row[0]}`" + ("" if _kind(info) == "deterministic" else f" ({_kind(info)})")
        lines.append("| " + " | ".join([name, *(_cell(c) for c in row[1:])]) + " |")
    return "\n".join(lines) + "\n"


def _params_lines(params: dict[str, Any]) -> list[str]:
    if not params:
        return ["- hyperparameters: none"]
    lines = ["- hyperparameters:"]
    for key, p in params.items():
        lines.append(
            f"  - `{key}` ({p['type']}) = {format_value(p['default'])}, {p['range']}: {p['doc']}"
        )
    return lines


def markdown_reference(infos: Iterable[dict[str, Any]]) -> str:
    """One section per estimator: its docstring, formulas, hyperparameters, area, peak, paper."""
    parts = []
    for info in infos:
        body = inspect.cleandoc(info["doc"]).split("\n", 1)
        rest = body[1].strip() if len(body) > 1 else ""
        area = f"- area: {area_text(info)}" + (
            f" ({info['area_note']})" if info["area_note"] else ""
        )
        lines = [
            f"### `{info['name']}`",
            "",
            info["summary"],
            "",
            f"- kind: {_kind(info)}",
            f"- forward: {info['forward']}",
            f"- {'estimate' if _kind(info) == 'unbiased' else 'backward'}: {info['backward']}",
            *_params_lines(info["params"]),
            area,
            f"- peak: {peak_text(info)}",
            f"- paper: {info['paper']}",
            *(
                [f"- reference code checked: {info['reference_code']}"]
                if info.get("reference_code")
                else []
            ),
        ]
        if rest:
            lines += ["", re.sub(r"\n\s*\n", "\n\n", rest)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def replace_between(text: str, tag: str, body: str) -> str:
    """Replace what lies between ``<!-- tag:start -->`` and ``<!-- tag:end -->`` with ``body``.

    Raises:
        ValueError: The markers are missing or out of order.
    """
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    head, found, tail = text.partition(start)
    middle, found_end, rest = tail.partition(end)
    if not found or not found_end:
        raise ValueError(f"markers {start} ... {end} not found")
    return f"{head}{start}\n{body}{end}{rest}"
