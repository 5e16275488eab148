"""What a snapshot must prove before it is read: every file its metadata vouches for, by content.

A snapshot is its table, the table's metadata (`<table>.meta.json`, written last) and, when there
were any, the per-bit rates and the gradcheck results beside it. The metadata records the sha256
of each; `verify_snapshot` checks each file against the sha256 of its role (table, bits,
gradcheck), not of its current name, so renaming a set of files together still checks them, and
a file the metadata does not list is refused rather than read. The column dtypes the metadata
declares are checked too (a declared `int8` would silently round every MSE). A table without
metadata (cut short by a kill or a full disk, or not a snapshot at all) is refused; the CLI's
`--unverified` reads one anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.sources.tidy import StoreError

# The dtypes a snapshot writes (pandas names); `value` is always float64.
DTYPES = frozenset({"str", "object", "string", "boolean", "bool", "Int64", "int64", "float64"})
FLOAT_COLUMNS = ("value", "rate")
ROLES = ("bits", "gradcheck")


def verify_snapshot(
    path: Path, meta: Mapping[str, Any], table: bytes, parts: Mapping[str, bytes]
) -> None:
    """Check a snapshot's files against its metadata.

    Args:
        path: the table file.
        meta: its metadata ({} when there is none).
        table: the table file's bytes.
        parts: the bytes of the files beside it, by role ("bits", "gradcheck").

    Raises:
        StoreError: no metadata, a file differs from its sha256, a file is missing or not listed,
            or a declared dtype is not one a snapshot writes.
    """
    if not meta:
        raise StoreError(
            f"snapshot {path} has no metadata file ({path.name}.meta.json, written last): it was "
            "cut short or is not a snapshot; --unverified reads it anyway"
        )
    digests = roles(meta.get("files"))
    if digests is None:
        raise StoreError(f"the metadata of {path} lists no table and its sha256")
    if _sha(table) != digests["table"]:
        raise StoreError(f"snapshot {path} does not match the sha256 in its metadata")
    for role in ROLES:
        listed, content = digests.get(role), parts.get(role)
        if listed is None and content is not None:
            raise StoreError(f"the {role} file beside {path} is not listed in its metadata")
        if listed is not None and content is None:
            raise StoreError(f"the {role} file of snapshot {path} is missing")
        if listed is not None and _sha(content) != listed:
            raise StoreError(f"the {role} file of snapshot {path} does not match its sha256")
    problem = meta_problem(meta)
    if problem is not None:
        raise StoreError(f"the metadata of {path}: {problem}")


def meta_problem(meta: Mapping[str, Any]) -> str | None:
    """Why a snapshot's metadata cannot be used as a snapshot's (None: it can): the spec, axes,
    column dtypes and cell report have the shapes `write_snapshot` gives them."""
    spec = meta.get("spec")
    if spec is not None and not isinstance(spec, Mapping):
        return "spec is not an object"
    for key in ("name", "sha256", "path"):
        if (spec or {}).get(key) is not None and not isinstance(spec[key], str):
            return f"spec.{key} is not text"
    axes = meta.get("axes")
    if axes is not None and not (isinstance(axes, list) and all(isinstance(a, str) for a in axes)):
        return "axes is not a list of column names"
    problem = dtypes_problem(meta.get("dtypes"))
    cells = meta.get("cells")
    if problem is None and cells is not None:
        if not isinstance(cells, Mapping):
            return "cells is not an object"
        columns, rows = cells.get("columns"), cells.get("rows")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            return "cells.columns is not a list of column names"
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and len(r) == len(columns) for r in rows
        ):
            return "cells.rows is not a list of rows of its columns"
        problem = dtypes_problem(cells.get("dtypes"))
    return problem


def roles(files: Any) -> dict[str, str] | None:
    """The sha256 of each file by role ("table", "bits", "gradcheck") from the metadata's
    `files` ({name: sha256}, names as written); None when no entry is the table of the others."""
    if not isinstance(files, Mapping) or not files:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    for name in files:
        stem, suffix = Path(name).stem, Path(name).suffix
        beside = {f"{stem}.{role}{suffix}": role for role in ROLES}
        if all(other == name or other in beside for other in files):
            found = {"table": files[name]}
            found.update({beside[other]: files[other] for other in files if other != name})
            return found
    return None


def dtypes_problem(dtypes: Any) -> str | None:
    """Why the declared column dtypes are not a snapshot's (None: they are, or none declared)."""
    if dtypes is None:
        return None
    if not isinstance(dtypes, Mapping):
        return "dtypes is not an object"
    for column, dtype in dtypes.items():
        if not isinstance(dtype, str) or dtype not in DTYPES:
            return f"column {str(column)[:40]!r} has dtype {str(dtype)[:40]!r}, not one of {sorted(DTYPES)}"
        if column in FLOAT_COLUMNS and dtype != "float64":
            return f"column {column!r} must be float64, not {dtype!r}"
    return None


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
