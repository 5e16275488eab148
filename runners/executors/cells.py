"""The unit of work of every executor: one grid cell, config in, summary out.

`execute_cell(CellTask)` is a plain module-level function of a picklable dataclass, so the
in-process loop, the local process pool and SLURM array tasks all run exactly the same thing.
It takes the cell's lock (leaving cells another process holds), skips cells already final,
resumes unfinished ones from their checkpoint (`train_run` does that), starts the cell's tracker,
and turns any exception into a `failed` summary: it never raises to the executor, except for an
interruption (KeyboardInterrupt), which the executor handles.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runners.config import RunConfig
from runners.store import format as run_store
from runners.store.format import atomic_write_json, read_jsonl
from runners.store.lock import cell_lock
from runners.tracking.wandb_tracker import (
    NullTracker,
    Tracker,
    WandbOptions,
    display_name,
    make_tracker,
)

# Set in pool workers by the executor: the device (one GPU per worker).
_WORKER_DEVICE: str | None = None


@dataclass(frozen=True)
class CellTask:
    """Everything one cell needs, picklable.

    Attributes:
        config: the cell's resolved config.
        store: the run store's root folder (on storage every worker sees).
        spec_name: the spec the cell belongs to (W&B group), None for a lone run.
        factors: the spec's axis values for this cell (W&B config and run name).
        wandb: how to report to W&B (mode already resolved).
        progress: per-epoch progress bar inside the cell (None = on a terminal only).
    """

    config: RunConfig
    store: str
    spec_name: str | None = None
    factors: dict[str, Any] = field(default_factory=dict, hash=False)
    wandb: WandbOptions = field(default_factory=WandbOptions)
    progress: bool | None = False

    @property
    def run_id(self) -> str:
        """The cell's id (its config's run id)."""
        return self.config.run_id


def set_worker_resources(device: str | None, threads: int | None) -> None:
    """Pin this process's cells to a device and set its torch thread count (pool workers).

    The thread count is the process's, not a config value: a cell whose config leaves
    `num_threads` unset starts with it, but resumes with the count it started with (results on
    the CPU depend on it; see `runners.training.run.keep_thread_count`).
    """
    global _WORKER_DEVICE
    _WORKER_DEVICE = device
    if threads:
        import torch

        torch.set_num_threads(threads)


def execute_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell into the store and return its summary (as summary.json).

    Returns without training when the cell is already completed or diverged. When another
    process holds the cell's lock the cell is left alone and the returned summary has status
    ``running``. A failing cell returns a ``failed`` summary (also written to the store); a
    diverging one ``diverged``.

    Raises:
        KeyboardInterrupt: only when a signal arrives outside `train_run`'s own handling.
    """
    try:
        return _execute(task)
    except Exception as exc:  # e.g. an unwritable store: report it as this cell's failure
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _placeholder(task.run_id, "failed", error)


def _execute(task: CellTask) -> dict[str, Any]:
    config = _with_worker_resources(task.config)
    folder = run_store.run_dir(task.store, config.run_id)
    info = run_store.cell_info(folder)
    if info.state in run_store.FINAL_STATES:
        return dict(info.summary or {})
    if info.state == "running":
        return _placeholder(config.run_id, "running", "locked by another process")
    with cell_lock(folder) as lock:
        if lock is None:
            return _placeholder(config.run_id, "running", "locked by another process")
        info = run_store.cell_info(folder)  # another process may have finished it meanwhile
        if info.state in run_store.FINAL_STATES:
            return dict(info.summary or {})
        return _train(task, config, folder)


def _train(task: CellTask, config: RunConfig, folder: Path) -> dict[str, Any]:
    from runners.training.run import train_run

    tracker = _tracker(task, config)
    started = time.perf_counter()
    summary: dict[str, Any] | None = None
    try:
        summary = train_run(config, task.store, tracker=tracker, progress=task.progress)
    except KeyboardInterrupt:
        summary = _interrupted_summary(config.run_id, folder)
        raise
    except Exception as exc:  # the cell failed; the grid goes on
        summary = _record_failure(config.run_id, folder, exc, time.perf_counter() - started)
    finally:
        if summary is not None:
            # train_run normally closes the tracker itself; finishing twice is a no-op.
            _safe_finish(tracker, summary)
    return summary


def _tracker(task: CellTask, config: RunConfig) -> Tracker:
    opts = task.wandb
    if opts.mode == "disabled":
        return NullTracker()
    directory = opts.directory
    if directory is None and not os.environ.get("WANDB_DIR"):
        directory = task.store  # W&B's files then sit in STORE/wandb/, next to the runs
    return make_tracker(
        opts.mode,
        project=opts.project,
        entity=opts.entity,
        group=opts.group or task.spec_name,
        job_type=config.estimator,
        name=display_name(config.estimator, config.seed, task.factors),
        tags=opts.tags,
        directory=directory,
        extra_config={"spec": task.spec_name, "factors": dict(task.factors)},
        init_timeout=opts.init_timeout,
    )


def _with_worker_resources(config: RunConfig) -> RunConfig:
    # The device is an execution field, not an identity field: the run id is unchanged.
    if _WORKER_DEVICE is not None and config.device == "auto":
        return replace(config, device=_WORKER_DEVICE)
    return config


def _placeholder(run_id: str, status: str, error: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = {key: None for key in run_store.SUMMARY_KEYS}
    summary.update(run_id=run_id, status=status, epochs_done=0, error=error, files={})
    return summary


def _epochs_done(folder: Path) -> int:
    try:
        return len(read_jsonl(folder / run_store.METRICS))
    except (OSError, ValueError):
        return 0


def _interrupted_summary(run_id: str, folder: Path) -> dict[str, Any]:
    summary = _placeholder(run_id, "interrupted", "interrupted")
    summary["epochs_done"] = _epochs_done(folder)
    return summary


def summary_after_interrupt(task: CellTask) -> dict[str, Any]:
    """What a cell is after a KeyboardInterrupt escaped the unit it belonged to: its final
    summary when it had finished (or was already final), else an "interrupted" placeholder."""
    try:
        info = run_store.cell_info(run_store.run_dir(task.store, task.run_id))
        if info.state in run_store.FINAL_STATES and info.summary:
            return dict(info.summary)
    except Exception:  # an unreadable store: the placeholder says enough
        pass
    return _placeholder(task.run_id, "interrupted", "interrupted")


def _record_failure(run_id: str, folder: Path, exc: BaseException, wall: float) -> dict[str, Any]:
    """Write (unless train_run already did) and return a `failed` summary."""
    existing, _ = run_store.verify_summary(folder)
    if existing is not None and existing.get("status") == "failed":
        return existing
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    summary = _placeholder(run_id, "failed", error)
    summary["epochs_done"] = _epochs_done(folder)
    summary["wall_time_s"] = round(wall, 3)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        summary["files"] = run_store.file_hashes(folder)
        atomic_write_json(folder / run_store.SUMMARY, summary)
    except OSError as write_error:  # the store itself is broken: still report the failure
        summary["error"] = f"{error} (and the summary could not be written: {write_error})"
    return summary


def _safe_finish(tracker: Tracker, summary: dict[str, Any]) -> None:
    try:
        tracker.finish(summary)
    except Exception:  # a tracker must never turn a finished cell into a failure
        pass
