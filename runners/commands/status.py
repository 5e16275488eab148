"""`ste-ablate status SPEC`: the table of a grid's cells and their state (and SLURM's)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from runners.commands.parts.grid import (
    add_determinism,
    add_spec_and_store,
    check_store,
    print_cells,
    thread_mix_warning,
    with_determinism,
)
from runners.errors import UserError
from runners.executors.slurm.record import slurm_states
from runners.grids.spec import load_spec
from runners.store import format as run_store


def register(subparsers: Any) -> None:
    """Add the ``status`` command."""
    status = subparsers.add_parser(
        "status",
        help="table of a grid's cells and their state",
        description="Show every cell of a spec with its state in the store (completed, failed, "
        "diverged, running, interrupted, missing), epochs done and final test MSE.",
    )
    add_spec_and_store(status)
    add_determinism(status)
    status.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    """`ste-ablate status`: print the table; exit 0 (2 on a bad spec)."""
    spec = with_determinism(load_spec(args.spec, max_cells=args.max_cells), args.determinism)
    store = Path(args.store)
    check_store(store)
    infos = {c.run_id: run_store.cell_info(run_store.run_dir(store, c.run_id)) for c in spec.cells}
    states: dict[str, str] | None = None
    try:
        states = slurm_states(store, spec)
    except UserError:
        raise
    except Exception as exc:  # sacct/squeue missing or failing: the store's view still shows
        print(f"ste-ablate: warning: no SLURM states ({exc})", file=sys.stderr)
    print(f"{spec.name}: {len(spec.cells)} cells ({' x '.join(spec.axes)}); store {store}")
    # No slurm column for a store that was never submitted to SLURM.
    print_cells(spec, spec.cells, {k: v.state for k, v in infos.items()}, infos, states or None)
    tally = Counter(info.state for info in infos.values())
    print(", ".join(f"{n} {s}" for s, n in sorted(tally.items())))
    warning = thread_mix_warning(store, [c.run_id for c in spec.cells])
    if warning:
        print(f"ste-ablate: warning: {warning}", file=sys.stderr)
    return 0
