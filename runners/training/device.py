"""Which device a run trains on, its precision, and how long its queued work took.

`resolve_device` turns the config's "auto"/"cpu"/"cuda:N" into a checked `torch.device`
(`device_kind`: its type, or None when it is not usable here);
`autocast` wraps a forward in bf16 when asked; `elapsed` times device work; `cudnn_autotune`
turns on cuDNN's algorithm search while fixed-shape stacks train.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from runners.errors import UserError


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


def device_kind(spec: str) -> str | None:
    """The type of the device `spec` names here ("cpu", "cuda", ...), or None when it is not
    usable here (the run itself reports that)."""
    try:
        return resolve_device(spec).type
    except Exception:
        return None


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
def cudnn_autotune(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """cuDNN benchmark mode on CUDA while stacks train: a stack's shapes are fixed, and grouped
    convolutions have many candidate algorithms (GPU results are not promised bit-reproducible)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or (enabled and device.type == "cuda")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous
