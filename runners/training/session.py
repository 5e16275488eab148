"""How a training process uses torch: device, threads, deterministic kernels, precision, signals.

Everything here is process state that a run sets for its duration and restores afterwards, or
reads to record where it ran (`runtime_info`, written to config.json).
"""

from __future__ import annotations

import contextlib
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch

from runners.config import RunConfig
from runners.determinism import hardware
from runners.errors import UserError
from runners.store.checkpoint_fields import thread_count_problem
from runners.training.data import resolve_data_root

INTERRUPT_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def resolve_device(spec: str) -> torch.device:
    """ "auto" -> cuda when available else cpu; "cuda"/"cuda:N" checked against the machine.

    Raises:
        UserError: CUDA asked for but absent, or the index is out of range.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {spec!r} asked for, but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(
                f"device {spec!r} asked for, but this machine has {count} CUDA device(s)"
            )
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast around a forward when `precision == "bf16"`, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def elapsed(device: torch.device, started: float) -> float:
    """Seconds since `started` (a `time.perf_counter()`), after the device's queued work ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


@contextlib.contextmanager
def torch_settings(config: RunConfig, device: torch.device) -> Iterator[None]:
    """Thread count and (on CPU) deterministic algorithms for the run; restored afterwards.

    On the CPU the flag costs nothing measurable (its import of torch._inductor is shared with
    torch.optim's); on CUDA it would need CUBLAS_WORKSPACE_CONFIG and slower kernels, so GPU
    results are not promised bit-reproducible.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(threads)
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)


@contextlib.contextmanager
def cudnn_autotune(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """cuDNN benchmark mode on CUDA while stacks train: a stack's shapes are fixed, and grouped
    convolutions have many candidate algorithms (GPU results are not promised bit-reproducible)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or (enabled and device.type == "cuda")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def keep_thread_count(config: RunConfig, device: torch.device, recorded: Any) -> int:
    """Resume a run with the torch thread count it started with (CPU results depend on it).

    On the CPU, when `config.num_threads` is unset, sets torch's count to `recorded`; an explicit,
    different `num_threads` wins, with a warning that the run will not be bit-identical. Called
    inside `torch_settings`, which restores torch's count afterwards.

    Returns:
        The count to record for the run: `recorded` when known and valid (an integer in [1,
        1024]), else the current count (with a warning when `recorded` is present but invalid).
    """
    problem = thread_count_problem(recorded)
    if problem is not None:
        print(f"warning: run {config.run_id}: ignoring the recorded {problem}", file=sys.stderr)
    if recorded is None or problem is not None:
        return torch.get_num_threads()  # unknown: the run goes on with (and records) this one
    if device.type != "cpu":
        return recorded  # GPU results are not promised bit-reproducible
    if config.num_threads is None:
        torch.set_num_threads(recorded)
    elif config.num_threads != recorded:
        print(
            f"warning: run {config.run_id} started with {recorded} torch thread(s) and goes on "
            f"with num_threads={config.num_threads}: it will not be bit-identical to an "
            "uninterrupted run",
            file=sys.stderr,
        )
    return recorded


def runtime_info(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """Where the run executes (recorded in config.json; not part of the run's identity)."""
    info: dict[str, Any] = {
        "data_root": str(resolve_data_root(config.data_root))
        if config.dataset == "mnist"
        else None,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }
    info.update(hardware(device))
    return info


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
