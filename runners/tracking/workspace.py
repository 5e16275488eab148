"""A saved W&B view (workspace) per spec, defined with W&B's `wandb-workspaces` package.

The view shows the spec's cells (group = the spec's name; the `analysis` run left out),
grouped by every grid axis but the seed (the estimator first). Each epoch metric is one line
plot against ``epoch``: the mean over the seeds of a group with a standard-error band. The
gradient diagnostics (``diag_*``) have their own section, the per-step training loss its own,
and the timings a closed one.

Building the view needs no network; saving it (`save_view`) needs W&B online (an API key and
the server: the package writes views through W&B's GraphQL API). `wandb-workspaces` is an
optional dependency (`pip install 'ste-ablations[dashboard]'`), imported on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DIAGNOSTICS_PREFIX = "diag_"
AGGREGATE = "mean"  # across the runs of a group (seeds)
BAND = "stderr"  # standard error of that mean


@dataclass(frozen=True)
class ViewPlan:
    """What the view holds, before it becomes `wandb_workspaces` objects.

    Attributes:
        name: the view's display name.
        group: the spec's name (the W&B group of its runs).
        group_by: config keys the runs are grouped by (non-seed grid axes, estimator first).
        sections: (section title, [(plot title, x-axis key, y key)], open) in display order.
        max_runs: runs the view shows (every cell).
    """

    name: str
    group: str
    group_by: list[str]
    sections: list[tuple[str, list[tuple[str, str, str]], bool]]
    max_runs: int


def plan_view(
    spec_name: str,
    axes: Sequence[str],
    metrics: Iterable[str],
    *,
    timing: Iterable[str] = (),
    cells: int = 10,
) -> ViewPlan:
    """The view of a spec: its grid axes, the epoch metrics its runs record, their timings."""
    timing = set(timing)
    names = sorted(set(metrics))
    general = [m for m in names if not m.startswith(DIAGNOSTICS_PREFIX) and m not in timing]
    diagnostics = [m for m in names if m.startswith(DIAGNOSTICS_PREFIX)]
    timings = [m for m in names if m in timing]
    sections: list[tuple[str, list[tuple[str, str, str]], bool]] = [
        (f"{spec_name}: metrics per epoch", [(m, "epoch", f"epoch/{m}") for m in general], True),
    ]
    if diagnostics:
        plots = [(m, "epoch", f"epoch/{m}") for m in diagnostics]
        sections.append(("gradient diagnostics", plots, True))
    sections.append(("training loss", [("train loss", "global_step", "train/loss")], True))
    if timings:
        sections.append(("timing", [(m, "epoch", f"epoch/{m}") for m in timings], False))
    group_by = sorted((a for a in axes if a != "seed"), key=lambda a: a != "estimator")
    return ViewPlan(
        name=f"ste-ablate: {spec_name}",
        group=spec_name,
        group_by=group_by or ["estimator"],
        sections=sections,
        max_runs=max(1, cells),
    )


def build_view(plan: ViewPlan, *, entity: str, project: str) -> Any:
    """The `wandb_workspaces.workspaces.Workspace` of `plan` (no network).

    Raises:
        ImportError: `wandb-workspaces` is not installed.
    """
    import wandb_workspaces.reports.v2 as wr  # optional, and a second to import
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    sections = [
        ws.Section(
            name=title,
            is_open=is_open,
            panels=[
                wr.LinePlot(
                    title=name,
                    x=x,
                    y=[y],
                    groupby_aggfunc=AGGREGATE,
                    groupby_rangefunc=BAND,
                )
                for name, x, y in plots
            ],
        )
        for title, plots, is_open in plan.sections
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=plan.name,
        sections=sections,
        settings=ws.WorkspaceSettings(max_runs=plan.max_runs),
        runset_settings=ws.RunsetSettings(
            filters=expr.And(ws.Metric("Group") == plan.group, ws.Metric("JobType") != "analysis"),
            groupby=[ws.Config(key) for key in plan.group_by],
        ),
    )


def save_view(workspace: Any) -> str:
    """Save the view to W&B (online: API key and network) and return its URL."""
    return str(workspace.save().url)


def describe(plan: ViewPlan) -> list[str]:
    """The view as lines of text (what `ste-ablate dashboard --dry-run` prints)."""
    lines = [
        f"view {plan.name!r}: runs of group {plan.group!r} (job_type analysis left out), "
        f"grouped by {', '.join(plan.group_by)}; each plot: {AGGREGATE} over a group's runs "
        f"with a {BAND} band; up to {plan.max_runs} runs",
    ]
    for title, plots, is_open in plan.sections:
        state = "" if is_open else " (closed)"
        lines.append(f"section {title!r}{state}: " + ", ".join(f"{y} vs {x}" for _, x, y in plots))
    return lines
