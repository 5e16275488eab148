"""How many cells train together in one stack, and why: the one place that decides it.

`decide_stack` is plain Python (no torch), so the command line and the SLURM options can call it
before torch loads; the caller says what kind of device the cells train on.
"""

from __future__ import annotations

from typing import NamedTuple

# The largest automatic stack: cells per GPU when neither --stack nor the spec says.
GPU_MAX_STACK = 32


class StackSize(NamedTuple):
    """A stack size and where it came from ("--stack", "spec" or "automatic")."""

    size: int
    why: str


def decide_stack(
    requested: int | None,
    spec: int | None,
    device_kind: str | None,
    cells: int,
    workers: int = 1,
) -> StackSize:
    """The stack size for `cells` cells shared by `workers` processes.

    The rules, first match wins:
    1. `requested` (the command line's --stack, or the SLURM options' `stack`) when given;
    2. else `spec` (the spec's `stack:`) when given;
    3. else automatic: on CUDA (`device_kind == "cuda"`) the cells each worker gets
       (ceil(cells / workers)), at least 1 and at most GPU_MAX_STACK;
    4. else (the CPU, another kind, or None: a device not usable here) 1.

    Args:
        requested: the size asked for explicitly, or None.
        spec: the size the spec sets, or None.
        device_kind: the device type the cells train on ("cuda", "cpu", ...), or None.
        cells: the number of cells to train.
        workers: processes the cells are shared between.
    """
    if requested is not None:
        return StackSize(requested, "--stack")
    if spec is not None:
        return StackSize(spec, "spec")
    if device_kind != "cuda":
        return StackSize(1, "automatic")
    per_worker = -(-cells // max(1, workers))
    return StackSize(max(1, min(per_worker, GPU_MAX_STACK)), "automatic")
