"""The local process-pool executor: stacks of cells in N spawned worker processes.

Workers are "spawn" processes (no forked torch/CUDA state); with several GPUs each worker owns
one device. Each worker sits in its own process group, so a terminal's Ctrl-C reaches only the
parent, which forwards it to every worker (a second signal would mean "abort now" to
`train_run`) after noting it in a shared value. A training worker checkpoints on the signal. An
idle worker leaves the parent's forwarded stop to the parent (which shuts the pool down once the
training ones have checkpointed: an idle worker dying would break the pool and signal the others
a second time); any other SIGINT/SIGTERM makes it exit.

Workers die with their parent (kill -9 of `ste-ablate run`): Linux sends them SIGUSR1 when it
dies (PR_SET_PDEATHSIG), and a watchdog thread in each worker notices that its parent changed
(os.getppid()), for systems without that signal and for a parent that died before it was set.
Either way the worker sends itself one SIGTERM: a training worker checkpoints on it, an idle one
exits, and one done checkpointing exits once idle. (The death signal is not SIGTERM itself:
Linux sends it once for each thread of the dying parent the worker is passed to on the way, and
a second SIGTERM would tell a training worker to abort without its checkpoint.)
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from runners.executors.base import GridOutcome, LocalExecutor
from runners.executors.cells import (
    CellTask,
    execute_cells,
    set_worker_resources,
    summary_after_interrupt,
)
from runners.executors.display import CellDisplay
from runners.executors.signals import STOP_SIGNALS, catch_signals, raise_interrupt
from runners.training.stop import take_stop_signal

# Set in each worker by `_init_worker`.
_PARENT_PID: int | None = None
_STOP: Any = None  # shared with the parent: the signal it forwarded (0 = none)
_WORKER = {"busy": False, "idle_since": 0.0, "exit_when_idle": False, "orphan": False}
PARENT_DEATH_SIGNAL = signal.SIGUSR1
WATCHDOG_PERIOD_S = 0.25
IDLE_GRACE_S = 0.5  # a worker exits this long after its last cell (its result sent by then)


def available_cpus() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PoolExecutor(LocalExecutor):
    """Run cells in `workers` spawned processes, each with an equal share of the CPU cores; a
    dead worker fails its cells and stops new ones from starting.

    Attributes:
        workers: worker processes.
        devices: one device per worker (e.g. ("cuda:0", "cuda:1")), or empty: each cell uses
            its own setting.
        (and `LocalExecutor`'s stack, stack_mode, progress, by keyword)
    """

    workers: int
    devices: tuple[str, ...] = ()

    def _run(self, units: list[list[CellTask]], display: CellDisplay) -> GridOutcome:
        outcome = GridOutcome()
        queue = deque(units)
        context = multiprocessing.get_context("spawn")
        device_queue = context.Queue()
        for device in self.devices:
            device_queue.put(device)
        threads = max(1, available_cpus() // self.workers)
        stop = context.RawValue("i", 0)
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(device_queue, bool(self.devices), threads, os.getpid(), stop),
        )
        running: dict[Future, list[CellTask]] = {}

        def forward(signum: int) -> None:
            # Noted first: an idle worker that sees it waits for the pool's shutdown, and a
            # cell that a worker picks up afterwards does not start.
            stop.value = signum
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
                        summaries = _result(future, unit)
                        broken = broken or any(
                            (s.get("error") or "").startswith("worker died") for s in summaries
                        )
                        signum = self._record(outcome, display, unit, summaries)
                        caught.signum = caught.signum or signum
                    if broken and not running:
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        self._stop(outcome, caught.signum, queue)
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


def _init_worker(
    device_queue: Any, has_devices: bool, threads: int, parent_pid: int, stop: Any
) -> None:
    # Own process group: a terminal's Ctrl-C reaches only the parent, which forwards it exactly
    # once (train_run reads a second signal as "abort now").
    global _PARENT_PID, _STOP
    with contextlib.suppress(OSError):
        os.setpgrp()
    _PARENT_PID, _STOP = parent_pid, stop
    _WORKER["idle_since"] = time.monotonic()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _idle_signal)
    signal.signal(PARENT_DEATH_SIGNAL, _parent_died)
    _die_with_parent()
    if not parent_alive():  # the parent died before the death signal was armed
        os._exit(0)
    threading.Thread(target=_watch_parent, name="parent-watchdog", daemon=True).start()
    device = device_queue.get(timeout=60) if has_devices else None
    set_worker_resources(device, threads)


def parent_alive() -> bool:
    """In a worker: whether the process that started the pool is still its parent."""
    return os.getppid() == _PARENT_PID


def _idle_signal(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM while no cell trains here: exit, unless it is the live parent's stop."""
    if parents_stop() and not _WORKER["exit_when_idle"]:
        return  # the parent shuts the pool down once the training workers have checkpointed
    # Nothing to save when idle; and an exception could be caught on its way (while a result
    # is being sent) and leave the worker running.
    os._exit(128 + signum)


def _parent_died(signum: int, frame: Any) -> None:
    """The parent is gone (Linux's death signal, or the watchdog): one SIGTERM to this worker,
    however often this runs; none to a worker already stopping on the parent's own stop."""
    if _WORKER["orphan"]:
        return
    _WORKER["orphan"] = _WORKER["exit_when_idle"] = True
    if not (_WORKER["busy"] and _STOP is not None and _STOP.value):
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent() -> None:
    """Report a parent that is gone (where Linux's death signal did not), and make a worker
    that must exit do so once its last result has been sent."""
    while True:
        time.sleep(WATCHDOG_PERIOD_S)
        if not parent_alive():
            os.kill(os.getpid(), PARENT_DEATH_SIGNAL)  # _parent_died, in the main thread
        idle_for = time.monotonic() - _WORKER["idle_since"]
        if _WORKER["exit_when_idle"] and not _WORKER["busy"] and idle_for >= IDLE_GRACE_S:
            os.kill(os.getpid(), signal.SIGTERM)  # _idle_signal, in the main thread


def _pool_execute(unit: list[CellTask], mode: str | None = None) -> list[dict[str, Any]]:
    """execute_cells in a worker: a signal during training interrupts it, as in the parent.

    A cell picked up after the parent began to stop the grid (or died) does not start. A worker
    whose cell a signal stopped that was not the parent's own stop exits once idle.
    """
    if (_STOP is not None and _STOP.value) or (_PARENT_PID is not None and not parent_alive()):
        return [summary_after_interrupt(task) for task in unit]
    previous = {s: signal.signal(s, raise_interrupt) for s in STOP_SIGNALS}
    _WORKER["busy"] = True
    take_stop_signal()  # only signals from here on concern this unit
    try:
        summaries = execute_cells(unit, mode)
        stopped = take_stop_signal() is not None  # also after a cell's last step
        interrupted = any(s.get("status") == "interrupted" for s in summaries)
        if (stopped or interrupted) and not parents_stop():
            _WORKER["exit_when_idle"] = True
        return summaries
    except KeyboardInterrupt:  # a signal outside the training loop's own handling
        if not parents_stop():
            _WORKER["exit_when_idle"] = True
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _WORKER["busy"], _WORKER["idle_since"] = False, time.monotonic()


def parents_stop() -> bool:
    """In a worker: whether the live parent asked the workers to stop (an orderly stop)."""
    return _STOP is not None and bool(_STOP.value) and parent_alive()


def _die_with_parent() -> None:
    """Ask Linux to send PARENT_DEATH_SIGNAL when the parent dies (kill -9 of `ste-ablate
    run`); elsewhere the watchdog alone notices."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
