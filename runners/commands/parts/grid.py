"""What `ste-ablate run`, `status`, `snapshot` and `analyze` share: the SPEC, --store,
--max-cells and --determinism arguments, the store's checks, and the table of a grid's cells."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from runners.determinism import MODES as DETERMINISM_MODES
from runners.determinism import pinned_mode
from runners.errors import UserError
from runners.grids.limits import MAX_CELLS
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
    add_max_cells(parser)


def add_max_cells(parser: argparse.ArgumentParser) -> None:
    """Add --max-cells: the most cells a spec may expand to."""
    parser.add_argument(
        "--max-cells",
        type=at_least_one("--max-cells", "a number of cells"),
        default=MAX_CELLS,
        metavar="N",
        help=f"refuse specs of more than N cells (default {MAX_CELLS})",
    )


DETERMINISM_HELP = (
    "the cells as `run --determinism MODE` trained them: the spec's with this determinism, and "
    "the run ids that follow from it (default: the spec's determinism)"
)


def add_determinism(parser: argparse.ArgumentParser, help_text: str = DETERMINISM_HELP) -> None:
    """Add --determinism MODE (portable or machine), which overrides the spec's."""
    parser.add_argument("--determinism", choices=DETERMINISM_MODES, help=help_text)


def with_determinism(spec: Spec, mode: str | None) -> Spec:
    """`spec` with every cell's `determinism` set to `mode` (None: the spec as it is).

    The run ids follow (a portable run's id includes its determinism), and a `determinism`
    axis takes the new value too.

    Raises:
        UserError: the override would make two cells one (a `determinism` axis with two values).
    """
    if mode is None:
        return spec
    cells = [
        Cell(
            c.config.replace(determinism=mode),
            {**c.factors, **({"determinism": mode} if "determinism" in c.factors else {})},
        )
        for c in spec.cells
    ]
    if len({c.run_id for c in cells}) < len(cells):
        raise UserError(
            f"--determinism {mode} would make cells of {spec.name} identical (its determinism "
            "axis has several values): drop the flag or the axis"
        )
    return replace(spec, cells=cells)


def check_determinism(cells: list[Cell]) -> None:
    """One determinism per invocation, the one `ste-ablate` pinned before torch loaded."""
    modes = sorted({c.config.determinism for c in cells})
    if len(modes) > 1:
        raise UserError(
            f"the spec mixes determinism modes ({', '.join(modes)}): CPU kernels are chosen once "
            "per process, so put each mode in its own spec"
        )
    pinned = pinned_mode()
    if modes and pinned is not None and modes[0] != pinned:
        raise UserError(
            f"the spec's cells train with determinism {modes[0]!r} but this process pinned "
            f"{pinned!r}; pass --determinism {modes[0]} to match"
        )


def at_least_one(flag: str, what: str) -> Any:
    """An argparse type: a whole number >= 1 for `flag` (one-line errors naming it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be at least 1, got {value}")
        return value

    return parse


def check_store(store: Path) -> None:
    """A store that exists must be a folder (a file there is a mistyped --store: UserError), and
    a path that cannot be looked up (a symlink loop) is a UserError too."""
    try:
        os.stat(store)
    except (FileNotFoundError, NotADirectoryError):
        return  # created when the first cell is written (`run` checks it can write there)
    except OSError as exc:
        raise UserError(f"store {store} cannot be used: {exc.strerror or exc}") from None
    if not store.is_dir():
        raise UserError(f"store {store} is not a folder")


def thread_mix_warning(store: Path, run_ids: list[str]) -> str | None:
    """A warning when these cells were trained on the CPU with different torch thread counts.

    CPU results depend on the count: such cells are each right, but not what one rerun of the
    spec with one count would give (e.g. some cells from `--workers N`, others sequential).
    """
    counts: Counter[int] = Counter()
    for run_id in run_ids:
        document = run_store.read_config(run_store.run_dir(store, run_id)) or {}
        runtime = document.get("runtime")
        if isinstance(runtime, dict) and runtime.get("device") == "cpu":
            threads = runtime.get("torch_threads")
            if isinstance(threads, int):
                counts[threads] += 1
    if len(counts) < 2:
        return None
    mix = ", ".join(f"{n} cells with {t}" for t, n in sorted(counts.items()))
    return (
        f"cells were trained on the CPU with different torch thread counts ({mix}); CPU results "
        "depend on it, so a rerun with one count gives other numbers"
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
    """Print one row per cell: run id, axis values, state; with `infos` epochs, test MSE (the
    VAE's test bound for a VAE grid) and
    (when a cell has one) why it is not completed, with `slurm_states` SLURM's state, with
    `action` what `run` would do."""
    headers = ["run_id", *spec.axes, "state"]
    whys = {c.run_id: _why(states[c.run_id], infos[c.run_id]) for c in cells} if infos else {}
    show_why = any(whys.values())
    # The headline metric: the article's test MSE, or the Bernoulli VAE's test bound.
    metric = "test_mse"
    if infos is not None and any(
        (infos[c.run_id].summary or {}).get("test_iwae_bound") is not None for c in cells
    ):
        metric = "test_iwae_bound"
    if infos is not None:
        headers += ["epochs", metric, *(["why"] if show_why else [])]
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
            value = summary.get(metric)
            epochs = summary.get("epochs_done")
            row += [
                "" if epochs is None else str(epochs),
                f"{value:.5f}" if isinstance(value, float) else "-",
                *([whys[cell.run_id]] if show_why else []),
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


def _why(state: str, info: run_store.CellInfo) -> str:
    """Why a cell is not completed, in a few words: its summary's error, or what is wrong with
    its files."""
    if state in ("completed", "missing", "running"):
        return ""
    text = (info.summary or {}).get("error") or info.problem or "no summary.json (stopped early)"
    text = " ".join(str(text).split())
    return text if len(text) <= 70 else text[:67] + "..."


def _show(value: Any) -> str:
    return "-" if value is None else str(value)
