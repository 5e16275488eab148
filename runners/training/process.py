"""The process-wide torch state a run sets for its duration and records: threads, deterministic
algorithms, and where it ran.

`torch_settings` sets the thread count and deterministic algorithms and restores them afterwards;
`keep_thread_count` resumes a run with the thread count it started with (CPU results depend on
it); `runtime_info` is the record of where the run executes, written to config.json.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from typing import Any

import torch

from runners.config import RunConfig
from runners.determinism import hardware
from runners.store.checkpoint_fields import thread_count_problem
from runners.training.data import resolve_data_root


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
