"""The shape every executor has: cells in, a `GridOutcome` out.

An executor only decides where cells run (this process, a local process pool, a SLURM job
array); what a cell does is `runners.executors.cells.execute_cell`, the same everywhere. Backends
are library objects: they take their settings as dataclass fields and never see the command line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runners.executors.cells import CellTask


@dataclass
class GridOutcome:
    """What an executor did with the cells it was given.

    Attributes:
        summaries: run_id -> the cell's summary (as `execute_cell` returns it), in the order
            cells finished.
        signum: the signal that stopped the grid (or the wait for it), or None.
        not_started: run ids of the cells that never started (grid stopped early).
        job_states: run_id -> the scheduler's state of the cell's job (e.g. SLURM's
            "COMPLETED"); empty for local executors.
    """

    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    signum: int | None = None
    not_started: list[str] = field(default_factory=list)
    job_states: dict[str, str] = field(default_factory=dict)

    def counts(self) -> Counter:
        """Number of cells per returned status."""
        return Counter(s.get("status") for s in self.summaries.values())


class Executor(Protocol):
    """Runs cells somewhere and reports what became of them; never raises for a failing cell."""

    def run(self, tasks: Sequence[CellTask]) -> GridOutcome:
        """Run the cells (in order, as far as the backend orders anything) to the end."""
        ...
