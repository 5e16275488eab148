"""Which cells a process may train: the cell lock and the finality check, in one place.

A cell is trained only by the process that holds its lock, and never once it is final
(completed or diverged). `claim_cells` takes the locks of the cells to train and says which
are final already and which another process holds; every entry that trains (the engine's
`train_runs`, the executors' `execute_cells`) goes through it. The lock is re-entrant within a
process, so an executor may claim cells and the engine claim them again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.store import format as st
from runners.store.lock import cell_lock


class CellBusyError(UserError):
    """Another process is training this cell (its lock is held)."""


def final_summary(folder: Path) -> dict[str, Any] | None:
    """The cell's summary when it is final (completed or diverged) and valid, else None."""
    if not folder.is_dir():
        return None
    summary, _ = st.verify_summary(folder)
    if summary is not None and summary["status"] in st.FINAL_STATES:
        return summary
    return None


@dataclass
class CellClaim:
    """What `claim_cells` found, by position in the folders it was given.

    Attributes:
        final: the final summary of each cell that is final already.
        busy: cells whose lock another process holds (left alone).
        held: cells this process now holds and may train.
    """

    final: dict[int, dict[str, Any]] = field(default_factory=dict)
    busy: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)


@contextlib.contextmanager
def claim_cells(folders: Sequence[Path]) -> Iterator[CellClaim]:
    """Hold the locks of the cells in `folders` that are not final, for the `with` block.

    A final cell is reported without taking its lock; a cell is checked again once locked,
    since another process may have finished it meanwhile. Taking a lock creates the folder.
    """
    claim = CellClaim()
    with contextlib.ExitStack() as locks:
        for n, folder in enumerate(folders):
            summary = final_summary(folder)
            if summary is None and locks.enter_context(cell_lock(folder)) is None:
                claim.busy.append(n)
                continue
            summary = summary or final_summary(folder)
            if summary is not None:
                claim.final[n] = summary
            else:
                claim.held.append(n)
        yield claim
