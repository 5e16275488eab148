"""The SLURM executor: a grid's missing cells as one job array, submitted through submitit.

`ste-ablate run SPEC --executor slurm` calls `submit(tasks, args, store)`: the cells become one
SLURM job array (`--cells-per-task` cells per array task) and each task runs
`runners.executors.cells.execute_cell`, the unit of work of local execution, into the same run store. The
store (and the Python environment) must be on storage every node sees.

- The backend is `submitit.SlurmExecutor`, named explicitly: submitit's auto-detection picks SLURM
  whenever the client tools are installed, even with no daemon running.
- Every submission carries a time limit (`--time-min`). SLURM signals a task 90 s (less for short
  limits) before its limit, and on preemption; the cell checkpoints and submitit requeues the task
  (`runners.executors.slurm_task.CellBatch`, a `submitit.helpers.Checkpointable`); `scancel` leaves the cell
  interrupted and the next `run` resubmits it. Either way the cell resumes from its checkpoint.
- Each submission is recorded atomically in STORE/slurm/<spec>.json (`runners.executors.slurm_record`);
  `slurm_states` reads it back and asks squeue/sacct, for `ste-ablate status`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from runners.errors import UserError
from runners.executors.cells import CellTask
from runners.executors.slurm_record import (
    LIVE_STATES,
    latest_tasks,
    read_record,
    record_submission,
    slurm_states,
)
from runners.executors.slurm_task import CellBatch
from runners.store import cells as run_store

__all__ = ["SlurmOptions", "add_arguments", "preflight", "slurm_states", "submit", "wait_for_cells"]
DEFAULT_TIME_MIN = 120
_HELP = (
    "The run store (--store) and this Python environment must be "
    "on storage that every compute node sees (a shared filesystem): the array tasks write the "
    "cells there. Without --wait, `run` returns after submission and prints the job id; follow it "
    "with `ste-ablate status SPEC`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the SLURM options of `ste-ablate run` (used with `--executor slurm`)."""
    group = parser.add_argument_group("SLURM (--executor slurm)", _HELP)
    group.add_argument("--partition", metavar="P", help="partition (default: the cluster's)")
    group.add_argument(
        "--gpus-per-task",
        type=_count(0),
        default=0,
        metavar="G",
        help="GPUs per array task (default 0)",
    )
    group.add_argument(
        "--cpus-per-task", type=_count(1), default=1, metavar="C",
        help="CPU cores per array task; torch uses this many threads (default 1)",
    )  # fmt: skip
    group.add_argument("--mem-gb", type=_positive_float, metavar="M", help="memory per task, GB")
    group.add_argument(
        "--time-min", type=_count(1), default=DEFAULT_TIME_MIN, metavar="T",
        help=f"time limit per task, minutes (default {DEFAULT_TIME_MIN}); a task that reaches it "
        "checkpoints and is requeued, up to 3 times",
    )  # fmt: skip
    group.add_argument(
        "--cells-per-task", type=_count(1), default=1, metavar="N",
        help="cells run by each array task (default 1; raised to --stack K when smaller): one "
        "after another, or in stacks of K (with --gpus-per-task and no --stack: all N together)",
    )  # fmt: skip
    group.add_argument(
        "--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm-arg account=abc --slurm-arg qos=low "
        "(repeatable; KEY alone for a flag)",
    )  # fmt: skip
    group.add_argument(
        "--wait", action="store_true", help="show progress until the array ends (exit 0 when "
        "every submitted cell completed)",
    )  # fmt: skip


