"""The SLURM executor: cells as one job array, submitted through submitit.

The cells become one SLURM job array (`SlurmOptions.cells_per_task` cells per array task) and
each task runs `runners.executors.cells.execute_cell`, the unit of work of local execution, into
the same run store. The store (and the Python environment) must be on storage every node sees.

- The backend is `submitit.SlurmExecutor`, named explicitly: submitit's auto-detection picks SLURM
  whenever the client tools are installed, even with no daemon running.
- Every submission carries a time limit. SLURM signals a task 90 s (less for short limits)
  before its limit, and on preemption; the cell checkpoints and submitit requeues the task
  (`runners.executors.slurm.task.CellBatch`, a `submitit.helpers.Checkpointable`); `scancel`
  leaves the cell interrupted and the next submission resubmits it. Either way the cell resumes
  from its checkpoint.
- Each submission is recorded atomically in STORE/slurm/<spec>.json
  (`runners.executors.slurm.record`); `slurm_states` there reads it back and asks squeue/sacct.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import submitit
from tqdm import tqdm

from runners.determinism import shell_setup
from runners.errors import UserError
from runners.executors.base import GridOutcome
from runners.executors.cells import CellTask, plan_stacks
from runners.executors.slurm.options import SlurmOptions
from runners.executors.slurm.record import LIVE_STATES, record_submission, slurm_states
from runners.executors.slurm.task import CellBatch
from runners.store import format as run_store


@dataclass(frozen=True)
class Submission:
    """What `SlurmExecutor.submit` did.

    Attributes:
        spec_name: the spec the cells belong to (names the record and the jobs).
        array_id: the job array's id, None when nothing was submitted.
        array_tasks: number of array tasks submitted.
        submitted: run ids submitted now.
        queued: run ids left alone because an earlier submission's task is still live.
        logs: the folder of the tasks' logs.
    """

    spec_name: str
    array_id: str | None
    array_tasks: int
    submitted: tuple[str, ...]
    queued: tuple[str, ...]
    logs: Path


@dataclass
class SlurmExecutor:
    """Submit cells to SLURM as one job array, and follow them.

    Attributes:
        store: the run store (must be visible from every node).
        options: resources and packing of the array tasks.
        poll_s: seconds between two looks at the cells while waiting.
        follow: whether `run` waits for the array tasks (False: it returns once submitted).
        on_submit: called with the `Submission` as soon as it is made.
        on_progress: gets the progress lines while `run` waits (when no bar is drawn).
    """

    store: Path
    options: SlurmOptions = field(default_factory=SlurmOptions)
    poll_s: float = 1.0
    follow: bool = True
    on_submit: Callable[[Submission], None] | None = None
    on_progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self.store = Path(self.store).resolve()

    def run(self, tasks: Sequence[CellTask]) -> GridOutcome:
        """Submit the cells; with `follow`, wait until none of their array tasks is live and
        return the cells as the store has them (else an empty outcome)."""
        submission = self.submit(tasks)
        if self.on_submit is not None:
            self.on_submit(submission)
        if not self.follow:
            return GridOutcome()
        return self.wait(submission.spec_name, [t.run_id for t in tasks], self.on_progress)

    def submit(self, tasks: Sequence[CellTask]) -> Submission:
        """Submit the cells as one job array, and record the submission.

        Cells already final, or already queued or running in an earlier submission, are skipped.

        Raises:
            UserError: SLURM's tools are missing, the partition is unknown, or sbatch refused.
        """
        check_cluster(self.options)
        spec_name = spec_name_of(tasks)
        live = {r for r, s in slurm_states(self.store, spec_name).items() if s in LIVE_STATES}
        todo = []
        for task in tasks:
            state = run_store.cell_state(run_store.run_dir(self.store, task.run_id))
            if state in run_store.FINAL_STATES:
                continue
            if task.run_id not in live:
                todo.append(_absolute(task, self.store))
        queued = tuple(t.run_id for t in tasks if t.run_id in live)
        logs = self.store / "slurm" / "logs"
        if not todo:
            return Submission(spec_name, None, 0, (), queued, logs)
        array_id, task_ids = self._submit_array(todo, spec_name, logs)
        submitted = tuple(t.run_id for t in todo)
        return Submission(spec_name, array_id, len(set(task_ids.values())), submitted, queued, logs)

    def _submit_array(
        self, todo: list[CellTask], spec_name: str, logs: Path
    ) -> tuple[str, dict[str, str]]:
        created = [p for p in (self.store / "slurm", logs) if not p.exists()]
        logs.mkdir(parents=True, exist_ok=True)
        before = set(logs.iterdir())
        executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=3)
        params = self.options.executor_parameters(f"ste-{spec_name}")
        # The tasks' CPU kernels are chosen when torch loads there: export this process's pins.
        params["setup"] = [*params.get("setup", []), *shell_setup()]
        executor.update_parameters(**params)
        stack = self.options.stack_size()
        chunks = task_chunks(todo, self.options.chunk_size(), stack)
        try:
            with executor.batch():
                jobs = [
                    executor.submit(CellBatch(chunk, stack=stack, mode=self.options.stack_mode))
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
        record_submission(self.store, spec_name, array_id, task_ids, asdict(self.options), logs)
        return array_id, task_ids

    def wait(
        self,
        spec_name: str,
        run_ids: Sequence[str],
        on_progress: Callable[[str], None] | None = None,
    ) -> GridOutcome:
        """Follow the cells' array tasks until none is live; the cells as the store has them.

        A bar shows the cells final when stderr is a terminal; otherwise each changed progress
        line goes to `on_progress`. Ctrl-C stops the wait (not the array): the outcome's
        `signum` is then SIGINT.
        """
        run_ids = list(run_ids)
        bar = tqdm(total=len(run_ids), desc="cells", unit="cell", disable=not sys.stderr.isatty())
        last = ""
        quiet = 0  # consecutive polls without a live task
        slurm: dict[str, str] = {}
        try:
            while True:
                slurm = {
                    r: s for r, s in slurm_states(self.store, spec_name).items() if r in run_ids
                }
                cells = {r: run_store.cell_state(run_store.run_dir(self.store, r)) for r in run_ids}
                final = sum(s in run_store.FINAL_STATES or s == "failed" for s in cells.values())
                live = Counter(s for s in slurm.values() if s in LIVE_STATES)
                bar.n = final
                bar.set_postfix({k.lower(): v for k, v in sorted(live.items())}, refresh=True)
                line = f"{final}/{len(run_ids)} cells final; " + (
                    ", ".join(f"{n} {s.lower()}" for s, n in sorted(live.items())) or "no task live"
                )
                if line != last and bar.disable and on_progress is not None:
                    on_progress(line)
                    last = line
                quiet = 0 if live else quiet + 1
                # A failed squeue call reads as "no live task": believe it only when repeated.
                if quiet >= 3 or (not live and final == len(run_ids)):
                    break
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            return GridOutcome(signum=signal.SIGINT, job_states=slurm)
        finally:
            bar.close()
        return GridOutcome(summaries=self._summaries(run_ids), job_states=slurm)

    def _summaries(self, run_ids: list[str]) -> dict[str, dict]:
        """Each cell's summary with its state in the store as `status` (and why, as `error`)."""
        summaries = {}
        for run_id in run_ids:
            info = run_store.cell_info(run_store.run_dir(self.store, run_id))
            summary = dict(info.summary or {})
            error = summary.get("error") or info.problem
            summaries[run_id] = {**summary, "run_id": run_id, "status": info.state, "error": error}
        return summaries


