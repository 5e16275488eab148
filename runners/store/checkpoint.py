"""checkpoint.pt: the state a run resumes from, written atomically, validated on load."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from runners.store.checkpoint_fields import checkpoint_problem
from runners.store.format import CHECKPOINT, atomic_write_bytes

CHECKPOINT_FORMAT = 1


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """`torch.save` into memory, then write the bytes atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(folder: Path, payload: dict[str, Any]) -> None:
    """Write checkpoint.pt atomically (payload: plain dicts, lists, numbers and tensors)."""
    atomic_torch_save(folder / CHECKPOINT, {"format": CHECKPOINT_FORMAT, **payload})


def load_checkpoint(
    folder: Path, run_id: str, *, epochs: int | None = None, batches: int | None = None
) -> dict[str, Any] | None:
    """Load checkpoint.pt; None (with a warning) when absent, corrupt, truncated, foreign, or
    when a field is missing, mistyped or out of bounds (`checkpoint_problem`; `epochs` and
    `batches`, the run's epochs and steps per epoch, bound its position when given)."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("unknown checkpoint format")
        if payload.get("run_id") != run_id:
            raise ValueError(f"checkpoint belongs to {payload.get('run_id')!r}")
        problem = checkpoint_problem(payload, epochs, batches)
        if problem is not None:
            raise ValueError(problem)
    except Exception as exc:  # a torn zip, a pickle error, a wrong payload: all mean "not usable"
        warnings.warn(
            f"ignoring unusable checkpoint {path} ({type(exc).__name__}: {exc}); "
            "starting this run from scratch",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return payload
