"""Read the run store (docs/architecture.md section 3) into one tidy table (section 5).

`load_store(store, cells)` returns a pandas DataFrame with one row per run × epoch × metric.
Every file is validated on read with the store format's own checks (`runners.store.format`): a
file that fails to parse, or whose sha256 differs from the one `summary.json` records, or a
config.json that belongs to another run (its run id, or the run id its values hash to), makes the
cell `corrupt` (reported, its numbers never used). Cells that the spec expects but the store lacks
are `missing`. A cell with no trusted epoch keeps one placeholder row (empty epoch, metric and
value) so that nothing is silently dropped, also after a round trip through a snapshot. Per-bit
activation rates stay out of the tidy table: `load_bit_rates` returns them for the bit plots.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.sources.gradcheck import read_gradcheck_exacts, read_gradchecks
from analysis.sources.tidy import (
    STATUSES,
    CellRecord,
    StoreError,
    StudyData,
    bit_rates_table,
    build_table,
    cells_frame,
    normalize_cells,
)
from runners.store import format as store_format

TRUSTED = ("completed", "diverged", "failed", "interrupted")  # cells whose files are their own


def read_spec_index(store: str | Path, name: str) -> dict[str, Any]:
    """Read STORE/specs/<name>.json (written by `ste-ablate run`)."""
    path = store_format.spec_index_path(store, name)
    try:
        index = store_format.read_json(path)
    except FileNotFoundError:
        raise StoreError(f"no spec index {path} (run the spec first: ste-ablate run)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"spec index {path} is unreadable: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("cells"), list):
        raise StoreError(f"spec index {path} has no 'cells' list")
    return index


def read_cell(run_dir: Path, run_id: str, factors: Mapping[str, Any] | None = None) -> CellRecord:
    """Read and validate one run folder; never raises for a bad file (it is reported)."""
    rec = CellRecord(run_id=run_id, status="missing", factors=dict(factors or {}), run_dir=run_dir)
    if not run_dir.is_dir():
        return rec
    corrupt: list[str] = []
    config_doc = _read_json(run_dir / store_format.CONFIG, corrupt)
    if config_doc is not None:
        if not isinstance(config_doc, dict) or not isinstance(config_doc.get("config"), dict):
            corrupt.append("config.json has no 'config' object")
        else:
            rec.config = dict(config_doc["config"])
            problem = store_format.config_problem(config_doc, run_id)
            if problem is not None:
                corrupt.append(problem)
    summary = _read_json(run_dir / store_format.SUMMARY, corrupt)
    if summary is not None and not isinstance(summary, dict):
        corrupt.append("summary.json is not an object")
        summary = None
    rec.summary = summary
    rec.epochs = _read_epochs(run_dir / store_format.METRICS, corrupt)
    if summary is not None:
        listed = store_format.listed_file_problems(run_dir, summary.get("files") or {})
        corrupt += listed
        problem = None
        if not listed:
            problem = store_format.final_files_problem(summary)
            problem = problem or store_format.content_problem(run_dir, summary)
        if problem is not None and problem not in corrupt:
            corrupt.append(problem)
        status = summary.get("status")
        if status not in STATUSES:
            corrupt.append(f"summary.json has unknown status {status!r}")
        elif status == "completed" and not rec.epochs:
            corrupt.append("completed, but metrics.jsonl has no epoch")
        rec.status = str(status)
        if summary.get("error"):
            rec.issues.append(f"error: {_one_line(summary['error'])}")
    elif store_format.lock_held(run_dir):
        rec.status = "running"
        rec.issues.append("a process holds the cell's lock (still training)")
    elif config_doc is not None or rec.epochs:
        rec.status = "interrupted"
        rec.issues.append("no summary.json (stopped before the end)")
    else:
        rec.status = "interrupted"
        rec.issues.append("run folder holds no config.json (never started)")
    if corrupt:
        rec.status = "corrupt"
        rec.issues = corrupt + rec.issues
        rec.epochs = []
    return rec


def scan_store(
    store: str | Path,
    cells: Any = None,
    *,
    axes: list[str] | None = None,
    fill_defaults: bool = True,
    with_bits: bool = True,
) -> StudyData:
    """Read every expected cell (or every run folder when `cells` is None) from a store."""
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"store {store} does not exist")
    expected = _expected_cells(store, cells)
    records = []
    for cell in expected:
        run_id = cell["run_id"]
        rec = read_cell(store_format.run_dir(store, run_id), run_id, cell["factors"])
        if not rec.config and cell.get("config"):
            rec.config = dict(cell["config"])  # config known from the spec, for missing cells
        records.append(rec)
    if axes is None:
        axes = _axes_from_cells(expected)
    table = build_table(records, axes, fill_defaults=fill_defaults)
    bits = bit_rates_table(records) if with_bits else None
    run_dirs = {r.run_id: r.run_dir for r in records if r.run_dir is not None}
    trusted_dirs = {r.run_id: r.run_dir for r in records if r.run_dir and r.status in TRUSTED}
    return StudyData(
        table=table,
        cells=cells_frame(records, axes),
        axes=axes,
        bits=bits,
        run_dirs=run_dirs,
        source=f"store {store}",
        # Only trusted cells: a corrupt folder's gradcheck files are no more its run's than the rest.
        gradcheck=read_gradchecks(trusted_dirs),
        gradcheck_exact=read_gradcheck_exacts(trusted_dirs),
    )


def load_store(store: str | Path, cells: Any = None) -> pd.DataFrame:
    """The tidy table of a store: one row per run × epoch × metric (docs/architecture.md §5).

    Args:
        store: the store folder (holding runs/ and specs/).
        cells: the expected cells (a spec index dict, or dicts/objects with run_id and factors);
            None reads every run folder. Expected cells absent from the store appear with status
            "missing"; corrupt ones with status "corrupt"; both as one placeholder row.

    Returns:
        The DataFrame; `df.attrs["cells"]` holds the per-cell report (statuses and issues).
    """
    data = scan_store(store, cells, with_bits=False)
    table = data.table
    table.attrs["cells"] = data.cells.to_dict("records")
    return table


def load_bit_rates(store: str | Path, cells: Any = None, *, epoch: str = "last") -> pd.DataFrame:
    """Per-bit activation rates of trusted runs: columns run_id, epoch, bit, rate.

    Args:
        store: the store folder.
        cells: expected cells as for `load_store` (None: every run).
        epoch: "last" (each run's last epoch) or "all".
    """
    store = Path(store)
    records = [
        read_cell(store_format.run_dir(store, c["run_id"]), c["run_id"], c["factors"])
        for c in _expected_cells(store, cells)
    ]
    return bit_rates_table(records, last_only=(epoch == "last"))


def _read_json(path: Path, corrupt: list[str]) -> Any:
    content, problem = store_format.read_json_checked(path)
    if problem is not None:
        corrupt.append(problem)
    return content


def _read_epochs(path: Path, corrupt: list[str]) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        entries = store_format.read_jsonl(path)
    except (OSError, ValueError) as exc:
        corrupt.append(f"{path.name} does not parse ({type(exc).__name__})")
        return []
    records: list[dict[str, Any]] = []
    for number, record in enumerate(entries, 1):
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            corrupt.append(f"{path.name} line {number} has no valid epoch")
            return []
        if records and epoch <= records[-1]["epoch"]:
            corrupt.append(f"{path.name} epochs out of order at line {number}")
            return []
        records.append(record)
    return records


def _expected_cells(store: Path, cells: Any) -> list[dict[str, Any]]:
    expected = normalize_cells(cells)
    if expected is None:
        runs = store_format.runs_root(store)
        names = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        expected = [{"run_id": n, "factors": {}, "config": None} for n in names]
    return expected


def _axes_from_cells(cells: list[dict[str, Any]]) -> list[str]:
    axes: list[str] = []
    for cell in cells:
        for key in cell["factors"]:
            if key not in axes:
                axes.append(key)
    return axes or ["estimator", "seed"]


def _one_line(text: Any) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
