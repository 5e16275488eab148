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
    """The long table of gradcheck documents (rows of malformed entries are skipped)."""
    rows = []
    for doc in docs:
        head = [doc.get(k) for k in ("run_id", "run_estimator", "seed", "epoch", "probe")]
        for entry in doc.get("estimators") or []:
            if not isinstance(entry, Mapping) or "estimator" not in entry:
                continue
            values = {"flip_corr": doc.get("flip_corr"), **entry}
            for metric, value in values.items():
                if metric == "estimator":
                    continue
                number = value if isinstance(value, int | float) else math.nan
                rows.append((*head, entry["estimator"], metric, float(number)))
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(_DTYPES)


def read_gradchecks(run_dirs: Mapping[str, Path]) -> pd.DataFrame | None:
    """The gradcheck.json files of these run folders (None when none has one or parses)."""
    docs = []
    for folder in run_dirs.values():
        path = Path(folder) / store_format.GRADCHECK
        if not path.is_file():
            continue
        doc, problem = store_format.read_json_checked(path)
        if problem is None and isinstance(doc, dict):
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
