"""The record of a spec's SLURM submissions, and SLURM's view of their tasks.

STORE/slurm/<spec>.json (written atomically, under an fcntl lock so that two submissions at once
keep both) lists each submission: array id, time, log folder, options, and the array task of each
cell. `slurm_states` maps each submitted cell to its latest task's state from squeue (live tasks)
and sacct (ended ones).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runners.store.format import atomic_write_json, read_json

# Job states in which a task may still run (squeue/sacct names).
LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
     "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
)  # fmt: skip


def record_path(store: str | os.PathLike[str], spec_name: str) -> Path:
    """STORE/slurm/<spec>.json: the submissions of a spec."""
    return Path(store) / "slurm" / f"{spec_name}.json"


@contextmanager
def _record_lock(store: Path, spec_name: str) -> Iterator[None]:
    path = record_path(store, spec_name).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:  # two submissions at once must not lose one another
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def read_record(store: str | os.PathLike[str], spec_name: str) -> dict[str, Any]:
    """The spec's submission record ({"spec", "submissions": [...]}; empty when none)."""
    try:
        record = read_json(record_path(store, spec_name))
    except (OSError, ValueError):
        return {"spec": spec_name, "submissions": []}
    if not isinstance(record, dict) or not isinstance(record.get("submissions"), list):
        return {"spec": spec_name, "submissions": []}
    return record


def record_submission(
    store: Path,
    spec_name: str,
    array_id: str,
    task_ids: dict[str, str],
    options: dict[str, Any],
    logs: Path,
) -> None:
    """Append one submission (cells: run_id -> array task) to the spec's record."""
    with _record_lock(store, spec_name):
        record = read_record(store, spec_name)
        now = datetime.datetime.now(datetime.timezone.utc)
        record["submissions"].append(
            {
                "array_id": array_id,
                "submitted_utc": now.isoformat(timespec="seconds"),
                "log_folder": str(logs),
                "options": options,
                "cells": task_ids,
            }
        )
        atomic_write_json(record_path(store, spec_name), record)


def latest_tasks(store: str | os.PathLike[str], spec_name: str) -> dict[str, str]:
    """run_id -> the array task ("<array>_<index>") of its latest submission."""
    latest: dict[str, str] = {}
    for submission in read_record(store, spec_name)["submissions"]:
        latest.update(submission.get("cells") or {})
    return latest


def task_log_folders(store: str | os.PathLike[str], spec_name: str) -> dict[str, str]:
    """array task ("<array>_<index>") -> the log folder of the submission that made it."""
    return {
        task: submission.get("log_folder")
        for submission in read_record(store, spec_name)["submissions"]
        for task in (submission.get("cells") or {}).values()
    }


# ----------------------------------------------------------------------------- states


def slurm_states(store: str | os.PathLike[str], spec: Any) -> dict[str, str]:
    """SLURM's state of each submitted cell of a spec (run_id -> e.g. "RUNNING", "COMPLETED").

    Args:
        store: the run store.
        spec: a `runners.grids.spec.Spec` or a spec name.

    Returns:
        One entry per cell ever submitted (its latest submission); "UNKNOWN" when neither squeue
        nor sacct knows the task. Empty when the spec was never submitted to SLURM.
    """
    name = getattr(spec, "name", spec)
    latest = latest_tasks(store, name)
    if not latest:
        return {}
    states = query_states(sorted({task.split("_")[0] for task in latest.values()}))
    return {run_id: states.get(task, "UNKNOWN") for run_id, task in latest.items()}


def query_states(job_ids: Iterable[str]) -> dict[str, str]:
    """State of every array task of the given jobs: squeue for live tasks, sacct for ended ones."""
    ids = ",".join(job_ids)
    if not ids:
        return {}
    states: dict[str, str] = {}
    for line in _query(["sacct", "-n", "-X", "-P", "-j", ids, "-o", "JobID,State"]):
        job, _, state = line.partition("|")
        if "[" not in job and state:  # "12_[3-5]" rows are pending tasks; squeue lists them
            states[job] = state.split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    for line in _query(["squeue", "-h", "-r", "-j", ids, "-o", "%i|%T"]):
        job, _, state = line.partition("|")
        if state:
            states[job] = state.strip()
    return states


def _query(command: list[str]) -> list[str]:
    if shutil.which(command[0]) is None:
        return []
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # squeue fails for ids SLURM has forgotten; sacct fails without accounting: no states then.
    return out.stdout.splitlines() if out.returncode == 0 else []
