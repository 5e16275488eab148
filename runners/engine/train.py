"""The training engine: one epoch loop that trains K >= 1 runs in step into the run store.

`train_runs(configs, store)` trains (or resumes, or just returns) the cells of `configs`;
`train_run(config, store)` is the same for one cell: a single run is a stack of one.

- Each run keeps its own state (`runners.training.state.RunState`: model, optimiser, both
  generators, position, records) and bookkeeping (`runners.engine.run.Run`: folder,
  checkpoint, logs, tracker, summary); only the step is shared, as `runners.speed.stacking`
  chooses ("looped": each run's own step in turn, bit-identical to separate runs; "grouped": one
  grouped model on CUDA).
- Each epoch: train with Adam on MSE (the article's recipe), evaluate on the test set in eval
  mode, write checkpoint.pt, metrics.jsonl and steps.jsonl (atomically). The last epoch adds
  the digit probe; then the reconstruction figure and summary.json.
- Resume: a valid checkpoint without a final summary continues where it stopped, to the bit.
  On the CPU a run keeps the torch thread count it started with unless `config.num_threads`
  says otherwise (results depend on it); runs train together only at equal positions and
  thread counts.
- A non-finite loss ends a run as "diverged" (the others go on); SIGINT/SIGTERM finishes the
  current step, writes checkpoints and ends the runs as "interrupted"; any other exception ends
  them as "failed".
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.determinism import check_active
from runners.engine.claims import CellBusyError, claim_cells, final_summary
from runners.engine.loop import BatchLoop, step_mode
from runners.engine.progress import stack_bar
from runners.engine.run import Run
from runners.speed.stacking import check_mode, check_stackable
from runners.store import format as st
from runners.tasks.lookup import get_task
from runners.tracking.tracker import Tracker
from runners.training.device import cudnn_autotune, elapsed, resolve_device
from runners.training.process import torch_settings
from runners.training.stop import INTERRUPT_EXIT_CODES, StopOnSignal


def train_run(
    config: RunConfig,
    store: str | Path,
    *,
    tracker: Tracker | None = None,
    progress: bool | None = None,
    raise_errors: bool = False,
) -> dict[str, Any]:
    """Train the cell `config.run_id` in `store` (or resume it, or return its final summary).

    Args:
        config: the run (`config.stack` is a setting of the executors; this trains one run).
        store: the run store's root folder.
        tracker: experiment tracker; its errors never stop training.
        progress: None = a tqdm bar on a terminal, log lines otherwise; True = always show;
            False = silent.
        raise_errors: re-raise an exception after recording the run as "failed" (default: return
            the "failed" summary, as executors need).

    Returns:
        The summary dict written to summary.json.

    Raises:
        UserError: bad device, missing data, or the cell is locked by another process
            (`CellBusyError`); these are raised before anything is written.
    """
    return train_runs(
        [config], store, trackers=[tracker], progress=progress, raise_errors=raise_errors
    )[0]


def train_runs(
    configs: Sequence[RunConfig],
    store: str | Path,
    *,
    trackers: Sequence[Tracker | None] | None = None,
    progress: bool | None = None,
    raise_errors: bool = False,
    mode: str | None = None,
) -> list[dict[str, Any]]:
    """Train the cells `configs` in `store` in step; returns their summaries in order.

    Cells already final are returned as they are; the others are trained (or resumed) together.
    Members resumed at different positions are trained as separate stacks, one after another.

    Args:
        configs: the cells (equal but for estimator and seed: `check_stackable`).
        store: the run store's root folder.
        trackers: one tracker (or None) per config.
        progress: as for `train_run`; a stack shows one step bar and each member's epoch lines.
        raise_errors: re-raise after recording failures (tests).
        mode: for more than one cell, "grouped" or "looped" (None: the device's default,
            `runners.speed.stacking.default_mode`). A single cell trains its own model.

    Raises:
        NotStackableError, UserError (bad device, missing data, a cell locked elsewhere).
    """
    configs = list(configs)
    check_stackable(configs)
    check_mode(mode)
    trackers = list(trackers) if trackers is not None else [None] * len(configs)
    if len(trackers) != len(configs):
        raise ValueError(f"{len(trackers)} trackers for {len(configs)} runs")
    folders = [st.run_dir(store, c.run_id) for c in configs]
    summaries: list[dict[str, Any] | None] = [final_summary(f) for f in folders]
    todo = [n for n, summary in enumerate(summaries) if summary is None]
    if not todo:
        return summaries  # type: ignore[return-value]
    first = configs[todo[0]]
    device = resolve_device(first.device)
    check_active(first.determinism)  # stackable configs share it
    task = get_task(first.task)  # stackable configs share it
    data = task.prepare_data(first, device)
    stacked = len(configs) > 1
    with claim_cells([folders[n] for n in todo]) as claim:
        if claim.busy:
            run_id = configs[todo[claim.busy[0]]].run_id
            raise CellBusyError(f"run {run_id} is being trained by another process")
        for index, summary in claim.final.items():  # finished by another process meanwhile
            summaries[todo[index]] = summary
        held = [todo[index] for index in claim.held]
        with (
            torch_settings(first, device),
            cudnn_autotune(device, enabled=stacked),
            StopOnSignal() as stop,
        ):
            runs = [Run(configs[n], folders[n], device, data, trackers[n], progress) for n in held]
            mode = step_mode(mode, device, stacked, task)
            engine = Engine(runs, stop, mode, stacked=stacked, progress=progress)
            for n, summary in zip(held, engine.train(raise_errors), strict=True):
                summaries[n] = summary
    return summaries  # type: ignore[return-value]


def exit_code(summary: dict[str, Any]) -> int:
    """The CLI's exit code for a run's summary: 0 completed, 130/143 interrupted, 1 otherwise."""
    status = summary.get("status")
    if status == "completed":
        return 0
    if status == "interrupted":
        error = summary.get("error") or ""
        return next((code for name, code in INTERRUPT_EXIT_CODES.items() if name in error), 130)
    return 1


class Engine:
    """Trains runs in step: each run's own bookkeeping, one epoch loop, shared steps.

    Args:
        runs: the runs (prepared here), in the caller's order.
        stop: the signal flag, checked after every step.
        mode: "looped" or "grouped" (`runners.speed.stacking.stack_steps`).
        stacked: the runs are a stack, which shows one step bar; a lone run shows its own.
        progress: as for `train_run`.
    """

    def __init__(
        self,
        runs: list[Run],
        stop: StopOnSignal,
        mode: str,
        *,
        stacked: bool,
        progress: bool | None,
    ) -> None:
        self.given = list(runs)
        # Same-estimator members adjacent: one estimator call serves them (StackedAutoencoder).
        self.runs = sorted(runs, key=lambda r: (r.config.estimator, r.config.seed))
        self.stop, self.mode, self.stacked = stop, mode, stacked
        self.bar = stack_bar(progress, len(runs)) if stacked else None

    def train(self, raise_errors: bool) -> list[dict[str, Any]]:
        """Prepare every run, train, finish; summaries in the runs' given order."""
        error: BaseException | None = None
        active = []
        threads = torch.get_num_threads()  # after the config's num_threads (torch_settings)
        for run in self.runs:
            # A resumed run sets its recorded thread count; the next fresh one must record
            # (and train with) the process's count, as it would alone.
            torch.set_num_threads(threads)
            try:
                run.prepare()
                active.append(run)
            except Exception as exc:
                error = error or exc
                run.outcome = _failed(exc)
        try:
            # Runs train together when they stand at the same position and, on the CPU, use
            # the same thread count (results depend on it).
            by_position = defaultdict(list)
            for run in active:
                state = run.state
                by_position[(state.epoch, state.step_in_epoch, state.torch_threads)].append(run)
            for group in by_position.values():
                if self.stop:  # stopped while an earlier group trained: leave this one as is
                    for run in group:
                        run.outcome = ("interrupted", self.stop.message)
                    continue
                self._train(group)
        except Exception as exc:
            error = error or exc
            for run in active:
                run.outcome = run.outcome or _failed(exc)
        finally:
            if self.bar is not None:
                self.bar.close()
        summaries = {}
        for run in self.runs:
            status, message = run.outcome or ("failed", "not trained")
            if status == "completed":
                try:
                    run.write_figure()
                except Exception as exc:
                    error = error or exc
                    status, message = _failed(exc)
            summaries[id(run)] = run.finish(status, message)
        if error is not None and raise_errors:
            raise error
        return [summaries[id(run)] for run in self.given]

    def _train(self, runs: list[Run]) -> None:
        """The epoch loop: train runs that stand at the same position to the end (or a stop)."""
        first = runs[0]
        device, config = first.device, first.config
        if device.type == "cpu":
            torch.set_num_threads(first.state.train_threads)  # torch_settings restores it
        loop = BatchLoop(runs, self.mode, stop=self.stop, bar=self.bar)
        if not self.stacked:
            data = first.data
            first.progress.start(first.state.step, len(data.train), len(data.test), device)
        while loop.runs and loop.runs[0].state.epoch < config.epochs:
            epoch = loop.start_epoch()
            earlier = {id(run): run.state.epoch_train_time for run in loop.runs}  # earlier sessions
            started = time.perf_counter()
            loop.run(epoch)
            if not loop.runs:  # all diverged
                return
            if loop.stopped:
                loop.steps.unload()
                trained = elapsed(device, started)
                for run in loop.runs:
                    run.interrupt(trained, self.stop.message)
                return
            trained = elapsed(device, started)
            loop.steps.unload()
            for run in list(loop.runs):
                run.state.epoch_train_time += trained
                if not run.close_epoch(epoch, started - earlier[id(run)]):
                    loop.drop([run])
            if self.stop and loop.runs and epoch < config.epochs:
                for run in loop.runs:
                    run.outcome = ("interrupted", self.stop.message)
                return
        for run in loop.runs:
            run.outcome = ("completed", None)


def _failed(exc: BaseException) -> tuple[str, str]:
    return "failed", f"{type(exc).__name__}: {exc}"
