"""`ste-ablate estimators`: list the registered estimators, or describe one."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ste_variants import describe, list_estimators
from ste_variants.catalog import area_text, markdown_table, peak_text, table_rows
from ste_variants.spec import format_value

_EPILOG = """\
examples:
  ste-ablate estimators                      table of every registered estimator
  ste-ablate estimators describe sigmoid     formulas, hyperparameters, paper, area
  ste-ablate estimators describe 'sigmoid(beta=4)' --json
  ste-ablate estimators --markdown           the table as Markdown (as in docs/estimators.md)

A spec is NAME or 'NAME(key=value, ...)'; third-party packages add estimators through the
entry-point group "ste_variants" (see docs/estimators.md).
"""


def register(subparsers: Any) -> None:
    """Add the ``estimators`` command (and its ``describe`` subcommand)."""
    parser = subparsers.add_parser(
        "estimators",
        help="list the gradient estimators, or describe one",
        description="List the registered straight-through estimators (name, backward rule, "
        "hyperparameters with defaults, area and peak of the surrogate on the 0/1 step, paper), "
        "or describe one in full.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the metadata of all as JSON")
    output.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown (the docs' table)"
    )
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="estimators_command", metavar="SUBCOMMAND")
    desc = sub.add_parser(
        "describe",
        help="full metadata of one estimator",
        description="Print the forward and backward rules, hyperparameters (default, range), "
        "paper, whether stochastic or annealed, and the surrogate's area and peak.",
    )
    desc.add_argument("name", metavar="NAME", help="estimator name or spec, e.g. 'sigmoid(beta=4)'")
    desc.add_argument("--json", action="store_true", help="print the metadata as JSON")
    desc.set_defaults(func=_describe)


def _list(args: argparse.Namespace) -> int:
    infos = [describe(name) for name in list_estimators()]
    if args.json:
        print(json.dumps(infos, indent=2, ensure_ascii=False))
        return 0
    if args.markdown:
        print(markdown_table(infos), end="")
        return 0
    header = ("name", "backward (dL/dx)", "hyperparameters", "area", "peak", "paper")
    rows = [
        (
            row[0] + (" *" if info["stochastic"] else "") + (" ~" if info["annealed"] else ""),
            *row[1:],
        )
        for info, row in zip(infos, table_rows(infos), strict=True)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)]
        return "  ".join([*cells, row[-1]])

    print(line(header))
    print(line(tuple("-" * w for w in widths) + ("-" * 5,)))
    for row in rows:
        print(line(row))
    print(
        f"\n{len(rows)} estimators; * stochastic, ~ annealed (follows training progress; area and "
        "peak at start → end). Forward is 1{x > 0} for all; area and peak are those of the "
        "surrogate on the 0/1 step (eval mode). `ste-ablate estimators describe NAME` for details."
    )
    return 0


def _describe(args: argparse.Namespace) -> int:
    info = describe(args.name)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    area = area_text(info).replace("∞", "infinite")
    if info["annealed"]:
        area += "  (progress 0 → 1)" if "→" in area else ""
    print(f"{info['name']}: {info['summary']}")
    if info["spec"] != info["name"]:
        print(f"  spec:       {info['spec']}")
    print(f"  forward:    {info['forward']}")
    unbiased = info["family"] == "unbiased"
    print(f"  {'estimate: ' if unbiased else 'backward: '}  {info['backward']}")
    print(f"  stochastic: {'yes' if info['stochastic'] else 'no'}")
    print(f"  annealed:   {'yes (set_progress)' if info['annealed'] else 'no'}")
    family = "unbiased (objective evaluations)" if unbiased else "threshold (custom backward)"
    print(f"  family:     {family}; samples {info['samples_from'] or 'nothing (deterministic)'}")
    print(f"  area:       {area}" + (f"; {info['area_note']}" if info["area_note"] else ""))
    print(f"  peak:       {peak_text(info)}")
    print("  hyperparameters:" + ("" if info["params"] else " none"))
    for key, p in info["params"].items():
        value = "" if p["value"] == p["default"] else f", value {format_value(p['value'])}"
        print(
            f"    {key} ({p['type']}): default {format_value(p['default'])}{value}, "
            f"{p['range']}; {p['doc']}"
        )
    paper = textwrap.fill(
        info["paper"], width=96, initial_indent="  paper:      ", subsequent_indent=" " * 14
    )
    print(paper)
    if info["arxiv"]:
        print(f"  arXiv:      {info['arxiv']}")
    if info["reference_code"]:
        print(f"  checked:    {info['reference_code']}")
    return 0
