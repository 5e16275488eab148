"""Result snapshots: the tidy table frozen in one file, readable without the run store.

`write_snapshot(data, out)` writes the table as CSV (or Parquet when `out` ends in .parquet and
pyarrow is importable), the last epoch's per-bit rates beside it (`<stem>.bits.csv|parquet`), and
a sidecar `<out>.meta.json`: format version, spec name and sha256, the grid axes, column dtypes
(so that a CSV reads back with the same types), the per-cell report (statuses and issues), the
table's own sha256 and the package versions. `read_snapshot(path)` returns the same `StudyData`
that `analysis.sources.store.scan_store` returns, minus the run folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.sources.snapshot_checks import meta_problem, verify_snapshot
from analysis.sources.tidy import StoreError, StudyData, cells_from_table, coerce
from runners.store.format import atomic_write_bytes, atomic_write_json, read_json

FORMAT = "ste-ablations snapshot"
VERSION = 1
_PACKAGES = ("ste-ablations", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "torch", "wandb")


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape the numbers (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def meta_path(path: str | Path) -> Path:
    """The sidecar metadata file of a snapshot."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def bits_path(path: str | Path) -> Path:
    """The per-bit rates file that goes with a snapshot."""
    path = Path(path)
    return path.with_name(f"{path.stem}.bits{path.suffix}")


def gradcheck_path(path: str | Path) -> Path:
    """The `ste-ablate gradcheck` results file that goes with a snapshot."""
    path = Path(path)
    return path.with_name(f"{path.stem}.gradcheck{path.suffix}")


def _encode(frame: pd.DataFrame, suffix: str) -> bytes:
    if suffix == ".parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def write_snapshot(
    data: StudyData,
    out: str | Path,
    *,
    spec_name: str | None = None,
    spec_sha256: str | None = None,
    spec_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a snapshot (table, bits, gradcheck results, metadata) atomically; returns the files
    written.

    Raises:
        StoreError: the suffix is neither .csv nor .parquet, or Parquet without pyarrow.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise StoreError(f"snapshot file must end in .csv or .parquet, not {out.name!r}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401 - optional: pandas needs it to write Parquet
        except ImportError:
            raise StoreError("writing Parquet needs pyarrow; use a .csv file instead") from None
    table_bytes = _encode(data.table, suffix)
    written = [out]
    files = {out.name: hashlib.sha256(table_bytes).hexdigest()}
    bits_bytes = None
    if data.bits is not None and not data.bits.empty:
        bits_bytes = _encode(data.bits, suffix)
        files[bits_path(out).name] = hashlib.sha256(bits_bytes).hexdigest()
    gradcheck_bytes = None
    if data.gradcheck is not None and not data.gradcheck.empty:
        gradcheck_bytes = _encode(data.gradcheck, suffix)
        files[gradcheck_path(out).name] = hashlib.sha256(gradcheck_bytes).hexdigest()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": {"name": spec_name, "sha256": spec_sha256, "path": spec_path},
        "source": data.source,
        "axes": list(data.axes),
        "dtypes": {c: str(t) for c, t in data.table.dtypes.items()},
        "rows": int(len(data.table)),
        "files": files,
        "cells": {
            "columns": list(data.cells.columns),
            "dtypes": {c: str(t) for c, t in data.cells.dtypes.items()},
            "rows": json.loads(data.cells.to_json(orient="values")),
        },
        "versions": package_versions(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(extra or {}),
    }
    atomic_write_bytes(out, table_bytes)
    if bits_bytes is not None:
        atomic_write_bytes(bits_path(out), bits_bytes)
        written.append(bits_path(out))
    if gradcheck_bytes is not None:
        atomic_write_bytes(gradcheck_path(out), gradcheck_bytes)
        written.append(gradcheck_path(out))
    # A bits or gradcheck file of an earlier snapshot here is not this one's: the reader would
    # refuse it as unlisted.
    for part, content in ((bits_path(out), bits_bytes), (gradcheck_path(out), gradcheck_bytes)):
        if content is None:
            part.unlink(missing_ok=True)
    atomic_write_json(meta_path(out), meta)
    written.append(meta_path(out))
    return written


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar metadata of a snapshot ({} when there is none)."""
    meta_file = meta_path(path)
    if not meta_file.exists():
        return {}
    try:
        meta = read_json(meta_file)
    except (OSError, ValueError) as exc:
        raise StoreError(f"snapshot metadata {meta_file} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{meta_file} is not a {FORMAT} metadata file")
    return meta


def read_snapshot(path: str | Path, *, verify: bool = True) -> StudyData:
    """Read a snapshot written by `write_snapshot` (or, unverified, a bare tidy table).

    Args:
        path: the snapshot's table file.
        verify: check every file of the snapshot against its metadata
            (`analysis.sources.snapshot_checks.verify_snapshot`); False reads a snapshot without
            metadata, or whose files differ from it, as it is.

    Raises:
        StoreError: no such file, a check failed, or a file does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"snapshot {path} not found")
    meta = read_meta(path)
    raw = path.read_bytes()
    parts = {"bits": bits_path(path), "gradcheck": gradcheck_path(path)}
    contents = {role: p.read_bytes() for role, p in parts.items() if p.is_file()}
    if verify:
        verify_snapshot(path, meta, raw, contents)
    elif meta and (problem := meta_problem(meta)) is not None:
        raise StoreError(f"the metadata of {path}: {problem}")
    table = _decode(raw, path.suffix.lower(), meta.get("dtypes"))
    axes = meta.get("axes") or ["estimator", "seed"]
    if meta.get("cells"):
        spec_cells = meta["cells"]
        try:
            cells = pd.DataFrame(spec_cells["rows"], columns=spec_cells["columns"])
            cells = coerce(cells, spec_cells["dtypes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{meta_path(path)}: its cells do not parse: {exc}") from None
    else:
        cells = cells_from_table(table, axes)
    bits = _decode(contents["bits"], path.suffix.lower(), None) if "bits" in contents else None
    gradcheck = None
    if "gradcheck" in contents:
        gradcheck = _decode(contents["gradcheck"], path.suffix.lower(), None)
    spec = meta.get("spec") or {}
    return StudyData(
        table=table,
        cells=cells,
        axes=list(axes),
        bits=bits,
        gradcheck=gradcheck,
        source=f"snapshot {path.name}" + (f" of spec {spec['name']}" if spec.get("name") else ""),
    )


def _decode(raw: bytes, suffix: str, dtypes: dict[str, str] | None) -> pd.DataFrame:
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            # Strings are read as text first, so that "True" or "1" stay what the dtype says.
            frame = pd.read_csv(io.BytesIO(raw), dtype="str", keep_default_na=False)
            frame = frame.replace({"": None})
            if dtypes:
                frame = _typed(frame, dtypes)
            else:
                frame = _guess_types(frame)
    except ImportError:
        raise StoreError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    except (ValueError, TypeError, OSError, OverflowError) as exc:
        raise StoreError(f"snapshot table does not parse: {exc}") from None
    return frame


def _typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        dtype = dtypes.get(column, "str")
        values = out[column]
        if dtype == "boolean" or dtype == "bool":
            values = values.map({"True": True, "False": False, None: None}).astype("boolean")
        elif dtype.lower().startswith(("int", "float", "uint")):
            values = pd.to_numeric(values).astype(dtype)
        else:
            values = values.astype("str")
        out[column] = values
    return out


def _guess_types(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        converted = pd.to_numeric(out[column], errors="coerce")
        if converted.notna().sum() == out[column].notna().sum():
            out[column] = converted
    return out
