"""`ste-ablate analyze --wandb`: the written report, published as the spec's W&B analysis run.

Joins `analysis` (the study's tables, captions and text) and `runners.tracking.analysis_run`
(which knows W&B, not pandas). Runs after the report is written; any failure here is one
warning line and never touches the report.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from analysis.render import report_text, tables
from analysis.render.report import DEFAULT_FIGURES, figure_captions, methods_paragraph
from analysis.sources.snapshot import package_versions
from runners.grids.limits import read_yaml
from runners.tracking.analysis_run import AnalysisPublication, Figure, publish_analysis
from runners.tracking.wandb_tracker import resolve_options, wandb_root

# The analysis's `--wandb off` is the training runs' "disabled".
CHOICES = ("off", "auto", "online", "offline")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The analyze command's W&B flags."""
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="auto",
        default="off",
        choices=CHOICES,
        help="also publish the analysis as one W&B run in the spec's group (job_type analysis): "
        "tables, figures (PNG, written too), findings, LaTeX table, report. Bare --wandb = auto: "
        "online with credentials, else offline (into STORE/wandb, or WANDB_DIR, or ./wandb "
        "for a snapshot). Rerunning replaces it. Default off. Put it after SPEC",
    )
    parser.add_argument(
        "--wandb-project",
        metavar="P",
        help="W&B project to publish to (default: the spec's wandb.project, else ste-ablations)",
    )
    parser.add_argument("--wandb-entity", metavar="E", help="W&B entity (default: the spec's)")


def publish(
    args: argparse.Namespace,
    result: Any,
    out: Path,
    *,
    spec: Any,
    store: str | None,
) -> None:
    """Publish the report in `out` to W&B as `args.wandb` says; a failure is one warning."""
    if args.wandb == "off":
        return
    try:
        options = resolve_options(
            args.wandb,
            store=store,
            project=args.wandb_project or spec.extra.get("wandb_project"),
            entity=args.wandb_entity or spec.extra.get("wandb_entity"),
            group=spec.name,
            tags=tuple(spec.extra.get("wandb_tags") or ()),
        )
        if options.mode == "disabled":
            return
        published = publish_analysis(build(args, result, out, spec=spec, store=store), options)
    except Exception as exc:  # the report is written; W&B is an extra
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        print(
            f"ste-ablate: warning: W&B publishing failed ({type(exc).__name__}: {text}); "
            f"the report in {out} is complete",
            file=sys.stderr,
        )
        return
    if published.mode == "offline":
        print(
            f"W&B: analysis run {published.run_id} written offline to {published.folder}; "
            f"view it with `wandb leet {wandb_root(options)}`, upload it with "
            f"`wandb sync {published.folder}`",
            file=sys.stderr,
        )
    else:
        print(f"W&B: analysis run {published.run_id} published online", file=sys.stderr)


def build(
    args: argparse.Namespace, result: Any, out: Path, *, spec: Any, store: str | None
) -> AnalysisPublication:
    """The publication of the `analysis.study.StudyResult` whose report was written into
    `out` (figures are its PNG files)."""
    metric = result.config.metric
    if args.snapshot:
        snapshot = Path(args.snapshot)
        source: dict[str, Any] = {
            "kind": "snapshot",
            "path": str(snapshot),
            "sha256": hashlib.sha256(snapshot.read_bytes()).hexdigest(),
        }
        identity_source = f"snapshot:{source['sha256']}"
    else:
        source = {"kind": "store", "path": str(Path(store or ".").resolve())}
        identity_source = f"store:{source['path']}"
    source["description"] = spec.extra.get("source")
    captions = figure_captions(result)
    figures = []
    for kind in DEFAULT_FIGURES:
        name = f"{kind}_{metric}" if kind in ("learning_curves", "final_metric") else kind
        png = out / "figures" / f"{name}.png"
        if png.is_file():
            figures.append(Figure(name, captions[kind], png))
    findings = " ".join(report_text.findings(result))
    best = result.summary.loc[result.summary["best"], "condition"].astype(str).tolist()
    return AnalysisPublication(
        metric=metric,
        identity={"spec": spec.name, "metric": metric, "source": identity_source},
        tables={
            "summary": _rows(tables.summary_frame(result)),
            "pairwise": _rows(tables.pairwise_frame(result)),
            "cells": _rows(result.cells),
        },
        figures=figures,
        texts={
            "findings": f"<p>{_esc(findings)}</p>",
            "methods": f"<p>{_esc(methods_paragraph(result))}</p>",
            "warnings": "".join(f"<p>{_esc(w)}</p>" for w in result.warnings) or "<p>none</p>",
        },
        preformatted={
            "latex_table": (out / "table.tex").read_text(encoding="utf-8"),
            # omnibus test, ranks, critical-difference groups, ties, the seed planner
            "omnibus": (out / "omnibus.json").read_text(encoding="utf-8"),
        },
        report_html=(out / "report.html").read_text(encoding="utf-8"),
        config={
            "spec": {
                "name": spec.name,
                "sha256": spec.sha256,
                "path": spec.path,
                "axes": spec.axes,
                "content": _spec_content(spec.path),
            },
            "source": source,
            "study": asdict(result.config),
            "condition_factors": list(result.group_by),
            "report": str(out.resolve()),
            "packages": package_versions(),
        },
        summary={
            "metric": metric,
            "direction": result.direction,
            "conditions": len(result.order),
            "cells": len(result.cells),
            "usable_cells": int(result.cells["usable"].sum()),
            "best": ", ".join(best),
            "omnibus_test": result.omnibus.get("test"),
            "omnibus_p": result.omnibus.get("p"),
            "findings": findings,
        },
    )


def _rows(frame: Any) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of plain Python values (missing values None)."""
    rows = [[_plain(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return [str(c) for c in frame.columns], rows


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return str(value)
    if value is None or type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value.item() if hasattr(value, "item") else value


def _spec_content(path: str | None) -> Any:
    # The spec as written (the spec file itself may have changed since: sha256 says which).
    if not path or not Path(path).is_file():
        return None
    try:
        return read_yaml(Path(path).read_bytes())
    except Exception:  # a snapshot's spec path from another machine: name and sha256 remain
        return None


def _esc(text: str) -> str:
    return html.escape(text)
