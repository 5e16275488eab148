"""`ste-ablate run SPEC`: train a grid's missing cells, here or on SLURM.

`run` validates the whole spec first (exit 2, nothing written, on any problem), writes the spec
index STORE/specs/<name>.json, then runs only the cells that are not final: completed and
diverged cells are never retrained; failed, interrupted and missing ones are (interrupted ones
resume from their checkpoint). Cells another process is training (lock held) are left to it and
reported as running. Exit codes: 0 = every cell of the spec completed; 1 = some cell is not
completed (failed, diverged, running elsewhere, not submitted); 2 = bad input; 128 + N = stopped by
signal N (130 for Ctrl-C, 143 for SIGTERM), the cell in training checkpointed as interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from runners.commands.parts import slurm as run_slurm
from runners.commands.parts.grid import (
    add_determinism,
    add_spec_and_store,
    at_least_one,
    check_determinism,
    check_store,
    print_cells,
    with_determinism,
)
from runners.errors import UserError
from runners.executors.cells import CellTask
from runners.executors.display import ProgressOptions
from runners.executors.local import local_executor, plan_workers
from runners.grids.spec import Cell, Spec, load_spec
from runners.speed.stack_size import StackSize, decide_stack
from runners.store import format as run_store
from runners.store.format import atomic_write_json
from runners.store.lock import folder_lock
from runners.tracking.wandb_tracker import (
    DEFAULT_PROJECT,
    WANDB_ALIASES,
    WANDB_MODES,
    WandbOptions,
    resolve_options,
    wandb_root,
)
from runners.training.data import MissingDataError, load_arrays
from runners.training.device import device_kind, resolve_device

_RUN_EPILOG = """\
examples:
  ste-ablate run ablations/quickstart.yaml                    sequential, W&B auto
  ste-ablate run ablations/estimators.yaml --workers 4 --wandb offline
  ste-ablate run ablations/quickstart.yaml --dry-run          list cells, write nothing
  ste-ablate run ablations/estimators.yaml --device cuda --stack 16
                                                              16 cells at a time on one GPU
  ste-ablate status ablations/quickstart.yaml                 table of cell states

Rerunning a spec runs only what is missing or unfinished. Completed and diverged cells are
final; failed and interrupted cells rerun (interrupted ones resume from the step where
they stopped, bit-identical on CPU). Two `run` processes on one store share the work: each skips
the cells the other holds (reported as running) instead of waiting for them.

