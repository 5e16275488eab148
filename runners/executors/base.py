"""The shape every executor has: cells in, a `GridOutcome` out.

An executor only decides where cells run (this process, a local process pool, a SLURM job
array); what a cell does is `runners.executors.cells.execute_cell`, the same everywhere. Backends
are library objects: they take their settings as dataclass fields and never see the command line.
`LocalExecutor` is what the two local ones (`local.InProcessExecutor`, `pool.PoolExecutor`)
share: stacks of cells, the progress display, and how a finished unit is recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runners.executors.cells import CellTask, plan_stacks
from runners.executors.display import CellDisplay, ProgressOptions
from runners.executors.signals import signal_of


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


@dataclass(frozen=True, kw_only=True)
class LocalExecutor:
    """Cells in stacks on this machine, with a progress display; subclasses decide where each
    stack runs (`_run`).

    Attributes:
        stack: train up to this many compatible cells together (`runners.speed.stacking`);
            1 = one cell at a time.
        stack_mode: "grouped" or "looped" stacks (None: the device's default).
        progress: how progress is shown.
    """

    stack: int = 1
    stack_mode: str | None = None
    progress: ProgressOptions = field(default_factory=ProgressOptions)

    def run(self, tasks: Sequence[CellTask]) -> GridOutcome:
        """Run the cells, stack by stack (`runners.executors.cells.plan_stacks`)."""
        with CellDisplay(self.progress, len(tasks)) as display:
            return self._run(plan_stacks(list(tasks), self.stack), display)

    def _run(self, units: list[list[CellTask]], display: CellDisplay) -> GridOutcome:
        raise NotImplementedError

    @staticmethod
    def _record(
        outcome: GridOutcome,
        display: CellDisplay,
        unit: list[CellTask],
        summaries: Iterable[dict[str, Any]],
    ) -> int | None:
        """Enter a finished unit's summaries in `outcome` and the display; the signal that
        interrupted one of its cells, else None."""
        signum = None
        for task, summary in zip(unit, summaries, strict=True):
            outcome.summaries[task.run_id] = summary
            display.finish(task, summary)
            if summary.get("status") == "interrupted" and signum is None:
                signum = signal_of(summary)
        return signum

    @staticmethod
    def _stop(outcome: GridOutcome, signum: int | None, left: Iterable[list[CellTask]]) -> None:
        """The grid ended: the signal that stopped it, and the cells never started."""
        outcome.signum = signum
        outcome.not_started = [t.run_id for unit in left for t in unit]
