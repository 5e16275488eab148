"""What a checkpoint.pt payload must hold before any of it is used: types and bounds.

A checkpoint that parses and names its run can still carry values that would crash or mislead a
resumed run (a thread count of 100000, an epoch past the config's, a negative position, records
that are not records). `checkpoint_problem` names the first such field; the loader then ignores
the checkpoint and the run starts from scratch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from runners.errors import short_repr
from runners.store.summary_checks import is_number, record_problem

MAX_TORCH_THREADS = 1024  # the bound of RunConfig.num_threads
_TIMES = ("epoch_train_time", "train_time", "wall_time")
_LISTS = ("records", "steps", "epoch_grad_norms")


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def thread_count_problem(value: Any) -> str | None:
    """Why `value` is not a usable recorded torch thread count (None: it is, or it is absent)."""
    if value is None:
        return None
    if not is_int(value) or not 1 <= value <= MAX_TORCH_THREADS:
        return (
            f"torch_threads must be an integer in [1, {MAX_TORCH_THREADS}], got {short_repr(value)}"
        )
    return None


def checkpoint_problem(
    payload: Mapping[str, Any], epochs: int | None = None, batches: int | None = None
) -> str | None:
    """The first field of a checkpoint payload that is missing, mistyped or out of bounds.

    Args:
        payload: the loaded checkpoint (`RunState.to_checkpoint` plus "format").
        epochs: the run's planned epochs (None: unknown, bounds that need it are skipped).
        batches: training steps per epoch (None: unknown).
    """
    required = ("epoch", "step", "step_in_epoch", "model", "optimizer", "data_state")
    required += ("noise_state", *_LISTS, "prev_codes", *_TIMES)
    missing = [key for key in required if key not in payload]
    if missing:
        return f"checkpoint lacks {', '.join(missing)}"
    epoch, step, position = payload["epoch"], payload["step"], payload["step_in_epoch"]
    top = epochs if epochs is not None else math.inf
    if not is_int(epoch) or not 0 <= epoch <= top:
        return f"epoch must be an integer in [0, {top}], got {short_repr(epoch)}"
    last = batches - 1 if batches is not None else math.inf
    if not is_int(position) or not 0 <= position <= last:
        return f"step_in_epoch must be an integer in [0, {last}], got {short_repr(position)}"
    if not is_int(step) or step < 0:
        return f"step must be a non-negative integer, got {short_repr(step)}"
    if batches is not None and step != epoch * batches + position:
        return f"step {short_repr(step)} is not epoch {epoch} x {batches} steps + {position}"
    if not _tensor_dict(payload["model"]):
        return "model is not a state dict of tensors"
    if payload["optimizer"] is not None and not isinstance(payload["optimizer"], dict):
        return "optimizer is neither a state dict nor null"
    if payload["optimizer"] is None and epochs is not None and epoch < epochs:
        return "an unfinished run's checkpoint has no optimiser state"
    for key in ("data_state", "noise_state"):
        if not _generator_state(payload[key]):
            return f"{key} is not a generator state (a uint8 tensor)"
    problem = _lists_problem(payload, epoch, step)
    if problem is not None:
        return problem
    codes = payload["prev_codes"]
    if codes is not None and not isinstance(codes, torch.Tensor):
        return "prev_codes is neither a tensor nor null"
    for key in _TIMES:
        value = payload[key]
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"{key} must be a number, got {short_repr(value)}"
        if not 0 <= value < 2**63 or (isinstance(value, float) and math.isnan(value)):
            return f"{key} must be finite and non-negative, got {short_repr(value)}"
    problem = thread_count_problem(payload.get("torch_threads"))
    if problem is not None:
        return problem
    hardware = payload.get("hardware")
    if hardware is not None and not isinstance(hardware, dict):
        return "hardware is neither a mapping nor null"
    if not isinstance(payload.get("spans_machines", False), bool):
        return "spans_machines is not true or false"
    return None


def _lists_problem(payload: Mapping[str, Any], epoch: int, step: int) -> str | None:
    records, steps, norms = (payload[key] for key in _LISTS)
    for key, value in zip(_LISTS, (records, steps, norms), strict=True):
        if not isinstance(value, list):
            return f"{key} is not a list"
    if len(records) != epoch:
        return f"records holds {len(records)} epochs, the checkpoint is at epoch {epoch}"
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict) or record.get("epoch") != number:
            return f"records entry {number} is not epoch {number}'s record"
        problem = record_problem(record)
        if problem is not None:
            return f"records: {problem}"
    if len(steps) != step:
        return f"steps holds {len(steps)} steps, the checkpoint is at step {step}"
    if any(not isinstance(entry, dict) or record_problem(entry) for entry in steps):
        return "steps holds an entry that is not a step's record"
    if not all(is_number(v) for v in norms):
        return "epoch_grad_norms holds a value that is not a number"
    return None


def _tensor_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _generator_state(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
