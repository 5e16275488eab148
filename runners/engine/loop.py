"""The batch loop: runs at one position stepped together, with the engine's per-step bookkeeping.

`BatchLoop` is the one loop over batches in the package. The engine's epoch loop
(`runners.engine.train.Engine`) drives it through whole epochs; the benchmarks
(`runners.bench.ours.OursLoop`) drive it a chunk of steps at a time, so they time what
`train_run` runs. Each step: the estimators' progress, the next batch of every run from its own
seeded epoch order (`RunState.epoch_order`), one shared step (`runners.speed.stacking.stack_steps`:
each run's step strategy, or one grouped model), and each run's step bookkeeping
(`runners.engine.run.Run`): `add_step`, then a read-back (`flush`: step records, tracker,
progress, the divergence check) every `sync_every` steps, at the epoch's last step and on a stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from runners.engine.run import Run
from runners.speed.stacking import StackSteps, default_mode, stack_steps


def step_mode(mode: str | None, device: torch.device, stacked: bool, task: Any) -> str:
    """How a stack steps: `mode` (None: the device's default) for a stack of a groupable task,
    "looped" for a single run or a task that is not groupable."""
    return (mode or default_mode(device)) if stacked and task.groupable else "looped"


class BatchLoop:
    """Trains `runs` (prepared, at the same position) batch after batch.

    Args:
        runs: the runs, each with its `state`; they step in this order.
        mode: "looped" or "grouped" (`step_mode`).
        stop: a flag read after every step (`runners.training.stop.StopOnSignal`); None: never.
        bar: a stack's step bar (tqdm), updated after every step; None: none.

    Attributes:
        runs: the runs still training (a diverged run leaves at its read-back).
        steps: the shared step (`StackSteps`).
        stopped: the last `run` ended on the stop flag.
    """

    def __init__(
        self, runs: Sequence[Run], mode: str, *, stop: Any = None, bar: Any = None
    ) -> None:
        first = runs[0]
        self.runs = list(runs)
        self.bounds = first.bounds
        self.device = first.device
        self.images = first.data.train.images
        self.steps: StackSteps = stack_steps(
            [run.state for run in self.runs], mode, self.images, first.task
        )
        self.stop, self.bar = stop, bar
        self.orders: torch.Tensor | None = None
        self.stopped = False

    @property
    def position(self) -> int:
        """Finished steps of the unfinished epoch."""
        return self.runs[0].state.step_in_epoch

    @property
    def epoch_done(self) -> bool:
        """Every batch of the unfinished epoch has been trained."""
        return self.position >= len(self.bounds)

    def start_epoch(self) -> int:
        """Training mode and every run's order of the unfinished epoch; its number (1-based)."""
        self.steps.train()
        count = len(self.images)
        orders = [run.state.epoch_order(count) for run in self.runs]
        self.orders = torch.stack(orders).to(self.device)
        return self.runs[0].state.epoch + 1

    def run(self, epoch: int, count: int | None = None) -> None:
        """Train the next `count` batches of epoch `epoch` (None: to its end), fewer when the
        epoch ends, every run diverged (`runs` is empty) or the stop flag is set (`stopped`)."""
        bounds = self.bounds
        last = len(bounds) - 1
        first = self.position
        end = len(bounds) if count is None else min(len(bounds), first + count)
        self.stopped = False
        for number in range(first, end):
            begin, stop = bounds[number]
            for run in self.runs:
                run.state.model.binarize.set_progress(run.state.step / run.total_steps)
            losses, norms = self.steps.step(self.orders[:, begin:stop])
            for run, loss, norm in zip(self.runs, losses, norms, strict=True):
                run.add_step(epoch, number, loss, norm)
            if self.bar is not None:
                self.bar.update(1)
            # The one sync with the device: every sync_every steps, at an epoch's end, on a stop.
            if len(self.runs[0].pending) >= self.runs[0].sync_every or number == last or self.stop:
                if not self.flush():
                    return
            # Read again: a signal may arrive during the read-back. Steps not yet read back
            # (the flag came after the check above) are read back before the stop.
            if self.stop:
                self.flush()
                self.stopped = True
                return

    def flush(self) -> bool:
        """Read back every run's pending steps; the runs that diverged leave. False when no run
        is left."""
        diverged = [run for run in self.runs if run.pending and not run.flush()]
        if diverged:
            self.drop(diverged)
        return bool(self.runs)

    def drop(self, leaving: Sequence[Run]) -> None:
        """Stop training these runs (diverged)."""
        kept = [n for n, run in enumerate(self.runs) if run not in leaving]
        if self.orders is not None:
            self.orders = self.orders[kept]
        self.steps.drop([run.state for run in leaving])
        self.runs = [self.runs[n] for n in kept]
