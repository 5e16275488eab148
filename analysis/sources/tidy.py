"""The tidy table: cell records (from the run store or W&B) to one row per run × epoch × metric.

Columns (docs/architecture.md section 5): run_id, status, estimator, estimator_name, seed, epoch,
step, metric, value, every config field, `hp_<name>` per estimator hyperparameter, and every grid
factor. Column dtypes are nullable pandas types chosen from the raw values, so that a table
survives a CSV round trip unchanged (see `analysis.sources.snapshot`). A cell with no trusted epoch keeps
one placeholder row (empty epoch, metric and value): nothing is silently dropped.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from runners.store.records import EPOCH_METRICS, RECORD_INDEX, RECORD_LISTS, SUMMARY_METRICS

STATUSES: tuple[str, ...] = (
    "completed",
    "diverged",
    "failed",
    "interrupted",
    "running",
    "missing",
    "corrupt",
)
BASE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "status",
    "estimator",
    "estimator_name",
    "seed",
    "epoch",
    "step",
    "metric",
    "value",
)
_BASE_DTYPES = {
    "run_id": "str",
    "status": "str",
    "estimator": "str",
    "estimator_name": "str",
    "seed": "Int64",
    "epoch": "Int64",
    "step": "Int64",
    "metric": "str",
    "value": "float64",
}
# Epoch-record keys that are not metrics.
_NOT_METRICS = {*RECORD_INDEX, *RECORD_LISTS}


class StoreError(ValueError):
    """The store, a spec index or a snapshot cannot be read (a user-facing, one-line message)."""


@dataclass
class CellRecord:
    """Everything read from one cell, before it becomes table rows."""

    run_id: str
    status: str
    factors: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    issues: list[str] = field(default_factory=list)
    run_dir: Path | None = None


@dataclass
class StudyData:
    """A tidy table plus what the analysis needs around it.

    Attributes:
        table: the tidy table (section 5 of docs/architecture.md).
        cells: one row per expected cell: run_id, status, estimator, seed, epochs_done, issues,
            and the grid factors.
        axes: the grid factors (spec order); the conditions compared are all axes but the seed.
        bits: per-bit activation rates (run_id, epoch, bit, rate) or None.
        run_dirs: run_id -> folder in the store (None when read from a snapshot or W&B).
        source: a short description of where the data came from.
        gradcheck: `ste-ablate gradcheck` results (`analysis.sources.gradcheck`) or None.
        gradcheck_exact: `ste-ablate gradcheck --exact` documents (gradcheck_exact.json of the
            runs, as written) or None.
    """

    table: pd.DataFrame
    cells: pd.DataFrame
    axes: list[str]
    bits: pd.DataFrame | None = None
    run_dirs: dict[str, Path] = field(default_factory=dict)
    source: str = ""
    gradcheck: pd.DataFrame | None = None
    gradcheck_exact: list[dict[str, Any]] | None = None


def normalize_cells(cells: Any) -> list[dict[str, Any]] | None:
    """Expected cells as dicts {run_id, factors, config}.

    Accepts None, a spec index dict ({"cells": [...]}), or an iterable of dicts or objects with
    `.run_id`, `.factors` and optionally `.config` (e.g. `runners.grids.spec` cells).
    """
    if cells is None:
        return None
    if isinstance(cells, Mapping):
        cells = cells.get("cells", [])
    out = []
    for cell in cells:
        if isinstance(cell, Mapping):
            run_id, factors, config = cell["run_id"], cell.get("factors"), cell.get("config")
        else:
            run_id, factors = cell.run_id, getattr(cell, "factors", None)
            config = getattr(cell, "config", None)
        if config is not None and not isinstance(config, Mapping):
            config = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
        out.append({"run_id": str(run_id), "factors": dict(factors or {}), "config": config})
    return out


def parse_estimator(spec: Any) -> tuple[str, dict[str, Any]]:
    """Split an estimator spec into its family name and explicit hyperparameters.

    Accepts "sigmoid", "sigmoid(beta=4)" or {"name": "sigmoid", "beta": 4}. Numbers become floats.
    """
    if isinstance(spec, Mapping):
        params = {k: _number(v) for k, v in spec.items() if k != "name"}
        return str(spec.get("name", "")), params
    text = str(spec).strip()
    match = re.fullmatch(r"([^()\s]+)\s*(?:\((.*)\))?", text)
    if not match:
        return text, {}
    name, inner = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    for part in (inner or "").split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip()] = _number(value.strip())
    return name, params


def estimator_params(spec: Any, fill_defaults: bool = True) -> tuple[str, dict[str, Any]]:
    """Family name and hyperparameters, defaults filled from the registry when it knows the name."""
    key = json.dumps(spec, sort_keys=True) if isinstance(spec, Mapping) else str(spec)
    name, params = _estimator_params(key, isinstance(spec, Mapping), fill_defaults)
    return name, dict(params)


@functools.lru_cache(maxsize=256)
def _estimator_params(
    key: str, is_mapping: bool, fill_defaults: bool
) -> tuple[str, dict[str, Any]]:
    spec: Any = json.loads(key) if is_mapping else key
    name, params = parse_estimator(spec)
    if fill_defaults:
        try:  # lazily: the registry imports torch, and stores may hold unregistered estimators
            from ste_variants import get_estimator

            est = get_estimator(spec if isinstance(spec, Mapping) else str(spec))
            name, params = est.name, {k: _number(v) for k, v in est.params.items()}
        except Exception:  # noqa: BLE001 - unknown to this registry: keep the spec's own values
            pass
    return name, params


def bit_rates_table(records: Iterable[CellRecord], last_only: bool = True) -> pd.DataFrame:
    """Per-bit rates from trusted epoch records (long format)."""
    rows = []
    for rec in records:
        epochs = [e for e in rec.epochs if isinstance(e.get("bit_rates"), list)]
        if last_only and epochs:
            epochs = epochs[-1:]
        for record in epochs:
            for bit, rate in enumerate(record["bit_rates"]):
                rows.append((rec.run_id, int(record["epoch"]), bit, _float(rate)))
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "bit", "rate"])
    return frame.astype({"run_id": "str", "epoch": "int64", "bit": "int64", "rate": "float64"})


def build_table(
    records: list[CellRecord], axes: list[str], *, fill_defaults: bool = True
) -> pd.DataFrame:
    """Turn cell records into the tidy table (deterministic row and column order)."""
    config_keys: list[str] = []
    for rec in records:
        for key in list(rec.config) + list(rec.factors):
            if key not in config_keys and key not in BASE_COLUMNS:
                config_keys.append(key)
    rows: list[dict[str, Any]] = []
    hp_keys: set[str] = set()
    for rec in records:
        config = {**rec.factors, **rec.config}
        spec = config.get("estimator")
        name, params = estimator_params(spec, fill_defaults) if spec is not None else ("", {})
        hp_keys.update(params)
        base = {k: config.get(k) for k in config_keys}
        base.update({f"hp_{k}": v for k, v in params.items()})
        base.update(
            run_id=rec.run_id,
            status=rec.status,
            estimator=_spec_text(spec),
            estimator_name=name or None,
            seed=config.get("seed"),
        )
        cell_rows = _metric_rows(rec)
        if not cell_rows:
            cell_rows = [{"epoch": None, "step": None, "metric": None, "value": math.nan}]
        rows.extend({**base, **r} for r in cell_rows)
    columns = list(BASE_COLUMNS) + config_keys + [f"hp_{k}" for k in sorted(hp_keys)]
    for axis in axes:
        if axis not in columns:
            columns.append(axis)
    # Dtypes from the raw values: the DataFrame constructor would already turn ints into floats.
    dtypes = {c: _BASE_DTYPES.get(c) or infer_dtype([r.get(c) for r in rows]) for c in columns}
    return coerce(pd.DataFrame(rows, columns=columns), dtypes)


def cells_frame(records: list[CellRecord], axes: list[str]) -> pd.DataFrame:
    """The per-cell report: run_id, status, estimator, seed, epochs_done, issues, factors."""
    rows = []
    for rec in records:
        config = {**rec.factors, **rec.config}
        done = len(rec.epochs)
        if rec.summary and isinstance(rec.summary.get("epochs_done"), int) and rec.epochs:
            done = rec.summary["epochs_done"]
        row = {
            "run_id": rec.run_id,
            "status": rec.status,
            "estimator": _spec_text(config.get("estimator")),
            "seed": config.get("seed"),
            "epochs_done": done,
            "issues": "; ".join(rec.issues),
        }
        for axis in axes:
            if axis not in row:
                row[axis] = _scalar(config.get(axis))
        rows.append(row)
    columns = ["run_id", "status", "estimator", "seed", "epochs_done", "issues"]
    columns += [a for a in axes if a not in columns]
    dtypes = {c: infer_dtype([r.get(c) for r in rows]) for c in columns}
    return coerce(pd.DataFrame(rows, columns=columns), dtypes)


def cells_from_table(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Rebuild a per-cell report from a tidy table alone (issues unknown)."""
    cols = ["run_id", "status", "estimator", "seed"] + [
        a for a in axes if a not in ("estimator", "seed") and a in table.columns
    ]
    firsts = table.drop_duplicates("run_id")[cols].reset_index(drop=True)
    done = table.groupby("run_id", sort=False)["epoch"].max()
    firsts.insert(4, "epochs_done", firsts["run_id"].map(done).fillna(0).astype("int64"))
    firsts.insert(5, "issues", "")
    return firsts


