"""What summary.json and metrics.jsonl must say, in types and against each other.

A sha256 proves that a file is the one summary.json lists; these checks prove that the summary
and the epoch records it vouches for make sense: every value has its type (a bool is not a
number, an integer fits 64 bits), a final status lists the files such a run writes, each listed
name is a file of the run folder (never a path), and the summary's metrics are the last epoch
record's. Standard library only, like `runners.store.format`, which applies them on every read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The files a run folder may list in summary.json (the store format's names).
RUN_FILES = frozenset(
    {"config.json", "metrics.jsonl", "steps.jsonl", "reconstruction.png", "checkpoint.pt"}
)
# What a run of each final status has written (a completed run also its figure).
FINAL_FILES = {
    "completed": ("config.json", "metrics.jsonl", "steps.jsonl", "reconstruction.png"),
    "diverged": ("config.json", "metrics.jsonl", "steps.jsonl"),
}
# Summary metrics that repeat the last epoch record's (diverged runs: null).
LAST_EPOCH_KEYS = ("test_mse", "test_psnr", "bit_entropy", "dead_bits")
_NUMBER_KEYS = (*LAST_EPOCH_KEYS, "probe_accuracy", "wall_time_s", "images_per_s")
INT_LIMIT = 2**63  # integers beyond int64 are no measurement of a run


def is_number(value: Any) -> bool:
    """An int (not a bool) within int64, or a float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT_LIMIT < value < INT_LIMIT
    return isinstance(value, float)


def summary_problem(summary: Mapping[str, Any]) -> str | None:
    """The first value of a summary.json (with every key present) of the wrong type."""
    epochs = summary.get("epochs_done")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 <= epochs < INT_LIMIT:
        return "summary.json's epochs_done is not a non-negative integer"
    for key in _NUMBER_KEYS:
        value = summary.get(key)
        if value is not None and not is_number(value):
            return f"summary.json's {key} is not a number"
    if summary.get("error") is not None and not isinstance(summary.get("error"), str):
        return "summary.json's error is not text"
    if not isinstance(summary.get("spans_machines", False), bool):
        return "summary.json's spans_machines is not true or false"
    files = summary.get("files")
    if not isinstance(files, Mapping):
        return "summary.json's files is not an object"
    for name, digest in files.items():
        if name not in RUN_FILES:
            return f"summary.json lists {name[:80]!r}, which is not a file of a run"
        if not isinstance(digest, str):
            return f"summary.json's sha256 of {name} is not text"
    return None


def final_files_problem(summary: Mapping[str, Any]) -> str | None:
    """A final summary must list what a run of its status has written (a "diverged" summary
    with no files on a folder of a completed run would end that cell for good)."""
    files, status = summary.get("files"), summary.get("status")
    for name in FINAL_FILES.get(status, ()) if isinstance(status, str) else ():
        if not isinstance(files, Mapping) or name not in files:
            return f"a {summary['status']} run must list {name}"
    return None


def records_problem(records: Sequence[Any], summary: Mapping[str, Any], planned: Any) -> str | None:
    """What metrics.jsonl's `records` say against the summary that lists them and the config's
    `planned` epochs: epochs 1..n in order, at most `planned` (all of them when completed),
    `epochs_done` = n, numeric values typed, and the summary's metrics = the last record's."""
    epochs = [r.get("epoch") if isinstance(r, dict) else None for r in records]
    if epochs != list(range(1, len(epochs) + 1)):
        return "metrics.jsonl does not hold epochs 1, 2, ... in order"
    status = summary.get("status")
    if isinstance(planned, bool) or not isinstance(planned, int):
        return "config.json's epochs is not an integer"
    if len(epochs) > planned or (status == "completed" and len(epochs) != planned):
        return f"metrics.jsonl holds {len(epochs)} epochs of a {planned}-epoch run"
    if summary.get("epochs_done") != len(epochs):
        return (
            f"summary.json counts {summary.get('epochs_done')} epochs, metrics.jsonl {len(epochs)}"
        )
    for record in records:
        problem = record_problem(record)
        if problem is not None:
            return f"metrics.jsonl {problem}"
    last = records[-1] if records else {}
    for key in LAST_EPOCH_KEYS + (("probe_accuracy",) if status == "completed" else ()):
        if status != "completed" and summary.get(key) is None:
            continue  # not measured: a diverged run's, or a failure recorded outside the loop
        if not _same(summary.get(key), last.get(key)):
            return f"summary.json's {key} differs from the last epoch's in metrics.jsonl"
    return None


def record_problem(record: Mapping[str, Any]) -> str | None:
    """Why an epoch record's values are not a record's (None: they are): numbers typed,
    within int64, lists of numbers, text or null."""
    for key, value in record.items():
        if not _record_value(value):
            return f"epoch {record.get('epoch')}'s {str(key)[:40]} is not a number"
    return None


def _record_value(value: Any) -> bool:
    if value is None or isinstance(value, str) or is_number(value):
        return True
    if isinstance(value, list):
        return all(v is None or is_number(v) for v in value)
    return False


def _same(a: Any, b: Any) -> bool:
    if is_number(a) and is_number(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a is None and b is None
