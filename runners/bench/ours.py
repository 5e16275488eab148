"""Our training loop for the benchmarks: the engine's `BatchLoop`, driven a chunk of steps at a time.

`OursLoop` builds each run as the engine builds a fresh cell (its `RunState`: model, optimiser and
generators from the run's seed streams; the task's step strategy, or the stack's as
`runners.engine.train.train_runs` chooses it) and trains it through
`runners.engine.loop.BatchLoop`, the loop `train_run` runs: the run's own seeded batch order, the
step, and the per-step bookkeeping (step records, read-back and divergence check, tracker,
progress). At an epoch's end the engine evaluates and writes its files, which its images/s
leaves out; the loop goes straight on to the next epoch's order, as the engine does afterwards.
Nothing is written to a store (a diverged run's logs go to a temporary folder).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from runners.config import MAX_EPOCHS, RunConfig
from runners.engine.loop import BatchLoop, step_mode
from runners.engine.run import Run
from runners.tasks.lookup import get_task
from runners.training.process import torch_settings
from runners.training.state import RunState


class OursLoop:
    """Our loop as `train_run` (or, for several configs, `train_runs`) runs it, for timing.

    Args:
        config: the run (task, dataset, device, precision, batch size...), or a stack's runs
            (equal but for estimator and seed). Their `epochs` become the longest allowed, so the
            loop never runs out of steps (annealed estimators: a schedule over that length).
        data: the task's data on `device` (None: `task.prepare_data`).
        device: where it trains.
        plain: without the fast path of `runners.training.kernels` (plain nn layers, torch's
            default Adam): the reference row that shows what the fast path adds.
        mode: a stack's "looped" or "grouped" (None: as `train_runs` chooses; a given mode holds
            for a single run too).
        adjust: called with each fresh `RunState` before its step is built (a benchmark's
            variant of the model or optimiser).

    Attributes:
        images: training images of the first run so far (a stack trains as many per run).
    """

    def __init__(
        self,
        config: RunConfig | Sequence[RunConfig],
        data: Any,
        device: torch.device,
        plain: bool = False,
        *,
        mode: str | None = None,
        adjust: Callable[[RunState], None] | None = None,
    ) -> None:
        configs = [config] if isinstance(config, RunConfig) else list(config)
        # The engine's order: same-estimator members adjacent (one estimator call serves them).
        configs = sorted(
            (c.replace(epochs=MAX_EPOCHS) for c in configs),
            key=lambda c: (c.estimator, c.seed),
        )
        task = get_task(configs[0].task)
        self.config, self.device = configs[0], device
        self.data = data if data is not None else task.prepare_data(self.config, device)
        self._folder = tempfile.TemporaryDirectory(prefix="ste-bench-runs-")
        runs = []
        with torch_settings(self.config, device):
            for c in configs:
                folder = Path(self._folder.name) / c.run_id
                folder.mkdir()
                run = Run(c, folder, device, self.data, None, False)
                run.state = RunState(c, device, task, fast=not plain)
                run.state.train_threads = torch.get_num_threads()
                if adjust is not None:
                    adjust(run.state)
                runs.append(run)
            mode = mode or step_mode(None, device, len(runs) > 1, task)
            self.loop = BatchLoop(runs, mode)
            self.epoch = self.loop.start_epoch()
        self.images = 0

    @property
    def runs(self) -> list[Run]:
        """The runs training (with their `state`: step records in `state.steps`)."""
        return self.loop.runs

    @property
    def model(self) -> torch.nn.Module:
        """The first run's model (up to date after `unload`)."""
        return self.loop.runs[0].state.model

    def steps(self, n: int) -> float:
        """Train n steps (each run); the wall time in seconds, ending with the read-back of
        every step (the device sync the engine does at an epoch's end)."""
        loop, bounds = self.loop, self.loop.bounds
        with torch_settings(self.config, self.device):
            if self.device.type == "cpu":
                torch.set_num_threads(self.runs[0].state.train_threads)
            start = time.perf_counter()
            left = n
            while left > 0:
                if loop.epoch_done:
                    for run in loop.runs:
                        run.state.end_epoch(self.epoch, {"epoch": self.epoch})
                    self.epoch = loop.start_epoch()
                first = loop.position
                loop.run(self.epoch, left)
                if not loop.runs:
                    raise RuntimeError("every run of the benchmark diverged")
                left -= loop.position - first
                self.images += bounds[loop.position - 1][1] - bounds[first][0]
            loop.flush()
            return time.perf_counter() - start

    def unload(self) -> list[torch.nn.Module]:
        """Bring every run's own model up to date (a grouped stack trains its own copy); the
        runs' models."""
        self.loop.steps.unload()
        return [run.state.model for run in self.loop.runs]
