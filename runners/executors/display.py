"""The local executors' progress display: a bar of cells done / running / left and one line per
finished cell on stderr. When stderr is not a terminal (a log file, CI, nohup) the bar is off
and each line starts with "cell N/TOTAL" and ends with an ETA."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from runners.executors.cells import CellTask


@dataclass(frozen=True)
class ProgressOptions:
    """How the grid's progress is shown.

    Attributes:
        total: cells in the whole grid (None: the cells given to the executor).
        done_before: cells of the grid already final before this execution.
        show: draw the bar (None: only when stderr is a terminal).
    """

    total: int | None = None
    done_before: int = 0
    show: bool | None = None


class CellDisplay:
    """The bar (with running / failed / ... counts) and one printed line per finished cell."""

    def __init__(self, options: ProgressOptions, cells: int) -> None:
        show = sys.stderr.isatty() if options.show is None else options.show
        total = cells + options.done_before if options.total is None else options.total
        self.bar = tqdm(
            total=total,
            initial=options.done_before,
            desc="cells",
            unit="cell",
            disable=not show,
            dynamic_ncols=True,
        )
        self.plain = not show
        self.total, self.done = total, options.done_before
        self.clock = time.perf_counter()
        self.running = 0
        self.counts: Counter = Counter()
        self.started: dict[str, float] = {}

    def __enter__(self) -> CellDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def start(self, task: CellTask) -> None:
        """A cell started."""
        self.running += 1
        self.started[task.run_id] = time.perf_counter()
        self._postfix()

    def finish(self, task: CellTask, summary: dict[str, Any]) -> None:
        """A cell returned `summary`: print its line, count it."""
        self.running -= 1
        status = summary.get("status", "failed")
        self.counts[status] += 1
        wall = time.perf_counter() - self.started.pop(task.run_id, time.perf_counter())
        mse = summary.get("test_mse")
        counted = status in ("completed", "diverged", "failed")
        self.done += counted
        parts = [f"{status:<11} {task.run_id}"]
        if self.plain:
            parts.insert(0, f"cell {self.done}/{self.total}")
        if isinstance(mse, float):
            parts.append(f"test_mse={mse:.5f}")
        bound = summary.get("test_iwae_bound")  # the Bernoulli VAE's headline metric
        if isinstance(bound, float):
            parts.append(f"test_iwae_bound={bound:.3f}")
        parts.append(f"{wall:.1f}s")
        if status != "completed" and summary.get("error"):
            parts.append(f"({summary['error']})")
        if self.plain:
            parts.append(self._eta())
        self.bar.write("  ".join(parts), file=sys.stderr)
        if counted:
            self.bar.update(1)
        self._postfix()

    def _eta(self) -> str:
        """Time left at this execution's pace so far (cells finished here / seconds since start)."""
        finished = sum(self.counts.values())
        left = max(self.total - self.done, 0)
        if not left:
            return "ETA 0s"
        seconds = (time.perf_counter() - self.clock) / finished * left
        minutes, secs = divmod(round(seconds), 60)
        return f"ETA {minutes}m{secs:02d}s" if minutes else f"ETA {secs}s"

    def _postfix(self) -> None:
        shown = {"running": self.running}
        shown.update({k: v for k, v in sorted(self.counts.items()) if k != "completed"})
        self.bar.set_postfix(shown, refresh=True)
