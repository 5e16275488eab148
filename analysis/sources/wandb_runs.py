"""Read a study from Weights & Biases (public API) into the same tidy table as the run store.

For users whose results live only in W&B. The layout read is the one `runners.tracking.wandb_tracker`
writes: one W&B run per cell, group = the spec's name, config = the resolved run config plus
`run_id`, `spec`, `factors` and `condition`; epoch metrics as `epoch/<key>` against the custom
step `epoch` (and `global_step`); the final summary's scalars (with `status`) in the run summary. The full
history is read with `run.scan_history()` (every row), not `run.history()` (a sample).
Per-bit rates are only a histogram in W&B, so no `bits` come back. The group's published
analysis (job_type `analysis`, from `ste-ablate analyze --wandb`) is not a cell and is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis.sources.tidy import (
    CellRecord,
    StoreError,
    StudyData,
    build_table,
    cells_frame,
    normalize_cells,
)

# W&B run states -> cell status when the run summary carries no `status` of its own.
_STATE_STATUS = {
    "finished": "completed",
    "running": "running",
    "crashed": "failed",
    "failed": "failed",
    "killed": "interrupted",
    "preempted": "interrupted",
    "preempting": "interrupted",
}
# The job_type of a spec's published analysis (runners.tracking.analysis_run): not a cell.
ANALYSIS_JOB_TYPE = "analysis"
_CONFIG_EXTRAS = ("run_id", "spec", "factors", "condition")


def record_from_wandb(
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    history: Iterable[Mapping[str, Any]],
    *,
    name: str | None = None,
    state: str | None = None,
) -> CellRecord:
    """Map one W&B run (its config, summary and full history rows) to a cell record.

    History rows without an `epoch/<key>` scalar (step rows, images) are skipped; rows of the
    same epoch are merged, later ones winning (a resumed run may log an epoch again).
    """
    config = {k: _unwrap(v) for k, v in config.items()}
    run_id = str(config.get("run_id") or name or "")
    factors = config.get("factors") if isinstance(config.get("factors"), Mapping) else {}
    run_config = {k: v for k, v in config.items() if k not in _CONFIG_EXTRAS}
    epochs: dict[int, dict[str, Any]] = {}
    for row in history:
        values = {
            k.split("/", 1)[1]: v
            for k, v in row.items()
            if k.startswith("epoch/") and _is_scalar(v)
        }
        epoch = row.get("epoch")
        if not values or not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
            continue
        record = epochs.setdefault(int(epoch), {"epoch": int(epoch)})
        if isinstance(row.get("global_step"), (int, float)):
            record["step"] = int(row["global_step"])
        record.update(values)
    scalars = {k: v for k, v in summary.items() if not k.startswith("_") and _is_scalar(v)}
    status = scalars.get("status") if isinstance(scalars.get("status"), str) else None
    issues = []
    if status is None:
        status = _STATE_STATUS.get(str(state), "interrupted")
        issues.append(f"no status in the W&B summary (run state {state!r})")
    return CellRecord(
        run_id=run_id,
        status=status,
        factors=dict(factors or {}),
        config=run_config,
        epochs=[epochs[e] for e in sorted(epochs)],
        summary=scalars if "status" in scalars else None,
        issues=issues,
    )


def scan_wandb(
    project: str,
    group: str,
    entity: str | None = None,
    *,
    cells: Any = None,
    api: Any = None,
    fill_defaults: bool = True,
) -> StudyData:
    """Read every W&B run of `group` in `project` (expected `cells` mark the missing ones)."""
    path = f"{entity}/{project}" if entity else project
    if api is None:
        import wandb  # heavy, and only needed here: not when reading the store

        try:
            api = wandb.Api(timeout=60)
        except Exception as exc:  # noqa: BLE001 - no key, no network: one line for the user
            raise StoreError(f"cannot use the W&B API for {path}: {exc}") from None
    try:
        runs = list(api.runs(path, filters={"group": group}))
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project: one message
        raise StoreError(f"cannot list W&B runs of {path} group {group!r}: {exc}") from None
    found: dict[str, CellRecord] = {}
    for run in runs:
        if getattr(run, "job_type", None) == ANALYSIS_JOB_TYPE:
            continue
        rec = record_from_wandb(
            dict(run.config),
            dict(getattr(run.summary, "_json_dict", run.summary) or {}),
            run.scan_history(),
            name=run.name,
            state=getattr(run, "state", None),
        )
        found[rec.run_id] = rec
    expected = normalize_cells(cells)
    if expected is None:
        records = [found[k] for k in sorted(found)]
    else:
        records = []
        for cell in expected:
            rec = found.get(cell["run_id"])
            if rec is None:
                rec = CellRecord(run_id=cell["run_id"], status="missing", factors=cell["factors"])
                rec.config = dict(cell.get("config") or {})
            records.append(rec)
    axes: list[str] = []
    for rec in records:
        axes += [k for k in rec.factors if k not in axes]
    axes = axes or ["estimator", "seed"]
    return StudyData(
        table=build_table(records, axes, fill_defaults=fill_defaults),
        cells=cells_frame(records, axes),
        axes=axes,
        source=f"W&B {path} group {group}",
    )


def load_wandb(project: str, group: str, entity: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """The tidy table of a W&B project's group (same columns as `analysis.sources.store.load_store`)."""
    data = scan_wandb(project, group, entity, **kwargs)
    data.table.attrs["cells"] = data.cells.to_dict("records")
    return data.table


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _unwrap(value: Any) -> Any:
    # Old W&B API versions return config entries as {"value": ..., "desc": ...}.
    if isinstance(value, Mapping) and set(value) <= {"value", "desc"} and "value" in value:
        return value["value"]
    return value
