"""What runs inside one SLURM array task: a batch of cells, preemption, threads.

`CellBatch` is the callable submitit pickles for each array task. It runs its cells with
`runners.executors.cells.execute_cell` (the unit of work of every executor), one after another
(or, with `stack=K`, in stacks of up to K cells through `runners.executors.cells.execute_cells`),
with torch's thread count taken from SLURM_CPUS_PER_TASK (without CPU binding a task would
otherwise use every core of the node).

Preemption and time limits: SLURM sends SIGUSR2 before a task's time limit (submitit's
`--signal=USR2@...`) and on preemption. The cell in training then checkpoints after its current
step and is recorded interrupted; then submitit's own handler pickles the `CellBatch` again and
requeues the task (`submitit.helpers.Checkpointable`). The requeued task skips finished cells and
resumes the others from their checkpoint; W&B runs resume under the same id. `scancel` sends
SIGTERM: the cell checkpoints, is recorded interrupted and the task ends; a new `run` resubmits it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import submitit

from runners.executors.cells import (
    CellTask,
    execute_cells,
    plan_stacks,
    set_worker_resources,
    summary_after_interrupt,
)
from runners.training.stop import take_stop_signal


class CellBatch(submitit.helpers.Checkpointable):
    """One array task: run its cells one after another (picklable; requeued after preemption).

    Returns the cells' summaries. Raises RuntimeError when some cell failed, so that SLURM shows
    the task as FAILED (the store holds each cell's own `failed` summary).
    """

    def __init__(self, tasks: list[CellTask], stack: int = 1, mode: str | None = None) -> None:
        self.tasks = list(tasks)
        self.stack = stack
        self.mode = mode  # "grouped" / "looped" stacks; None: the device's default

    def __call__(self) -> list[dict[str, Any]]:
        set_worker_resources(None, task_threads())
        summaries = []
        take_stop_signal()  # only signals from here on end this task
        with _Preemption() as preemption:
            for unit in plan_stacks(self.tasks, self.stack):
                try:
                    done = execute_cells(unit, self.mode)
                except KeyboardInterrupt:  # a signal outside train_run's own handling
                    done = [summary_after_interrupt(t) for t in unit]
                for task, summary in zip(unit, done, strict=True):
                    summaries.append(summary)
                    _log(f"{summary.get('status')} {task.run_id}")
                if preemption.signum is not None:
                    preemption.requeue()  # checkpoint (this object) and requeue; does not return
                stopped = take_stop_signal() is not None  # also after a cell's last step
                if stopped or any(s.get("status") == "interrupted" for s in done):
                    break  # scancel (SIGTERM): the task is ending, leave the rest for a rerun
        failed = [s["run_id"] for s in summaries if s.get("status") == "failed"]
        if failed:
            errors = "; ".join(
                f"{s['run_id']}: {s.get('error')}" for s in summaries if s["run_id"] in failed
            )
            raise RuntimeError(f"{len(failed)} cell(s) failed: {errors}")
        return summaries


def task_threads() -> int | None:
    """Torch threads for this task: SLURM_CPUS_PER_TASK (None outside SLURM)."""
    try:
        value = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return None
    return value if value > 0 else None


class _Preemption:
    """Catch submitit's preemption/timeout signal (USR2) while cells run.

    submitit's own handler checkpoints and requeues at once, in the middle of a training step.
    Here the signal first asks the cell in training to stop (train_run turns SIGTERM into
    "checkpoint after this step, record interrupted"); once `execute_cell` has returned, `requeue`
    hands over to submitit's handler, which pickles `CellBatch` again and requeues the task.
    """

    def __init__(self) -> None:
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        self.sig = getattr(signal, f"SIG{name}", signal.SIGUSR2)
        self.signum: int | None = None
        self.previous: Any = None

    def __enter__(self) -> _Preemption:
        self.previous = signal.signal(self.sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(self.sig, self.previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        _log(f"caught {signal.Signals(signum).name}: checkpointing the cell, then requeueing")
        # During training SIGTERM's handler is train_run's "stop after this step".
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    def requeue(self) -> None:
        if callable(self.previous):
            self.previous(self.signum, None)  # submitit: checkpoint(), scontrol requeue, exit
        sys.exit(1)  # outside submitit (or no handler): end the task, a rerun resumes the cells


def _log(message: str) -> None:
    print(f"[ste-ablate slurm] {message}", file=sys.stderr, flush=True)