Stacking (--stack K, or `stack: K` in the spec's base): up to K cells that differ only in
estimator and seed train together in one process, each with its own weights, batch order,
estimator, BatchNorm statistics, store entry and W&B run. It is a speed setting only: on the CPU
stacked cells are bit-identical to unstacked ones; on a GPU they run as one grouped model (equal
up to float rounding). Default: 1 on the CPU, up to 32 per GPU. --stack 1 turns it off.

W&B (--wandb): auto = online when credentials are configured (WANDB_API_KEY or `wandb login`),
else offline (upload later with `wandb sync STORE/wandb/offline-run-*`); WANDB_MODE, when set,
decides in auto mode. W&B files go to STORE/wandb unless WANDB_DIR is set. A W&B failure never
stops training: the store is the source of truth.

exit codes: 0 every cell completed; 1 some cell failed, diverged or is still running elsewhere;
2 bad input (nothing written); 130/143 stopped by SIGINT/SIGTERM (the cell in training checkpointed).
"""


def register(subparsers: Any) -> None:
    """Add the ``run`` command."""
    run = subparsers.add_parser(
        "run",
        help="run an ablation grid (only its missing or unfinished cells)",
        description="Validate an ablation spec, then train every cell of its grid that is not "
        "finished yet, into the run store, with W&B tracking.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_spec_and_store(run)
    run.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="worker processes (default: one per GPU when there are several, else 1: "
        "sequential in this process)",
    )
    run.add_argument(
        "--wandb",
        type=lambda text: WANDB_ALIASES.get(text, text),
        choices=WANDB_MODES,
        default="auto",
        help="W&B mode: auto, online, offline or disabled (also: off) (default: auto, see below)",
    )
    run.add_argument(
        "--wandb-project",
        metavar="P",
        help=f"W&B project (default: the spec's wandb.project, else {DEFAULT_PROJECT!r})",
    )
    run.add_argument("--wandb-entity", metavar="E", help="W&B entity (default: the spec's)")
    run.add_argument(
        "--dry-run", action="store_true", help="list the cells and which would run; write nothing"
    )
    run.add_argument("--device", metavar="D", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument(
        "--stack",
        type=_stack,
        default=None,
        metavar="K",
        help="train up to K compatible cells together in one process (default: the spec's "
        "stack, else 1 on the CPU and up to 32 per GPU; 1 = off)",
    )
    run.add_argument(
        "--stack-mode",
        choices=("grouped", "looped"),
        default=None,
        help="how a stack of 2 or more cells trains: one grouped model, or each member in turn "
        "(default: grouped on CUDA, looped on the CPU, where it is bit-identical to separate "
        "runs)",
    )
    run.add_argument("--data-root", metavar="DIR", help="folder holding MNIST/raw/ (full MNIST)")
    add_determinism(
        run,
        "CPU kernels for every cell, overriding the spec's `determinism` (default: the spec's, "
        "else portable); pinned before torch loads. A portable run's id includes its "
        "determinism, so the cells get the ids of that mode: pass the same flag to status, "
        "snapshot and analyze",
    )
    run.add_argument(
        "--num-threads",
        type=at_least_one("--num-threads", "a number of threads"),
        default=None,
        metavar="N",
        help="torch CPU threads per process (default: the spec's num_threads, else torch's); "
        "CPU results depend on it, so keep it fixed across a study",
    )
    run.add_argument(
        "--compile",
        action="store_const",
        const=True,
        default=None,
        help="torch.compile every cell's forward (GPU extra; eager fallback with a warning)",
    )
    run.add_argument(
        "--cuda-graph",
        action="store_const",
        const=True,
        default=None,
        help="capture each training step in a CUDA graph (CUDA, deterministic non-annealed "
        "estimators; eager fallback with a warning)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="where cells run (default: local)",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bars, only one line per cell"
    )
    run_slurm.add_arguments(run)
    run.set_defaults(func=cmd_run)


_workers = at_least_one("--workers", "a number of workers")
_stack = at_least_one("--stack", "a stack size")


def spec_stack(cells: list[Cell]) -> int | None:
    """The stack size the spec sets (`stack:`; the largest if cells differ), else None."""
    given = [c.config.stack for c in cells if c.config.stack is not None]
    return max(given) if given else None


def stack_size(requested: int | None, todo: list[Cell], workers: int) -> StackSize:
    """How many cells train together here, and why (`runners.speed.stack_size.decide_stack`
    on --stack, the spec's `stack`, and the kind of device the cells name)."""

    kind = device_kind(todo[0].config.device)
    return decide_stack(requested, spec_stack(todo), kind, len(todo), workers)


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """`ste-ablate run`: returns the exit code (see the module docstring)."""
    spec = with_determinism(load_spec(args.spec, max_cells=args.max_cells), args.determinism)
    cells = _with_execution(
        spec.cells,
        device=args.device,
        data_root=args.data_root,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        num_threads=args.num_threads,
    )
    check_determinism(cells)
    store = Path(args.store)
    check_store(store)
    states = {c.run_id: run_store.cell_state(run_store.run_dir(store, c.run_id)) for c in cells}
    todo = [c for c in cells if states[c.run_id] not in run_store.FINAL_STATES + ("running",)]
    busy = [c for c in cells if states[c.run_id] == "running"]
    done = len(cells) - len(todo) - len(busy)

    print(f"{spec.name}: {len(cells)} cells ({' x '.join(spec.axes)}); store {store}")
    # What the run checks before writing anything, --dry-run included: sbatch and its options,
    # the device (GPUs are on the compute nodes, not here), the data, the store's permissions.
    slurm = run_slurm.preflight(args) if args.executor == "slurm" else None
    if slurm is None:  # also when every cell is final: a device that is not here says so now
        _check_devices(cells)
    if todo:
        _preflight(todo, store, download=not args.dry_run)
    if args.dry_run:
        print_cells(spec, cells, states, action=True)
        tally = Counter(states[c.run_id] for c in todo)
        what = ", ".join(f"{n} {s}" for s, n in sorted(tally.items()))
        print(
            f"{len(todo)} would run ({what or 'none'}), {done} final, {len(busy)} running "
            "elsewhere. --dry-run: nothing was written."
        )
        return 0

    index = run_store.spec_index_path(store, spec.name)
    try:
        with folder_lock(index.parent):
            atomic_write_json(index, spec.index())
    except OSError as exc:  # a read-only or full store: nothing of the grid was written
        raise UserError(f"cannot write to the store {store}: {exc.strerror or exc}") from None
    print(f"{len(todo)} to run, {done} already final, {len(busy)} running elsewhere")
    if not todo:
        return _finish(spec, cells, store, signum=None, started=time.perf_counter())

    wandb = _wandb_options(args, spec, store)
    # Absolute paths: workers and array tasks may start in another folder.
    root = str(store.resolve())
    tasks = [
        CellTask(c.config, root, spec.name, dict(c.factors), wandb, progress=None) for c in todo
    ]
    if slurm is not None:
        # The compute nodes' GPUs are not visible here: the SLURM options name the device.
        stack = slurm.stack_size(spec=spec_stack(todo))
        return run_slurm.run_on_slurm(
            tasks, replace(slurm, stack=stack), store, wait=args.wait, spec_arg=args.spec
        )

    workers, devices = plan_workers(args.workers, todo[0].config.device)
    stack, why = stack_size(args.stack, todo, workers)
    if args.stack_mode and stack == 1:
        print(
            f"ste-ablate: warning: --stack-mode {args.stack_mode} applies to stacks of 2 or more "
            "cells; add --stack K",
            file=sys.stderr,
        )
    if stack > 1:
        how = f", {args.stack_mode}" if args.stack_mode else ""
        print(f"stacks of up to {stack} cells ({why}{how}; --stack 1 turns stacking off)")
    if workers > 1:
        print(f"{workers} worker processes" + (f" on {', '.join(devices)}" if devices else ""))
        tasks = [replace(t, progress=False) for t in tasks]  # N bars would garble the terminal
    elif args.no_progress:
        tasks = [replace(t, progress=False) for t in tasks]
    started = time.perf_counter()
    progress = ProgressOptions(
        total=len(cells), done_before=done, show=False if args.no_progress else None
    )
    executor = local_executor(
        workers, devices, stack=stack, stack_mode=args.stack_mode, progress=progress
    )
    outcome = executor.run(tasks)
    if wandb.mode == "offline":
        where = wandb_root(wandb)
        print(
            f"W&B runs are offline; look at them with: wandb leet {where}; "
            f"upload them with: wandb sync {where}/offline-run-*"
        )
    return _finish(spec, cells, store, signum=outcome.signum, started=started)


def _with_execution(cells: list[Cell], **fields: Any) -> list[Cell]:
    """Apply --device / --data-root / --compile / --cuda-graph / --num-threads (execution
    fields: the run ids do not change); None means "not given"."""
    changes = {k: v for k, v in fields.items() if v is not None}
    if not changes:
        return cells
    return [Cell(c.config.replace(**changes), c.factors) for c in cells]


def _check_devices(cells: list[Cell]) -> None:
    """UserError (one line) when a cell's device is not on this machine."""
    for device in sorted({c.config.device for c in cells}):
        resolve_device(device)


def _preflight(todo: list[Cell], store: Path, *, download: bool = True) -> None:
    """Fail before writing anything (UserError) when the data is not there, or the store
    cannot be written.

    With `download` False (--dry-run) missing MNIST is not fetched: a warning says the run will
    download it, unless its folder cannot be written, which fails as the run would.
    """
    # Loading once here also means pool workers never download MNIST concurrently.
    for dataset, root in sorted({(c.config.dataset, c.config.data_root or "") for c in todo}):
        try:
            load_arrays(dataset, root or None, download=download)
        except MissingDataError as exc:
            if download or not _writable(exc.folder):
                raise
            print(
                f"ste-ablate: warning: MNIST is not in {exc.folder} yet: the run will try to "
                "download it there (offline, put the four IDX files there first, or pass "
                "--data-root DIR)",
                file=sys.stderr,
            )
    if not _writable(store):
        raise UserError(f"cannot write to the store {store} (not a folder this user may write)")


def _writable(folder: Path) -> bool:
    """Whether `folder` can be written or created (its closest existing ancestor is writable)."""
    path = folder.resolve()
    while not path.exists():
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _wandb_options(args: argparse.Namespace, spec: Spec, store: Path) -> WandbOptions:
    return resolve_options(
        args.wandb,
        store=store,
        project=args.wandb_project or spec.wandb.project,
        entity=args.wandb_entity or spec.wandb.entity,
        group=spec.name,
        tags=spec.wandb.tags,
    )


def _finish(
    spec: Spec, cells: list[Cell], store: Path, *, signum: int | None, started: float
) -> int:
    states = Counter(run_store.cell_state(run_store.run_dir(store, c.run_id)) for c in cells)
    tally = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    print(f"{spec.name}: {tally} ({time.perf_counter() - started:.1f} s)")
    if signum is not None:
        print(f"stopped by signal {signum}; rerun the same command to resume", file=sys.stderr)
        return 128 + int(signum)
    if states["completed"] == len(cells):
        return 0
    if states["running"]:
        print(
            f"{states['running']} cell(s) still being trained by another process: they were "
            "left to it; see `ste-ablate status`",
            file=sys.stderr,
        )
    return 1
