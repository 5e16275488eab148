"""The local process-pool executor: stacks of cells in N spawned worker processes.

Workers are "spawn" processes (no forked torch/CUDA state); with several GPUs each worker owns
one device. Each worker sits in its own process group, so a terminal's Ctrl-C reaches only the
parent, which forwards it once to every worker (a second signal would mean "abort now" to
`train_run`); idle workers ignore signals, a training one checkpoints. Linux sends workers
SIGTERM when the parent dies (kill -9 of `ste-ablate run`).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from runners.executors.base import GridOutcome
from runners.executors.cells import (
    CellTask,
    execute_cells,
    plan_stacks,
    set_worker_resources,
    summary_after_interrupt,
)
from runners.executors.display import CellDisplay, ProgressOptions
from runners.executors.signals import STOP_SIGNALS, catch_signals, raise_interrupt, signal_of


def available_cpus() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PoolExecutor:
    """Run cells in `workers` spawned processes, each with an equal share of the CPU cores.

    Attributes:
        workers: worker processes.
        devices: one device per worker (e.g. ("cuda:0", "cuda:1")), or empty: each cell uses
            its own setting.
        stack: train up to this many compatible cells together (`runners.speed.stacking`).
        stack_mode: "grouped" or "looped" stacks (None: the device's default).
        progress: how progress is shown.
    """

    workers: int
    devices: tuple[str, ...] = ()
    stack: int = 1
    stack_mode: str | None = None
    progress: ProgressOptions = field(default_factory=ProgressOptions)

    def run(self, tasks: Sequence[CellTask]) -> GridOutcome:
        """Run the cells; a dead worker fails its cells and stops new ones from starting."""
        with CellDisplay(self.progress, len(tasks)) as display:
            return self._run(plan_stacks(list(tasks), self.stack), display)

    def _run(self, units: list[list[CellTask]], display: CellDisplay) -> GridOutcome:
        outcome = GridOutcome()
        queue = deque(units)
        context = multiprocessing.get_context("spawn")
        device_queue = context.Queue()
        for device in self.devices:
            device_queue.put(device)
        threads = max(1, available_cpus() // self.workers)
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(device_queue, bool(self.devices), threads),
        )
        running: dict[Future, list[CellTask]] = {}

        def forward(signum: int) -> None:
            # Workers ignore signals while idle and turn them into a checkpoint while training.
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signum)

        broken = False
        with catch_signals(raise_interrupt=False, on_signal=forward) as caught:
            try:
                while queue or running:
                    while (
                        queue
                        and len(running) < self.workers
                        and caught.signum is None
                        and not broken
                    ):
                        unit = queue.popleft()
                        running[pool.submit(_pool_execute, unit, self.stack_mode)] = unit
                        for task in unit:
                            display.start(task)
                    if not running:
                        break
                    done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        unit = running.pop(future)
                        for task, summary in zip(unit, _result(future, unit), strict=True):
                            error = summary.get("error") or ""
                            broken = broken or error.startswith("worker died")
                            outcome.summaries[task.run_id] = summary
                            display.finish(task, summary)
                            if summary.get("status") == "interrupted" and caught.signum is None:
                                caught.signum = signal_of(summary)
                    if broken and not running:
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        outcome.signum = caught.signum
        outcome.not_started = [t.run_id for unit in queue for t in unit]
        return outcome


def _result(future: Future, unit: list[CellTask]) -> list[dict[str, Any]]:
    try:
        return list(future.result())
    except KeyboardInterrupt:
        return [summary_after_interrupt(task) for task in unit]
    except BrokenProcessPool as exc:
        error = f"worker died: {exc}"
        return [{"run_id": t.run_id, "status": "failed", "error": error} for t in unit]
    except Exception as exc:  # execute_cells never raises; this is a pickling or pool problem
        error = f"{type(exc).__name__}: {exc}"
        return [{"run_id": t.run_id, "status": "failed", "error": error} for t in unit]


def _init_worker(device_queue: Any, has_devices: bool, threads: int) -> None:
    # Own process group: a terminal's Ctrl-C reaches only the parent, which forwards it exactly
    # once (train_run reads a second signal as "abort now"). Idle workers ignore signals.
    with contextlib.suppress(OSError):
        os.setpgrp()
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    device = device_queue.get(timeout=60) if has_devices else None
    set_worker_resources(device, threads)


def _pool_execute(unit: list[CellTask], mode: str | None = None) -> list[dict[str, Any]]:
    """execute_cells in a worker: a signal during training interrupts it, as in the parent."""
    previous = {s: signal.signal(s, raise_interrupt) for s in STOP_SIGNALS}
    try:
        return execute_cells(unit, mode)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (kill -9 of `ste-ablate run`)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
