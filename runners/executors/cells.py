"""The unit of work of every executor: cells in, summaries out.

`execute_cells(tasks)` trains 1..K cells of a grid in one process, as one stack when there are
several (`runners.engine.train.train_runs`); `execute_cell(task)` is one cell. Both are
plain module-level functions of picklable dataclasses, so the in-process loop, the local process
pool and SLURM array tasks all run exactly the same thing. They leave cells another process
holds (status "running"), return final cells as they are, resume unfinished ones from their
checkpoint, start each cell's tracker, and turn any exception into a "failed" summary: they
never raise to the executor, except for an interruption (KeyboardInterrupt), which the
executor handles (`summary_after_interrupt`).
"""

from __future__ import annotations

import os
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.engine.claims import claim_cells
from runners.engine.train import train_runs
from runners.speed.stacking import stack_key
from runners.store import format as run_store
from runners.store.format import atomic_write_json, read_jsonl
from runners.tracking.tracker import SafeTracker, Tracker
from runners.tracking.wandb_tracker import (
    WandbOptions,
    condition_label,
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
    the CPU depend on it; see `runners.training.process.keep_thread_count`).
    """
    global _WORKER_DEVICE
    _WORKER_DEVICE = device
    if threads:
        torch.set_num_threads(threads)


def plan_stacks(tasks: Sequence[CellTask], stack: int) -> list[list[CellTask]]:
    """Group tasks into stacks of at most `stack` cells that may train together.

    Cells are grouped by `runners.speed.stacking.stack_key` (and W&B options and store), in the
    order they are given; a stack size of 1 gives one group per cell.
    """
    groups: dict[tuple[Any, ...], list[list[CellTask]]] = defaultdict(list)
    order: list[list[CellTask]] = []
    for task in tasks:
        key = (stack_key(task.config), repr(task.wandb), task.store)
        runs = groups[key]
        if not runs or len(runs[-1]) >= max(1, stack):
            runs.append([])
            order.append(runs[-1])
        runs[-1].append(task)
    return order


def execute_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell into the store and return its summary (as summary.json).

    See `execute_cells`.
    """
    return execute_cells([task])[0]


def execute_cells(tasks: Sequence[CellTask], mode: str | None = None) -> list[dict[str, Any]]:
    """Run cells of one store (as one stack when several: `plan_stacks`); their summaries.

    A cell already completed or diverged is returned as it is; one whose lock another process
    holds is left alone and gets a summary with status "running"; a failing cell returns a
    "failed" summary (also written to the store when possible). `mode`: "grouped" or "looped"
    for a stack (None: the device's default).

    Raises:
        KeyboardInterrupt: only when a signal arrives outside the training loop's own handling;
            every cell's tracker is finished as interrupted first.
    """
    tasks = [replace(task, config=_with_worker_resources(task.config)) for task in tasks]
    if len({task.store for task in tasks}) > 1:
        raise ValueError("the cells of one stack must share a store")
    results: dict[int, dict[str, Any]] = {}
    try:
        folders = [run_store.run_dir(task.store, task.run_id) for task in tasks]
        with claim_cells(folders) as claim:
            results.update({n: dict(summary) for n, summary in claim.final.items()})
            for n in claim.busy:
                results[n] = _placeholder(tasks[n].run_id, "running", "locked by another process")
            if claim.held:
                results.update(_train([tasks[n] for n in claim.held], claim.held, mode))
    except Exception as exc:  # e.g. an unwritable store: report it as these cells' failure
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        for n, task in enumerate(tasks):
            results.setdefault(n, _placeholder(task.run_id, "failed", error))
    return [results[n] for n in range(len(tasks))]


def cell_tracker(task: CellTask) -> Tracker:
    """The cell's tracker from its W&B options (W&B's files go into the store by default)."""
    opts = task.wandb
    if opts.directory is None and not os.environ.get("WANDB_DIR"):
        opts = replace(opts, directory=task.store)  # STORE/wandb/, next to the runs
    config = task.config
    return make_tracker(
        replace(opts, group=opts.group or task.spec_name),
        job_type=config.estimator,
        name=display_name(config.estimator, config.seed, task.factors),
        extra_config={
            "spec": task.spec_name,
            "factors": dict(task.factors),
            # Every grid axis is a top-level config key already (a RunConfig field); the
            # condition joins the non-seed ones into the one key the analysis compares by.
            "condition": condition_label(task.factors, config.estimator),
        },
    )


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


def _train(
    tasks: list[CellTask], positions: list[int], mode: str | None
) -> dict[int, dict[str, Any]]:
    """Train the held cells `tasks` (at `positions` of the caller's list); summaries by position."""
    trackers = [SafeTracker(cell_tracker(task)) for task in tasks]
    started = time.perf_counter()
    try:
        summaries = train_runs(
            [task.config for task in tasks],
            tasks[0].store,
            trackers=trackers,
            progress=tasks[0].progress,
            mode=mode,
        )
    except KeyboardInterrupt:
        for task, tracker in zip(tasks, trackers, strict=True):
            folder = run_store.run_dir(task.store, task.run_id)
            tracker.finish(_interrupted_summary(task.run_id, folder))
        raise
    except Exception as exc:  # e.g. missing data: every cell of the stack failed
        wall = time.perf_counter() - started
        summaries = []
        for task, tracker in zip(tasks, trackers, strict=True):
            folder = run_store.run_dir(task.store, task.run_id)
            summaries.append(_record_failure(task.run_id, folder, exc, wall))
            tracker.finish(summaries[-1])
    return dict(zip(positions, summaries, strict=True))


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
