"""The task protocol: what the one engine needs from a model to train, evaluate and record it.

A task is a small object (data, model, objective, evaluation metrics); the engine, the store,
resume, stacking, W&B and the executors never branch on its name. `runners.tasks.get_task`
resolves the run config's `task` field. docs/tasks.md describes both tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from runners.config import RunConfig


class TaskState(Protocol):
    """What a task reads of a run's state (`runners.training.state.RunState`)."""

    config: RunConfig
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    noise_gen: torch.Generator
    step: int  # finished steps
    extra: dict[str, Any]  # the task's own state (checkpointed with the run)


class Task(Protocol):
    """One task of the package.

    Attributes:
        name: the config's `task` value.
        groupable: K runs of this task may train as one grouped model (`runners.speed.grouped`);
            False: stacks always step each run's own model in turn ("looped").
        train_key: the epoch record's key for the mean training loss of the epoch.
        divergence_key: the epoch record's key whose non-finite value ends a run as diverged.
        summary_keys: last-epoch record keys copied into summary.json.
    """

    name: str
    groupable: bool
    train_key: str
    divergence_key: str
    summary_keys: tuple[str, ...]

    def prepare_data(self, config: RunConfig, device: torch.device) -> Any:
        """The run's data (an object with `.train` and `.test` splits, each with `len()`,
        `.images` (uint8 on `device`) and `.labels` (CPU))."""

    def build_model(
        self, config: RunConfig, device: torch.device, *, fast: bool = True
    ) -> torch.nn.Module:
        """The model with weights from the "init" stream; it has `.binarize` (a
        `ste_variants.Binarize`: `.generator` is set to the run's noise stream, `.set_progress`
        follows training)."""

    def build_optimizer(
        self, config: RunConfig, model: torch.nn.Module, *, fast: bool = True
    ) -> torch.optim.Optimizer:
        """The optimiser of the model (its state is checkpointed)."""

    def init_extra(self, model: torch.nn.Module) -> dict[str, Any]:
        """The task's own per-run state (tensors on the model's device; checkpointed), or {}."""

    def step(self, state: TaskState) -> Any:
        """The training step of one run: a `runners.training.recipe.StepStrategy`
        (x -> (loss, gradient norm or None), both detached device tensors)."""

    def batch(self, state: TaskState, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The batch of the run's next step (step number `state.step`) from uint8 `images` at
        `index`; any randomness comes from the run's seed and the step number, so it is the
        same for every estimator of a seed and for a resumed run."""

    def evaluate(self, state: TaskState, data: Any, epoch: int, final: bool) -> dict[str, Any]:
        """The epoch record's metrics after epoch `epoch` (`final`: the run's last), computed in
        eval mode without touching the run's generators."""

    def diagnostics(self, state: TaskState, data: Any) -> dict[str, Any]:
        """Metrics measured after the epoch's timings (the article's `diag_*`), or {}."""

    def describe_record(self, record: dict[str, Any]) -> str:
        """One line on an epoch record for the progress display."""

    def write_figure(self, state: TaskState, data: Any, path: Path) -> bool:
        """Write the run's figure (PNG) to `path`; False when the task has none."""
