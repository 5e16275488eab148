"""Where cells run locally: in this process, one after another, or in a pool of processes.

The unit of work is a stack of cells (`runners.executors.cells.plan_stacks`): with `stack=1`
each unit is one cell and runs through `runners.executors.cells.execute_cell`, the unit of work
SLURM array tasks run too; larger stacks run through `runners.executors.cells.execute_cells` (K
cells trained together in one process, each with its own store entry and W&B run: a speed
setting only). `InProcessExecutor` runs here; `runners.executors.pool.PoolExecutor` in spawned
processes; `run_cells` picks one from a number of workers.

Signals (`runners.executors.signals`): SIGINT or SIGTERM stops the grid; the cell in training
checkpoints and is recorded as interrupted; no new cell starts.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from runners.executors.base import GridOutcome, LocalExecutor
from runners.executors.cells import CellTask, execute_cells, summary_after_interrupt
from runners.executors.display import CellDisplay, ProgressOptions
from runners.executors.pool import PoolExecutor
from runners.executors.signals import catch_signals
from runners.training.stop import take_stop_signal


@dataclass(frozen=True, kw_only=True)
class InProcessExecutor(LocalExecutor):
    """Run cells in this process, one stack after another (what tests and a laptop use); a
    signal stops the grid after the cell in training has checkpointed."""

    def _run(self, units: list[list[CellTask]], display: CellDisplay) -> GridOutcome:
        outcome = GridOutcome()
        queue = deque(units)
        take_stop_signal()  # only signals from here on stop this grid
        with catch_signals(raise_interrupt=True) as caught:
            while queue and caught.signum is None:
                unit = queue.popleft()
                for task in unit:
                    display.start(task)
                try:
                    summaries = execute_cells(unit, self.stack_mode)
                except KeyboardInterrupt:
                    # The signal arrived outside train_run's own handling (e.g. while W&B
                    # started): the cells' last checkpoints stay, their state reads as
                    # interrupted or missing.
                    summaries = [summary_after_interrupt(task) for task in unit]
                    caught.signum = caught.signum or signal.SIGINT
                # A signal after a cell's last training step let the cell complete; it still
                # stops the grid.
                caught.signum = caught.signum or take_stop_signal()
                signum = self._record(outcome, display, unit, summaries)
                caught.signum = caught.signum or signum
        self._stop(outcome, caught.signum, queue)
        return outcome


def gpu_devices(device: str) -> list[str]:
    """The CUDA devices cells may be spread over: all visible GPUs for "auto"/"cuda", else none."""
    if device not in ("auto", "cuda"):
        return []
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install means: no GPUs to spread over
        count = 0
    return [f"cuda:{i}" for i in range(count)]


def plan_workers(workers: int | None, device: str) -> tuple[int, list[str]]:
    """Number of worker processes and the device of each.

    Args:
        workers: requested workers; None = automatic: one per GPU when there are several,
            otherwise 1 (sequential, in this process).
        device: the cells' device setting ("auto", "cpu", "cuda", "cuda:N").

    Returns:
        (workers, devices): devices is empty (each cell uses its own setting) or one per worker,
        round-robin over the GPUs.
    """
    gpus = gpu_devices(device)
    if workers is None:
        workers = len(gpus) if len(gpus) > 1 else 1
    if workers > 1 and len(gpus) > 1:
        return workers, [gpus[i % len(gpus)] for i in range(workers)]
    return workers, []


def local_executor(
    workers: int = 1,
    devices: Sequence[str] = (),
    *,
    stack: int = 1,
    stack_mode: str | None = None,
    progress: ProgressOptions | None = None,
) -> InProcessExecutor | PoolExecutor:
    """This process for one worker, else a pool of `workers` processes on `devices`."""
    progress = progress or ProgressOptions()
    if workers <= 1:
        return InProcessExecutor(stack=stack, stack_mode=stack_mode, progress=progress)
    return PoolExecutor(
        workers, tuple(devices), stack=stack, stack_mode=stack_mode, progress=progress
    )


def run_cells(
    tasks: list[CellTask],
    *,
    workers: int = 1,
    devices: list[str] | None = None,
    total: int | None = None,
    done_before: int = 0,
    show_progress: bool | None = None,
    stack: int = 1,
    stack_mode: str | None = None,
) -> GridOutcome:
    """Run cells locally and collect their summaries; never raises for a failing cell.

    Args:
        tasks: the cells to run, in order.
        workers: 1 runs them here, one after another; N > 1 in N spawned processes.
        devices: one device per worker (pool only), e.g. ["cuda:0", "cuda:1"].
        total: cells in the whole grid, for the progress bar (default: len(tasks)).
        done_before: cells of the grid already final before this call.
        show_progress: draw the bar (None = only when stderr is a terminal).
        stack: train up to this many compatible cells together; 1 = one cell at a time.
        stack_mode: "grouped" or "looped" stacks (None: the device's default).
    """
    progress = ProgressOptions(total=total, done_before=done_before, show=show_progress)
    executor = local_executor(
        workers, devices or (), stack=stack, stack_mode=stack_mode, progress=progress
    )
    return executor.run(tasks)
