"""Stacks: K runs of one grid trained in step in one process (a speed setting).

Which runs may share a stack (`stack_key`, `check_stackable`: equal but for estimator and seed),
and how a stack's step executes, chosen in one place (`stack_steps`):

- "looped" (the default on the CPU, where grouped kernels measured slower than K plain ones):
  each run's own model and optimiser, stepped in turn by its own step strategy; bit-identical to
  separate runs. A single run is a looped stack of one.
- "grouped" (the default on CUDA): one `StackedAutoencoder` and one Adam for all K runs; results
  equal separate runs' up to float rounding (grouped kernels sum in another order).

How many cells a stack holds is decided in `runners.speed.stack_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from runners.config import RunConfig
from runners.speed.grouped import (
    NotStackableError,
    StackedAutoencoder,
    member_losses,
    stack_batch,
    stack_optimizer_state,
    unstack_optimizer_state,
)
from runners.speed.strategies import model_step
from runners.training.recipe import build_optimizer
from runners.training.state import RunState

# Fields that may differ between the members of one stack; every other field must be equal.
MEMBER_FIELDS = ("estimator", "seed", "stack")
MODES = ("grouped", "looped")


def stack_key(config: RunConfig) -> tuple[Any, ...]:
    """Configs with equal keys can be trained in one stack."""
    return tuple(v for k, v in sorted(config.to_dict().items()) if k not in MEMBER_FIELDS)


def check_stackable(configs: Sequence[RunConfig]) -> None:
    """Raise NotStackableError unless `configs` can share a stack (one line naming the fields)."""
    if not configs:
        raise NotStackableError("no runs to stack")
    first = configs[0].to_dict()
    differ = sorted(
        {
            name
            for config in configs[1:]
            for name, value in config.to_dict().items()
            if name not in MEMBER_FIELDS and value != first[name]
        }
    )
    if differ:
        raise NotStackableError(
            f"stacked runs may differ only in {', '.join(MEMBER_FIELDS[:2])}; "
            f"these differ: {', '.join(differ)}"
        )
    ids = [c.run_id for c in configs]
    if len(set(ids)) != len(ids):
        raise NotStackableError("the same run appears twice in one stack")


def check_mode(mode: str | None) -> None:
    """Raise NotStackableError unless `mode` is None (the device's default) or one of MODES."""
    if mode not in (None, *MODES):
        raise NotStackableError(f"unknown stack mode {mode!r} (choose from {', '.join(MODES)})")


def default_mode(device: torch.device) -> str:
    """ "grouped" on CUDA (fills the device), "looped" on the CPU (grouped kernels are slower)."""
    return "grouped" if device.type == "cuda" else "looped"


class StackSteps(Protocol):
    """How the runs of a stack take one training step together."""

    def train(self) -> None:
        """Training mode for the models (an evaluation left them in eval mode)."""

    def step(self, index: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """One step of run k on its images `index[k]`: (losses, gradient norms), on the device."""

    def unload(self) -> None:
        """Bring every run's own model and optimiser up to date (before they are read)."""

    def drop(self, leaving: Sequence[RunState]) -> None:
        """Stop stepping these runs (they diverged)."""


def stack_steps(
    states: Sequence[RunState], mode: str, images: torch.Tensor, task: Any
) -> StackSteps:
    """How `states` (runs at the same position) step on uint8 `images`: `mode` "grouped" or
    "looped"; within it, each run's step strategy and batch are the task's
    (`runners.tasks.base.Task.step` and `.batch`; the article's task steps through
    `runners.speed.strategies.model_step`: eager, compiled or CUDA graph, per the runs' config).
    A task that is not `groupable` always steps looped."""
    if mode == "grouped" and task.groupable:
        return GroupedSteps(states, images)
    return LoopedSteps(states, images, task)


class LoopedSteps:
    """Each run's own model and optimiser, stepped in turn by its own strategy."""

    def __init__(self, states: Sequence[RunState], images: torch.Tensor, task: Any) -> None:
        self.images, self.task = images, task
        self.states = list(states)
        self.steps = [task.step(state) for state in self.states]

    def train(self) -> None:  # noqa: D102
        for state in self.states:
            state.model.train()

    def step(self, index: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:  # noqa: D102
        task, out = self.task, []
        for k, (state, step) in enumerate(zip(self.states, self.steps, strict=True)):
            out.append(step(task.batch(state, self.images, index[k])))
        return [loss for loss, _ in out], [norm for _, norm in out]

    def unload(self) -> None:  # noqa: D102
        pass  # the runs' own models are the ones trained

    def drop(self, leaving: Sequence[RunState]) -> None:  # noqa: D102
        kept = [n for n, state in enumerate(self.states) if state not in leaving]
        self.states = [self.states[n] for n in kept]
        self.steps = [self.steps[n] for n in kept]


class GroupedSteps:
    """One grouped model and one Adam for all runs, loaded from them and `unload`ed into them."""

    def __init__(self, states: Sequence[RunState], images: torch.Tensor) -> None:
        self.images = images
        self.states = list(states)
        self._build()

    def _build(self) -> None:
        first = self.states[0]
        self.model = StackedAutoencoder([s.model for s in self.states])
        self.optimizer = build_optimizer(first.config, self.model)  # the same Adam as one run's
        stack_optimizer_state(self.optimizer, [s.optimizer for s in self.states])
        self.strategy = model_step(
            self.model,
            self.optimizer,
            device=first.device,
            precision=first.config.precision,
            compile=first.config.compile,
            cuda_graph=first.config.cuda_graph,
            estimators=[s.model.estimator for s in self.states],
            loss=member_losses,
            grad_norm=lambda: self.model.pre_grad_norms,
        )

    def train(self) -> None:  # noqa: D102
        for state in self.states:
            state.model.train()
        self.model.train()

    def step(self, index: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:  # noqa: D102
        losses, norms = self.strategy(stack_batch(self.images, index))
        k = len(self.states)
        return list(losses.unbind()), [None] * k if norms is None else list(norms.unbind())

    def unload(self) -> None:  # noqa: D102
        self.model.unload_members([s.model for s in self.states])
        unstack_optimizer_state(self.optimizer, [s.optimizer for s in self.states])

    def drop(self, leaving: Sequence[RunState]) -> None:  # noqa: D102
        staying = [s for s in self.states if s not in leaving]
        if staying:
            self.unload()
            self.states = staying
            self._build()
        self.states = staying
