"""Signals in the local executors: SIGINT or SIGTERM stops the grid.

The cell in training checkpoints and is recorded interrupted (`train_run` handles the signal);
no new cell starts; pool workers get the signal forwarded; the caller exits 128 + the signal.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Caught:
    """The first stop signal seen in a `catch_signals` block (None: none yet)."""

    signum: int | None = None


@contextlib.contextmanager
def catch_signals(
    *, raise_interrupt: bool, on_signal: Callable[[int], None] | None = None
) -> Iterator[Caught]:
    """Record SIGINT/SIGTERM for the block (raising KeyboardInterrupt if asked); restore after."""
    caught = Caught()
    if threading.current_thread() is not threading.main_thread():
        yield caught  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        caught.signum = caught.signum or signum
        if on_signal is not None:
            on_signal(signum)
        if raise_interrupt:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def raise_interrupt(signum: int, frame: Any) -> None:
    """A signal handler that turns the signal into a KeyboardInterrupt."""
    raise KeyboardInterrupt(f"signal {signum}")


def signal_of(summary: dict[str, Any]) -> int:
    """The signal named in an interrupted summary's error ("interrupted by SIGTERM; ...")."""
    error = summary.get("error") or ""
    return signal.SIGTERM if "SIGTERM" in error else signal.SIGINT