def infer_dtype(values: list[Any]) -> str:
    """A nullable pandas dtype that holds `values` and survives a CSV round trip."""
    present = [v for v in values if not _is_missing(v)]
    if not present:
        return "float64"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    return "str"


def coerce(frame: pd.DataFrame, dtypes: Mapping[str, str]) -> pd.DataFrame:
    """Cast columns to `dtypes`; non-scalar values in string columns become JSON text."""
    frame = frame.copy()
    for column, dtype in dtypes.items():
        values = frame[column]
        if dtype == "str":
            values = values.map(lambda v: None if _is_missing(v) else _text(v))
        elif dtype in ("float64", "Int64"):
            values = values.map(lambda v: math.nan if _is_missing(v) else v)
        frame[column] = values.astype(dtype)
    return frame


def _metric_rows(rec: CellRecord) -> list[dict[str, Any]]:
    if not rec.epochs:
        return []
    per_epoch: list[tuple[int, Any, dict[str, float]]] = []
    for record in rec.epochs:
        values = {}
        for key, value in record.items():
            if key in _NOT_METRICS or value is None or isinstance(value, (list, dict, str)):
                continue
            values[key] = _float(value)
        per_epoch.append((int(record["epoch"]), record.get("step"), values))
    if rec.summary:
        # summary.json is the final word on the last epoch; it alone carries wall_time_s.
        last = per_epoch[-1][2]
        for key in EPOCH_METRICS + SUMMARY_METRICS:
            value = rec.summary.get(key)
            if value is not None and not isinstance(value, (list, dict, str)):
                last[key] = _float(value)
    order = {m: i for i, m in enumerate(EPOCH_METRICS + SUMMARY_METRICS)}
    rows = []
    for epoch, step, values in per_epoch:
        for metric in sorted(values, key=lambda m: (order.get(m, len(order)), m)):
            rows.append({"epoch": epoch, "step": step, "metric": metric, "value": values[metric]})
    return rows


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return str(value).strip("'\"")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _spec_text(spec: Any) -> str | None:
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        name, params = parse_estimator(spec)
        inner = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))
        return f"{name}({inner})" if inner else name
    return str(spec)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _scalar(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)
