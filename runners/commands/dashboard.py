"""`ste-ablate dashboard`: save a W&B view of a spec's runs (needs W&B online)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from runners.commands.parts.grid import add_max_cells, check_store
from runners.errors import UserError
from runners.grids.spec import load_spec
from runners.store.format import read_jsonl, run_dir
from runners.store.records import TIMING_KEYS
from runners.tracking.wandb_tracker import DEFAULT_PROJECT, has_wandb_credentials, wandb_client
from runners.tracking.workspace import build_view, describe, plan_view, save_view

DEFAULT_STORE = "ste-store"
_NOT_METRICS = frozenset({"epoch", "step"})

_EPILOG = """\
examples:
  ste-ablate dashboard ablations/quickstart.yaml --dry-run     show the view, upload nothing
  ste-ablate dashboard ablations/quickstart.yaml                save it (W&B online)

The view: the spec's runs (its W&B group), grouped by every grid axis but the seed; one line
plot per epoch metric the store's runs recorded, the mean over seeds with a standard-error band;
the gradient diagnostics in their own section. Saving needs W&B online (an API key and the
server); the view is saved under the project's views, and its URL is printed. Needs the
optional package wandb-workspaces (pip install 'ste-ablations[dashboard]').
"""


def register(subparsers: Any) -> None:
    """Add the ``dashboard`` command."""
    cmd = subparsers.add_parser(
        "dashboard",
        help="save a W&B view of a spec's runs: grouped by its axes, mean and error band",
        description="Save a W&B workspace view for a spec's runs (needs W&B online).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("spec", help="the ablation spec (YAML)")
    cmd.add_argument(
        "--store", default=DEFAULT_STORE, help=f"where the metric names come from ({DEFAULT_STORE})"
    )
    cmd.add_argument(
        "--wandb-project",
        metavar="P",
        help=f"W&B project (default: the spec's wandb.project, else {DEFAULT_PROJECT!r})",
    )
    cmd.add_argument(
        "--wandb-entity", metavar="E", help="W&B entity (default: the spec's, else yours)"
    )
    cmd.add_argument(
        "--dry-run", action="store_true", help="print the view and check it; upload nothing"
    )
    add_max_cells(cmd)
    cmd.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    path = Path(args.spec)
    if not path.is_file():
        raise UserError(f"spec {args.spec} not found")
    spec = load_spec(path, max_cells=args.max_cells)
    metrics = recorded_metrics(Path(args.store), [c.run_id for c in spec.cells])
    plan = plan_view(spec.name, spec.axes, metrics, timing=TIMING_KEYS, cells=len(spec.cells))
    project = args.wandb_project or spec.wandb.project or DEFAULT_PROJECT
    entity = args.wandb_entity or spec.wandb.entity
    online = has_wandb_credentials() and os.environ.get("WANDB_MODE", "").lower() not in (
        "offline",
        "dryrun",
        "disabled",
    )
    if not args.dry_run and not online:
        raise UserError(
            "ste-ablate dashboard needs W&B online (no credentials: WANDB_API_KEY or `wandb "
            "login`, or WANDB_MODE is offline); --dry-run shows the view without uploading"
        )
    if not args.dry_run and entity is None:
        entity = _default_entity()
    try:
        view = build_view(plan, entity=entity or "(your entity)", project=project)
    except ImportError:
        raise UserError(
            "ste-ablate dashboard needs the wandb-workspaces package: "
            "pip install 'ste-ablations[dashboard]'"
        ) from None
    for line in describe(plan):
        print(line)
    if args.dry_run:
        print(f"--dry-run: not saved (project {project}, entity {entity or 'yours'})")
        return 0
    try:
        url = save_view(view)
    except Exception as exc:  # network, auth, server: one line
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"saving the W&B view failed: {text}") from None
    print(url)
    return 0


def recorded_metrics(store: Path, run_ids: list[str]) -> list[str]:
    """The numeric keys of the epoch records (metrics.jsonl) of the spec's runs in `store`."""
    check_store(store)
    names: set[str] = set()
    for run_id in run_ids:
        try:
            records = read_jsonl(run_dir(store, run_id) / "metrics.jsonl")
        except (OSError, ValueError):  # not trained yet, or torn: the others say enough
            continue
        for record in records:
            names.update(
                k
                for k, v in record.items()
                if k not in _NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)
            )
    if not names:
        raise UserError(
            f"no epoch metrics of this spec's runs in the store {store}: train it first "
            "(ste-ablate run), or give --store"
        )
    return sorted(names)


def _default_entity() -> str:
    try:
        entity = wandb_client().Api(timeout=30).default_entity
    except Exception as exc:  # network, auth
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(
            f"cannot reach W&B to find your entity ({text}); give --wandb-entity"
        ) from None
    if not entity:
        raise UserError("W&B has no default entity for this key; give --wandb-entity")
    return str(entity)
