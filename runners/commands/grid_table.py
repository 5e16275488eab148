"""What `ste-ablate run` and `ste-ablate status` share: the SPEC and --store arguments, and the
table of a grid's cells."""

from __future__ import annotations

import argparse
import os
from typing import Any

from runners.grids.spec import Cell, Spec
from runners.store import format as run_store

DEFAULT_STORE = "ste-store"


def add_spec_and_store(parser: argparse.ArgumentParser) -> None:
    """Add the SPEC positional and --store (default $STE_STORE, else ./ste-store)."""
    parser.add_argument(
        "spec", metavar="SPEC", help="the grid's YAML file, e.g. ablations/quickstart.yaml"
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=os.environ.get("STE_STORE", DEFAULT_STORE),
        help=f"run store folder (default: $STE_STORE or {DEFAULT_STORE!r})",
    )


def print_cells(
    spec: Spec,
    cells: list[Cell],
    states: dict[str, str],
    infos: dict[str, run_store.CellInfo] | None = None,
    slurm_states: dict[str, str] | None = None,
    *,
    action: bool = False,
) -> None:
    """Print one row per cell: run id, axis values, state; with `infos` epochs and test MSE,
    with `slurm_states` SLURM's state, with `action` what `run` would do."""
    headers = ["run_id", *spec.axes, "state"]
    if infos is not None:
        headers += ["epochs", "test_mse"]
    if slurm_states is not None:
        headers.append("slurm")
    if action:
        headers.append("action")
    rows = []
    for cell in cells:
        state = states[cell.run_id]
        row = [cell.run_id, *(_show(cell.factors[a]) for a in spec.axes), state]
        if infos is not None:
            summary = infos[cell.run_id].summary or {}
            mse = summary.get("test_mse")
            epochs = summary.get("epochs_done")
            row += [
                "" if epochs is None else str(epochs),
                f"{mse:.5f}" if isinstance(mse, float) else "-",
            ]
        if slurm_states is not None:
            row.append(slurm_states.get(cell.run_id, "-"))
        if action:
            final = state in run_store.FINAL_STATES
            row.append("skip" if final else "leave (running)" if state == "running" else "run")
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _show(value: Any) -> str:
    return "-" if value is None else str(value)
