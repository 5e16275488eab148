"""Stopping a run with Ctrl-C or SIGTERM: a flag the batch loop reads after each step.

`StopOnSignal` turns SIGINT/SIGTERM into that flag (a second signal raises KeyboardInterrupt);
every signal it caught is kept until the executor that started the run takes it
(`take_stop_signal`) and stops the grid. An interrupted run exits with the shell's code for its
signal (`INTERRUPT_EXIT_CODES`) and resumes on the next command.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

INTERRUPT_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

# The stop signals StopOnSignal blocks caught, oldest first, until an executor takes them.
_CAUGHT: list[int] = []


def take_stop_signal() -> int | None:
    """The first SIGINT/SIGTERM a `StopOnSignal` block caught since the last call (None: none).

    A signal that lands after a run's last training step (its last evaluation, figure or
    summary) no longer interrupts the run, which completes; the executor that started the
    run takes the signal here and stops the grid.
    """
    first = _CAUGHT[0] if _CAUGHT else None
    _CAUGHT.clear()
    return first


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (main thread only).

    A second signal while the flag is set raises KeyboardInterrupt: the user insists. Every
    caught signal is also kept for the executor (`take_stop_signal`).
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def message(self) -> str:
        """The error of a run this signal interrupted."""
        return f"interrupted by {self.signal_name}; resumable"

    def _handle(self, signum: int, frame: object) -> None:
        _CAUGHT.append(signum)
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
