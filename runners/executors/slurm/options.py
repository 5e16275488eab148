"""The resources and packing of a SLURM submission, as plain data (the command line fills it in)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runners.speed.stack_size import decide_stack

DEFAULT_TIME_MIN = 120


@dataclass(frozen=True)
class SlurmOptions:
    """One submission's resources, and how its cells are packed into array tasks.

    Attributes:
        partition: the partition (None: the cluster's default).
        gpus_per_task: GPUs per array task.
        cpus_per_task: CPU cores per array task; torch uses this many threads.
        mem_gb: memory per task in GB (None: the cluster's default).
        time_min: time limit per task in minutes; every submission carries one.
        cells_per_task: cells run by each array task (raised to the stack size when smaller).
        extra: any other sbatch option as (key, value) pairs; True for a flag.
        stack: cells trained together inside a task (None: automatic, see `stack_size`).
        stack_mode: "grouped" or "looped" stacks (None: the node's device decides).
    """

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = DEFAULT_TIME_MIN
    cells_per_task: int = 1
    extra: tuple[tuple[str, str | bool], ...] = ()
    stack: int | None = None
    stack_mode: str | None = None

    def stack_size(self, spec: int | None = None) -> int:
        """Cells each task trains together (`runners.speed.stack_size.decide_stack`): `stack`
        when given, else `spec` (the spec's `stack`) when given, else, with GPUs, the task's
        cells (at most `runners.speed.stack_size.GPU_MAX_STACK`), else 1."""
        kind = "cuda" if self.gpus_per_task else "cpu"
        return decide_stack(self.stack, spec, kind, self.cells_per_task).size

    def chunk_size(self) -> int:
        """Cells per array task: `cells_per_task`, raised to the stack size."""
        return max(self.cells_per_task, self.stack_size())

    def executor_parameters(self, job_name: str) -> dict[str, Any]:
        """`submitit.SlurmExecutor.update_parameters` keywords."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time_min,
            "nodes": 1,
            "ntasks_per_node": 1,
            "cpus_per_task": self.cpus_per_task,
            # The warning signal must come well before the limit even for short limits.
            "signal_delay_s": min(90, max(10, self.time_min * 60 // 5)),
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        if self.mem_gb:
            params["mem"] = f"{math.ceil(self.mem_gb * 1024)}M"
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params