def check_cluster(options: SlurmOptions) -> None:
    """Check that SLURM can take a submission with these options, before anything is written.

    Raises:
        UserError: sbatch is not on PATH, or the partition is unknown.
    """
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


def spec_name_of(tasks: Sequence[CellTask]) -> str:
    """The spec the cells belong to (the first one named), else "cells"."""
    return next((t.spec_name for t in tasks if t.spec_name), None) or "cells"


def task_chunks(todo: list[CellTask], size: int, stack: int) -> list[list[CellTask]]:
    """The cells of each array task: whole stacks (`runners.executors.cells.plan_stacks`),
    packed in order into tasks of at most `size` cells (`size` >= `stack`)."""
    chunks: list[list[CellTask]] = []
    for unit in plan_stacks(todo, stack):
        if not chunks or len(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1].extend(unit)
    return chunks


def _absolute(task: CellTask, store: Path) -> CellTask:
    """The task with absolute paths: a job may start in another folder than this process."""
    config, wandb = task.config, task.wandb
    if config.data_root and not os.path.isabs(config.data_root):
        config = config.replace(data_root=os.path.abspath(config.data_root))
    if wandb.directory and not os.path.isabs(wandb.directory):
        wandb = replace(wandb, directory=os.path.abspath(wandb.directory))
    # progress None: one log line per epoch in the task's log (no terminal there).
    return replace(task, config=config, store=str(store), wandb=wandb, progress=None)
