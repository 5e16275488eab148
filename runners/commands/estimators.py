"""`ste-ablate estimators`: list the registered estimators, or describe one."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ste_variants import describe, list_estimators
from ste_variants.spec import format_value

_EPILOG = """\
examples:
  ste-ablate estimators                      table of every registered estimator
  ste-ablate estimators describe sigmoid     formulas, hyperparameters, paper, area
  ste-ablate estimators describe 'sigmoid(beta=4)' --json

A spec is NAME or 'NAME(key=value, ...)'; third-party packages add estimators through the
entry-point group "ste_variants" (see docs/estimators.md).
"""


def register(subparsers: Any) -> None:
    """Add the ``estimators`` command (and its ``describe`` subcommand)."""
    parser = subparsers.add_parser(
        "estimators",
        help="list the gradient estimators, or describe one",
        description="List the registered straight-through estimators (name, backward rule, "
        "hyperparameters with defaults, paper), or describe one in full.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the metadata of all as JSON")
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="estimators_command", metavar="SUBCOMMAND")
    desc = sub.add_parser(
        "describe",
        help="full metadata of one estimator",
        description="Print the forward and backward rules, hyperparameters (default, range), "
        "paper, whether stochastic or annealed, and the surrogate's area.",
    )
    desc.add_argument("name", metavar="NAME", help="estimator name or spec, e.g. 'sigmoid(beta=4)'")
    desc.add_argument("--json", action="store_true", help="print the metadata as JSON")
    desc.set_defaults(func=_describe)


def _params_text(params: dict[str, Any]) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={format_value(v['default'])}" for k, v in params.items())


def _list(args: argparse.Namespace) -> int:
    infos = [describe(name) for name in list_estimators()]
    if args.json:
        print(json.dumps(infos, indent=2, ensure_ascii=False))
        return 0
    header = ("name", "backward (dL/dx)", "hyperparameters", "paper")
    rows = [
        (
            info["name"]
            + (" *" if info["stochastic"] else "")
            + (" ~" if info["annealed"] else ""),
            info["backward_short"],
            _params_text(info["params"]),
            info["cite"],
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, ...]) -> str:
        return (
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )

    print(line(header))
    print(line(tuple("-" * w for w in widths) + ("-" * 5,)))
    for row in rows:
        print(line(row))
    print(
        f"\n{len(rows)} estimators; * stochastic, ~ annealed (follows training progress). "
        "Forward is 1{x > 0} for all. `ste-ablate estimators describe NAME` for details."
    )
    return 0


def _describe(args: argparse.Namespace) -> int:
    info = describe(args.name)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    area = "infinite" if info["area"] is None else format_value(float(info["area"]))
    if info["annealed"] and info["area_end"] != info["area"]:
        end = "infinite" if info["area_end"] is None else format_value(float(info["area_end"]))
        area += f" at progress 0, {end} at progress 1"
    print(f"{info['name']}: {info['summary']}")
    if info["spec"] != info["name"]:
        print(f"  spec:       {info['spec']}")
    print(f"  forward:    {info['forward']}")
    print(f"  backward:   {info['backward']}")
    print(f"  stochastic: {'yes' if info['stochastic'] else 'no'}")
    print(f"  annealed:   {'yes (set_progress)' if info['annealed'] else 'no'}")
    print(f"  area:       {area}" + (f"  ({info['area_note']})" if info["area_note"] else ""))
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
    return 0
