"""A spec's analysis as one W&B run, beside the runs of its cells.

Layout: group = the spec's name, job_type ``analysis``, name ``analysis: <metric>``. One logged
step holds ``tables/<name>`` (W&B Tables: summary, pairwise, cells), ``figures/<name>`` (every
figure of the report, as an image with its caption) and ``text/<name>`` (HTML: the findings, the
methods, the warnings, the LaTeX table, omnibus.json, the whole report). The run summary holds a few scalars (metric,
direction, conditions, best) and the findings as text; the config holds the spec, the source
(the store or the snapshot and its sha256), the study's settings and the package versions.

The run id is derived from the analysis's identity (`analysis_run_id`), and the run resumes:
publishing again updates the same W&B run rather than adding one. Offline, the new run folder
replaces the earlier folders of that id, so `wandb sync` uploads the latest analysis only.

The report on disk is the source of truth: it is written first, and a W&B failure here raises
for the caller to turn into a warning.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.tracking.wandb_tracker import (
    WandbOptions,
    start_run,
    wandb_client,
    wandb_root,
    wandb_run_id,
)

# Readers of a spec's W&B runs skip this job_type (analysis.sources.wandb_runs): not a cell.
ANALYSIS_JOB_TYPE = "analysis"


@dataclass(frozen=True)
class Figure:
    """One figure of the report: its name, caption and PNG file."""

    name: str
    caption: str
    png: Path


@dataclass
class AnalysisPublication:
    """What one analysis publishes (plain Python: no pandas, no analysis types).

    Attributes:
        metric: the compared metric (in the run's name and id).
        identity: what makes two analyses the same one (spec name, source, metric, ...): hashed
            into the run id, so that publishing it again replaces it.
        tables: name -> (columns, rows); non-finite numbers become empty cells.
        figures: the report's figures.
        texts: name -> HTML fragment (findings, methods) shown as a W&B HTML panel.
        preformatted: name -> plain text (the LaTeX table, omnibus.json) shown verbatim.
        report_html: the self-contained report page, published whole (None: left out).
        config: the run's config (spec, source, settings, package versions).
        summary: scalars for the run summary.
    """

    metric: str
    identity: dict[str, Any]
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    preformatted: dict[str, str] = field(default_factory=dict)
    report_html: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """Where an analysis went: W&B run id, the mode it ran in, its local run folder."""

    run_id: str
    mode: str
    folder: Path | None


def analysis_run_id(identity: dict[str, Any]) -> str:
    """The W&B run id of an analysis: readable prefix (spec, metric) plus a hash of `identity`.

    The same identity gives the same id, in any process and on any machine.
    """
    digest = hashlib.sha256(
        json.dumps(identity, sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()[:12]
    spec = str(identity.get("spec") or "spec")[:40]
    metric = str(identity.get("metric") or "")[:30]
    return wandb_run_id(f"analysis-{spec}-{metric}-{digest}")


def publish_analysis(publication: AnalysisPublication, options: WandbOptions) -> Published:
    """Log `publication` as the analysis run of `options.group` (mode already resolved).

    Raises whatever W&B raises; the caller's report is already written.
    """
    wandb = wandb_client()
    run_id = analysis_run_id(publication.identity)
    kwargs: dict[str, Any] = dict(
        project=options.project,
        entity=options.entity,
        group=options.group,
        job_type=ANALYSIS_JOB_TYPE,
        name=f"analysis: {publication.metric}",
        tags=[*options.tags, ANALYSIS_JOB_TYPE],
        config=_json_ready(publication.config),
        id=run_id,
        resume="allow",
        dir=options.directory,
    )
    run, mode = start_run(options, options.mode, kwargs)
    try:
        data: dict[str, Any] = {}
        for name, (columns, rows) in publication.tables.items():
            data[f"tables/{name}"] = wandb.Table(
                columns=list(columns), data=[[_cell(v) for v in row] for row in rows]
            )
        for fig in publication.figures:
            data[f"figures/{fig.name}"] = wandb.Image(str(fig.png), caption=fig.caption)
        for name, fragment in publication.texts.items():
            data[f"text/{name}"] = wandb.Html(fragment)
        for name, text in publication.preformatted.items():
            data[f"text/{name}"] = wandb.Html(f"<pre>{html.escape(text)}</pre>")
        if publication.report_html is not None:
            data["text/report"] = wandb.Html(publication.report_html, inject=False)
        run.log(data)
        run.summary.update(_json_ready(publication.summary))
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0)
    folder = Path(run.dir).parent if mode == "offline" else None
    if folder is not None:
        _drop_older_offline_runs(wandb_root(options), run_id, keep=folder)
    return Published(run_id=run_id, mode=mode, folder=folder)


def _drop_older_offline_runs(root: Path, run_id: str, keep: Path) -> None:
    """Remove the offline folders of earlier publications of `run_id` (they hold an older
    analysis; `wandb sync` of both would upload it too)."""
    for folder in root.glob(f"offline-run-*-{run_id}"):
        if folder.is_dir() and folder.resolve() != keep.resolve():
            shutil.rmtree(folder, ignore_errors=True)


def _cell(value: Any) -> Any:
    # W&B writes tables as JSON: NaN and infinities are not JSON, an empty cell is.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
