"""`ste-ablate gradcheck` results (STORE/runs/<run id>/gradcheck.json) as one long table.

Columns: run_id, run_estimator (the estimator the run trained with), seed, epoch, probe,
estimator (the estimator evaluated on the run's weights), metric, value. `flip_corr`, a property
of the model rather than the estimator, is repeated on every estimator's rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from runners.store import format as store_format

COLUMNS = ("run_id", "run_estimator", "seed", "epoch", "probe", "estimator", "metric", "value")
_DTYPES = {
    "run_id": "str",
    "run_estimator": "str",
    "seed": "Int64",
    "epoch": "Int64",
    "probe": "Int64",
    "estimator": "str",
    "metric": "str",
    "value": "float64",
}


def gradcheck_table(docs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The long table of gradcheck documents (malformed documents and entries are skipped)."""
    rows = []
    for doc in docs:
        if doc_problem(doc) is not None:
            continue
        head = [doc.get(k) for k in ("run_id", "run_estimator", "seed", "epoch", "probe")]
        for entry in doc["estimators"]:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("estimator"), str):
                continue
            values = {"flip_corr": doc.get("flip_corr"), **entry}
            for metric, value in values.items():
                if metric == "estimator" or not isinstance(metric, str):
                    continue
                rows.append((*head, entry["estimator"], metric, _number(value)))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(_DTYPES)


def doc_problem(doc: Any, run_id: str | None = None) -> str | None:
    """Why a gradcheck.json document cannot be read (None: it can): its head fields typed, its
    estimators a list, and (given `run_id`) the run it names the folder's own."""
    if not isinstance(doc, Mapping):
        return "not an object"
    if run_id is not None and doc.get("run_id") != run_id:
        return "it names another run"
    for key in ("run_id", "run_estimator"):
        if not isinstance(doc.get(key), str):
            return f"its {key} is not text"
    for key in ("seed", "epoch", "probe"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            return f"its {key} is not a non-negative integer"
    if not isinstance(doc.get("estimators"), list):
        return "its estimators is not a list"
    return None


def stale(doc: Mapping[str, Any], folder: Path) -> bool:
    """Whether the document was computed on other weights than the folder's checkpoint.pt
    (documents that do not record their checkpoint's sha256 are taken as they are)."""
    digest = doc.get("checkpoint_sha256")
    if digest is None:
        return False
    checkpoint = Path(folder) / store_format.CHECKPOINT
    return not checkpoint.is_file() or store_format.sha256_file(checkpoint) != digest


def read_gradchecks(run_dirs: Mapping[str, Path]) -> pd.DataFrame | None:
    """The gradcheck.json files of these run folders (None when none has a readable one).

    A file that does not parse, is malformed (`doc_problem`), names another run, or was
    computed on other weights than the folder's checkpoint (`stale`) is skipped.
    """
    docs = []
    for run_id, folder in run_dirs.items():
        path = Path(folder) / store_format.GRADCHECK
        if not path.is_file():
            continue
        doc, problem = store_format.read_json_checked(path)
        if problem is None and doc_problem(doc, run_id) is None and not stale(doc, folder):
            docs.append(doc)
    return gradcheck_table(docs) if docs else None


def read_gradcheck_exacts(run_dirs: Mapping[str, Path]) -> list[dict[str, Any]] | None:
    """The gradcheck_exact.json documents of these run folders (None when none parses)."""
    docs = []
    for folder in run_dirs.values():
        path = Path(folder) / store_format.GRADCHECK_EXACT
        if not path.is_file():
            continue
        doc, problem = store_format.read_json_checked(path)
        if problem is None and isinstance(doc, dict) and isinstance(doc.get("estimators"), list):
            docs.append(doc)
    return docs or None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan
