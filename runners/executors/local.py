"""Where cells run locally: in this process, one after another, or in a pool of processes.

The unit of work is a stack of cells (`runners.training.stacked.plan_stacks`): with `stack=1` each unit is
one cell and runs through `runners.executors.cells.execute_cell`, the same unit of work SLURM array tasks
run; larger stacks run through `runners.training.stacked.execute_stack` (K cells trained together in one
process, each with its own store entry and W&B run: a speed setting only). The pool
uses "spawn" processes (no forked torch/CUDA state); with several GPUs each worker owns one
device. A progress bar shows cells done / running / left, and one line per finished cell is
printed (also when stderr is not a terminal).

Signals: SIGINT or SIGTERM stops the grid. The cell in training checkpoints and is recorded as
interrupted (`train_run` handles the signal); no new cell starts; pool workers get the signal
forwarded; the caller exits non-zero (128 + signal number).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from runners.executors.cells import (
    CellTask,
    execute_cells,
    plan_stacks,
    set_worker_resources,
    summary_after_interrupt,
)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class GridOutcome:
    """What a local execution did.

    Attributes:
        summaries: run_id -> summary returned by `execute_cell`, in the order cells finished.
        signum: the signal that stopped the grid, or None.
        not_started: run ids of the cells that never started (grid stopped early).
    """

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    signum: int | None = None
    not_started: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        """Number of cells per returned status."""
        return Counter(s.get("status") for s in self.summaries.values())


def available_cpus() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_devices(device: str) -> list[str]:
    """The CUDA devices cells may be spread over: all visible GPUs for "auto"/"cuda", else none."""
    if device not in ("auto", "cuda"):
        return []
    try:
        import torch

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
        stack: train up to this many compatible cells together (`runners.training.stacked`); 1 = one
            cell at a time.
        stack_mode: "grouped" or "looped" stacks (None: the device's default).
    """
    total = len(tasks) + done_before if total is None else total
    bar = tqdm(
        total=total,
        initial=done_before,
        desc="cells",
        unit="cell",
        disable=(not sys.stderr.isatty()) if show_progress is None else not show_progress,
        dynamic_ncols=True,
    )
    display = _Display(bar)
    units = plan_stacks(tasks, stack)
    try:
        if workers <= 1:
            return _run_sequential(units, display, stack_mode)
        return _run_pool(units, workers, devices or [], display, stack_mode)
    finally:
        bar.close()


class _Display:
    """The bar's postfix (running / failed / ...) and one printed line per finished cell."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.running = 0
        self.counts: Counter = Counter()
        self.started: dict[str, float] = {}

    def start(self, task: CellTask) -> None:
        self.running += 1
        self.started[task.run_id] = time.perf_counter()
        self._postfix()

    def finish(self, task: CellTask, summary: dict[str, Any]) -> None:
        self.running -= 1
        status = summary.get("status", "failed")
        self.counts[status] += 1
        wall = time.perf_counter() - self.started.pop(task.run_id, time.perf_counter())
        mse = summary.get("test_mse")
        parts = [f"{status:<11} {task.run_id}"]
        if isinstance(mse, float):
            parts.append(f"test_mse={mse:.5f}")
        parts.append(f"{wall:.1f}s")
        if status != "completed" and summary.get("error"):
            parts.append(f"({summary['error']})")
        self.bar.write("  ".join(parts), file=sys.stderr)
        if status in ("completed", "diverged", "failed"):
            self.bar.update(1)
        self._postfix()

    def _postfix(self) -> None:
        shown = {"running": self.running}
        shown.update({k: v for k, v in sorted(self.counts.items()) if k != "completed"})
        self.bar.set_postfix(shown, refresh=True)


# ----------------------------------------------------------------------------- sequential


def _run_sequential(
    units: list[list[CellTask]], display: _Display, mode: str | None = None
) -> GridOutcome:
    outcome = GridOutcome()
    queue = deque(units)
    with _catch_signals(raise_interrupt=True) as caught:
        while queue and caught.signum is None:
            unit = queue.popleft()
            for task in unit:
                display.start(task)
            try:
                summaries = execute_cells(unit, mode)
            except KeyboardInterrupt:
                # The signal arrived outside train_run's own handling (e.g. while W&B started):
                # the cells' last checkpoints stay, their state reads as interrupted or missing.
                summaries = [summary_after_interrupt(task) for task in unit]
                caught.signum = caught.signum or signal.SIGINT
            for task, summary in zip(unit, summaries, strict=True):
                outcome.summaries[task.run_id] = summary
                display.finish(task, summary)
                if summary.get("status") == "interrupted":
                    caught.signum = caught.signum or _signal_of(summary)
    outcome.signum = caught.signum
    outcome.not_started = [t.run_id for unit in queue for t in unit]
    return outcome


# ----------------------------------------------------------------------------- process pool


def _run_pool(
    units: list[list[CellTask]],
    workers: int,
    devices: list[str],
    display: _Display,
    mode: str | None = None,
) -> GridOutcome:
    outcome = GridOutcome()
    queue = deque(units)
    context = multiprocessing.get_context("spawn")
    device_queue = context.Queue()
    for device in devices:
        device_queue.put(device)
    threads = max(1, available_cpus() // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(device_queue, bool(devices), threads),
    )
    running: dict[Future, list[CellTask]] = {}

    def forward(signum: int) -> None:
        # Workers ignore signals while idle and turn them into a checkpoint while training.
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(OSError):
                os.kill(process.pid, signum)

    broken = False
    with _catch_signals(raise_interrupt=False, on_signal=forward) as caught:
        try:
            while queue or running:
                while queue and len(running) < workers and caught.signum is None and not broken:
                    unit = queue.popleft()
                    running[pool.submit(_pool_execute, unit, mode)] = unit
                    for task in unit:
                        display.start(task)
                if not running:
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    for task, summary in zip(unit, _result(future, unit), strict=True):
                        broken = broken or (summary.get("error") or "").startswith("worker died")
                        outcome.summaries[task.run_id] = summary
                        display.finish(task, summary)
                        if summary.get("status") == "interrupted" and caught.signum is None:
                            caught.signum = _signal_of(summary)
                if broken and not running:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    outcome.signum = caught.signum
    outcome.not_started = [t.run_id for unit in queue for t in unit]
    return outcome


def _signal_of(summary: dict[str, Any]) -> int:
    """The signal named in an interrupted summary's error ("interrupted by SIGTERM; ...")."""
    error = summary.get("error") or ""
    return signal.SIGTERM if "SIGTERM" in error else signal.SIGINT


def _result(future: Future, unit: list[CellTask]) -> list[dict[str, Any]]:
    try:
        return list(future.result())
    except KeyboardInterrupt:
        return [summary_after_interrupt(task) for task in unit]
    except BrokenProcessPool as exc:
        error = f"worker died: {exc}"
        return [{"run_id": t.run_id, "status": "failed", "error": error} for t in unit]
    except Exception as exc:  # execute_stack never raises; this is a pickling or pool problem
        error = f"{type(exc).__name__}: {exc}"
        return [{"run_id": t.run_id, "status": "failed", "error": error} for t in unit]


def _init_worker(device_queue: Any, has_devices: bool, threads: int) -> None:
    # Own process group: a terminal's Ctrl-C reaches only the parent, which forwards it exactly
    # once (train_run reads a second signal as "abort now"). Idle workers ignore signals.
    with contextlib.suppress(OSError):
        os.setpgrp()
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    device = device_queue.get(timeout=60) if has_devices else None
    set_worker_resources(device, threads)


def _pool_execute(unit: list[CellTask], mode: str | None = None) -> list[dict[str, Any]]:
    """execute_stack in a worker: a signal during training interrupts it, as in the parent."""
    previous = {s: signal.signal(s, _raise_interrupt) for s in _SIGNALS}
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
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# ----------------------------------------------------------------------------- signals


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _Caught:
    signum: int | None = None


@contextlib.contextmanager
def _catch_signals(*, raise_interrupt: bool, on_signal: Any = None) -> Iterator[_Caught]:
    """Record SIGINT/SIGTERM for the block (raising KeyboardInterrupt if asked); restore after."""
    caught = _Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        caught.signum = caught.signum or signum
        if on_signal is not None:
            on_signal(signum)
        if raise_interrupt:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