def _count(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


@dataclass(frozen=True)
class SlurmOptions:
    """The submission's resources (from the command line)."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = DEFAULT_TIME_MIN
    cells_per_task: int = 1
    extra: tuple[tuple[str, str | bool], ...] = ()
    wait: bool = False
    stack: int | None = None  # cells trained together inside a task (None: automatic)
    stack_mode: str | None = None  # "grouped" / "looped" (None: the node's device decides)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SlurmOptions:
        """Read the options `add_arguments` defined (missing ones take their defaults)."""
        extra = []
        for item in getattr(args, "slurm_arg", None) or []:
            key, sep, value = item.partition("=")
            key = key.strip().lstrip("-")
            if not key or any(c.isspace() for c in key):
                raise UserError(f"--slurm-arg expects KEY=VALUE (an sbatch option), got {item!r}")
            extra.append((key.replace("_", "-"), value if sep else True))
        return cls(
            partition=getattr(args, "partition", None),
            gpus_per_task=getattr(args, "gpus_per_task", 0) or 0,
            cpus_per_task=getattr(args, "cpus_per_task", 1) or 1,
            mem_gb=getattr(args, "mem_gb", None),
            time_min=getattr(args, "time_min", DEFAULT_TIME_MIN) or DEFAULT_TIME_MIN,
            cells_per_task=getattr(args, "cells_per_task", 1) or 1,
            extra=tuple(extra),
            wait=bool(getattr(args, "wait", False)),
            stack=getattr(args, "stack", None),
            stack_mode=getattr(args, "stack_mode", None),
        )

    def stack_size(self) -> int:
        """Cells each task trains together: --stack / the spec's, else, with GPUs, the task's
        cells (at most `runners.training.stacked.GPU_MAX_STACK`), else 1."""
        from runners.speed.stacking import GPU_MAX_STACK

        if self.stack is not None:
            return self.stack
        return min(self.cells_per_task, GPU_MAX_STACK) if self.gpus_per_task else 1

    def chunk_size(self) -> int:
        """Cells per array task: --cells-per-task, raised to the stack size."""
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


# ----------------------------------------------------------------------------- submission


def preflight(args: argparse.Namespace) -> SlurmOptions:
    """Check the SLURM options before anything is written; returns them parsed.

    Raises:
        UserError: sbatch is not on PATH, a --slurm-arg is malformed, or the partition is unknown.
    """
    options = SlurmOptions.from_args(args)
    if shutil.which("sbatch") is None:
        raise UserError(
            "--executor slurm needs SLURM's sbatch on PATH (scripts/slurm-local.sh start brings up "
            "a single-node cluster on this machine)"
        )
    if options.partition:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60, check=False
        )
        known = out.stdout.split()
        if out.returncode == 0 and options.partition not in known:
            raise UserError(
                f"unknown SLURM partition {options.partition!r} (this cluster has: "
                f"{', '.join(known) or 'none'})"
            )
    return options


def submit(tasks: list[CellTask], args: argparse.Namespace, store: str | os.PathLike[str]) -> int:
    """Submit the cells as one job array; with --wait, follow it to the end.

    Cells already final, or already queued or running in an earlier submission, are skipped.

    Args:
        tasks: the cells to run (`ste-ablate run` passes the grid's unfinished cells).
        args: the parsed command line (the options of `add_arguments`).
        store: the run store (must be visible from every node).

    Returns:
        The exit code: 0 after a submission without --wait; with --wait, 0 when every submitted
        cell completed, else 1.

    Raises:
        UserError: SLURM's tools are missing, bad --slurm-arg, or sbatch refused the job.
    """
    options = preflight(args)
    store = Path(store).resolve()
    spec_name = next((t.spec_name for t in tasks if t.spec_name), None) or "cells"
    queued = {r: s for r, s in slurm_states(store, spec_name).items() if s in LIVE_STATES}
    todo = []
    for task in tasks:
        if run_store.cell_state(run_store.run_dir(store, task.run_id)) in run_store.FINAL_STATES:
            continue
        if task.run_id not in queued:
            todo.append(_absolute(task, store))
    if queued:
        print(
            f"{len([t for t in tasks if t.run_id in queued])} cells already queued or running in SLURM"
        )
    array_id = None
    if todo:
        array_id, task_ids = _submit_array(todo, options, store, spec_name)
        n = len(set(task_ids.values()))
        print(f"submitted {len(todo)} cells as SLURM job array {array_id} ({n} tasks)")
        spec_arg = getattr(args, "spec", None) or "SPEC"
        print(
            f"logs: {store / 'slurm' / 'logs'}; follow: ste-ablate status {spec_arg} --store {store}"
        )
    elif not queued:
        print("nothing to submit")
        return 0
    if not options.wait:
        return 0
    wanted = [t.run_id for t in tasks]
    return wait_for_cells(store, spec_name, wanted)


def _absolute(task: CellTask, store: Path) -> CellTask:
    """The task with absolute paths: a job may start in another folder than this process."""
    config, wandb = task.config, task.wandb
    if config.data_root and not os.path.isabs(config.data_root):
        config = config.replace(data_root=os.path.abspath(config.data_root))
    if wandb.directory and not os.path.isabs(wandb.directory):
        wandb = replace(wandb, directory=os.path.abspath(wandb.directory))
    # progress None: one log line per epoch in the task's log (no terminal there).
    return replace(task, config=config, store=str(store), wandb=wandb, progress=None)


def task_chunks(todo: list[CellTask], size: int, stack: int) -> list[list[CellTask]]:
    """The cells of each array task: whole stacks (`runners.training.stacked.plan_stacks`), packed in
    order into tasks of at most `size` cells (`size` >= `stack`)."""
    from runners.executors.cells import plan_stacks

    chunks: list[list[CellTask]] = []
    for unit in plan_stacks(todo, stack):
        if not chunks or len(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1].extend(unit)
    return chunks


def _submit_array(
    todo: list[CellTask], options: SlurmOptions, store: Path, spec_name: str
) -> tuple[str, dict[str, str]]:
    logs = store / "slurm" / "logs"
    created = [p for p in (store / "slurm", logs) if not p.exists()]
    logs.mkdir(parents=True, exist_ok=True)
    before = set(logs.iterdir())
    executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=3)
    executor.update_parameters(**options.executor_parameters(f"ste-{spec_name}"))
    chunks = task_chunks(todo, options.chunk_size(), stack := options.stack_size())
    try:
        with executor.batch():
            jobs = [
                executor.submit(CellBatch(chunk, stack=stack, mode=options.stack_mode))
                for chunk in chunks
            ]
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or getattr(exc, "output", None) or exc
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        # Nothing was submitted: remove submitit's pickles (and the folders, if new).
        for path in set(logs.iterdir()) - before:
            if path.is_file():
                path.unlink()
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise UserError(f"sbatch failed: {' '.join(str(detail).split())}") from None
    task_ids = {
        t.run_id: job.job_id for chunk, job in zip(chunks, jobs, strict=True) for t in chunk
    }
    array_id = jobs[0].job_id.split("_")[0]
    options_record = {k: v for k, v in asdict(options).items() if k != "wait"}
    record_submission(store, spec_name, array_id, task_ids, options_record, logs)
    return array_id, task_ids


# ----------------------------------------------------------------------------- --wait


def wait_for_cells(store: Path, spec_name: str, run_ids: list[str], poll_s: float = 1.0) -> int:
    """Follow the cells' array tasks until none is live; report the outcome.

    Returns:
        0 when every cell completed, else 1 (130 when interrupted by Ctrl-C; the array goes on).
    """
    from tqdm import tqdm

    bar = tqdm(total=len(run_ids), desc="cells", unit="cell", disable=not sys.stderr.isatty())
    last = ""
    quiet = 0  # consecutive polls without a live task
    try:
        while True:
            slurm = {r: s for r, s in slurm_states(store, spec_name).items() if r in run_ids}
            cells = {r: run_store.cell_state(run_store.run_dir(store, r)) for r in run_ids}
            final = sum(s in run_store.FINAL_STATES or s == "failed" for s in cells.values())
            live = Counter(s for s in slurm.values() if s in LIVE_STATES)
            bar.n = final
            bar.set_postfix({k.lower(): v for k, v in sorted(live.items())}, refresh=True)
            line = f"{final}/{len(run_ids)} cells final; " + (
                ", ".join(f"{n} {s.lower()}" for s, n in sorted(live.items())) or "no task live"
            )
            if line != last and bar.disable:
                print(line, flush=True)
                last = line
            quiet = 0 if live else quiet + 1
            # A failed squeue call reads as "no live task": believe it only when repeated.
            if quiet >= 3 or (not live and final == len(run_ids)):
                break
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("stopped waiting; the job array goes on (scancel it to stop it)", file=sys.stderr)
        return 130
    finally:
        bar.close()
    return _report(store, spec_name, run_ids, slurm)


def _report(store: Path, spec_name: str, run_ids: list[str], slurm: dict[str, str]) -> int:
    tasks = latest_tasks(store, spec_name)
    record = read_record(store, spec_name)
    logs = {
        t: s.get("log_folder")
        for s in record["submissions"]
        for t in (s.get("cells") or {}).values()
    }
    tally: Counter = Counter()
    for run_id in run_ids:
        info = run_store.cell_info(run_store.run_dir(store, run_id))
        tally[info.state] += 1
        if info.state != "completed":
            error = (info.summary or {}).get("error") or info.problem or ""
            task = tasks.get(run_id, "?")
            where = f"{logs.get(task) or store / 'slurm' / 'logs'}/{task}"
            print(
                f"{info.state:<11} {run_id}  slurm {slurm.get(run_id, '-')} (task {task})"
                + (f"  {error}" if error else "")
                + f"  logs: {where}",
                file=sys.stderr,
            )
    print(f"{spec_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.items())))
    return 0 if tally["completed"] == len(run_ids) else 1
