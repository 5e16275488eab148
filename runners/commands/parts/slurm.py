"""The SLURM side of `ste-ablate run --executor slurm`: its flags, and what it prints.

The flags become a `runners.executors.slurm.options.SlurmOptions`; the cells go to
`runners.executors.slurm.executor.SlurmExecutor`; this module turns its submission and, with
--wait, its outcome into lines and an exit code.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runners.errors import UserError
from runners.executors.base import GridOutcome
from runners.executors.cells import CellTask
from runners.executors.slurm.executor import SlurmExecutor, Submission, check_cluster
from runners.executors.slurm.options import DEFAULT_TIME_MIN, SlurmOptions
from runners.executors.slurm.record import latest_tasks, task_log_folders

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


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """The options `add_arguments` defined (missing ones take their defaults), with `run`'s
    --stack and --stack-mode.

    Raises:
        UserError: a --slurm-arg is not KEY=VALUE.
    """
    extra = []
    for item in getattr(args, "slurm_arg", None) or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or any(c.isspace() for c in key):
            raise UserError(f"--slurm-arg expects KEY=VALUE (an sbatch option), got {item!r}")
        extra.append((key.replace("_", "-"), value if sep else True))
    return SlurmOptions(
        partition=getattr(args, "partition", None),
        gpus_per_task=getattr(args, "gpus_per_task", 0) or 0,
        cpus_per_task=getattr(args, "cpus_per_task", 1) or 1,
        mem_gb=getattr(args, "mem_gb", None),
        time_min=getattr(args, "time_min", DEFAULT_TIME_MIN) or DEFAULT_TIME_MIN,
        cells_per_task=getattr(args, "cells_per_task", 1) or 1,
        extra=tuple(extra),
        stack=getattr(args, "stack", None),
        stack_mode=getattr(args, "stack_mode", None),
    )


def preflight(args: argparse.Namespace) -> SlurmOptions:
    """The options, checked against the cluster before anything is written.

    Raises:
        UserError: sbatch is not on PATH, a --slurm-arg is malformed, or the partition is unknown.
    """
    options = options_from_args(args)
    check_cluster(options)
    return options


def run_on_slurm(
    tasks: Sequence[CellTask],
    options: SlurmOptions,
    store: str | Path,
    *,
    wait: bool = False,
    spec_arg: str | None = None,
) -> int:
    """Submit the cells as one job array, say so; with `wait`, follow it to the end.

    Returns:
        The exit code: 0 after a submission without `wait`; with `wait`, 0 when every cell
        completed, else 1 (130 when Ctrl-C stopped the wait; the array goes on).

    Raises:
        UserError: SLURM's tools are missing, or sbatch refused the job.
    """
    made: list[Submission] = []

    def say(submission: Submission) -> None:
        made.append(submission)
        if submission.queued:
            print(f"{len(submission.queued)} cells already queued or running in SLURM")
        if submission.array_id is not None:
            print(
                f"submitted {len(submission.submitted)} cells as SLURM job array "
                f"{submission.array_id} ({submission.array_tasks} tasks)"
            )
            print(
                f"logs: {submission.logs}; follow: ste-ablate status {spec_arg or 'SPEC'} "
                f"--store {Path(store).resolve()}"
            )
        elif not submission.queued:
            print("nothing to submit")

    executor = SlurmExecutor(
        Path(store),
        options,
        follow=wait,
        on_submit=say,
        on_progress=lambda line: print(line, flush=True),
    )
    outcome = executor.run(tasks)
    (submission,) = made
    if not wait or (submission.array_id is None and not submission.queued):
        return 0
    if outcome.signum is not None:
        print("stopped waiting; the job array goes on (scancel it to stop it)", file=sys.stderr)
        return 128 + signal.SIGINT
    return _report(executor.store, submission.spec_name, outcome)


def _report(store: Path, spec_name: str, outcome: GridOutcome) -> int:
    """One line per cell that did not complete (with its task's logs), then the tally."""
    tasks = latest_tasks(store, spec_name)
    logs = task_log_folders(store, spec_name)
    tally: Counter = Counter()
    for run_id, summary in outcome.summaries.items():
        state = summary["status"]
        tally[state] += 1
        if state != "completed":
            error = summary.get("error") or ""
            task = tasks.get(run_id, "?")
            where = f"{logs.get(task) or store / 'slurm' / 'logs'}/{task}"
            print(
                f"{state:<11} {run_id}  slurm {outcome.job_states.get(run_id, '-')} (task {task})"
                + (f"  {error}" if error else "")
                + f"  logs: {where}",
                file=sys.stderr,
            )
    print(f"{spec_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(tally.items())))
    return 0 if tally["completed"] == len(outcome.summaries) else 1
