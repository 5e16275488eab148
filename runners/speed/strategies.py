"""Faster ways to execute the article's step, each falling back to the eager step on failure.

`CompiledStep` runs the forward through torch.compile; if the compiler fails at the first call,
the step's effects are undone and training goes on eagerly with a warning. `GraphedStep`
captures a whole step (forward, backward, Adam) in one CUDA graph after a warm-up (whose
effects are undone), then replays it; any failure falls back to the step it wraps. Neither
changes the arithmetic beyond float rounding. `model_step` is where the way is chosen.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from runners.training.recipe import EagerStep, Loss, StepStrategy


def graph_capturable(estimators: Iterable[Any]) -> bool:
    """Whether a CUDA graph may capture steps through these estimators: a replay repeats fixed
    kernels, so stochastic ones (fresh noise every step) and annealed ones (progress set from
    Python every step) must train eagerly."""
    return not any(e.stochastic or e.annealed for e in estimators)


def model_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: str,
    compile: bool,
    cuda_graph: bool,
    estimators: Iterable[Any],
    loss: Loss = F.mse_loss,
    grad_norm: Callable[[], torch.Tensor | None] | None = None,
) -> StepStrategy:
    """The step strategy for one model (one run's, or a grouped model of K runs).

    Eager (the article's step) unless `compile` (torch.compile of the forward) or `cuda_graph`
    (the whole step replayed from a CUDA graph; CUDA and deterministic, non-annealed
    `estimators` only, else a warning and no graph). Both may be on: the graph then captures the
    compiled forward once it has run.
    """
    cls = CompiledStep if compile else EagerStep
    step: StepStrategy = cls(
        model, optimizer, device=device, precision=precision, loss=loss, grad_norm=grad_norm
    )
    if not cuda_graph:
        return step
    if device.type != "cuda":
        fallback_warning("CUDA graphs", RuntimeError(f"device is {device}, not CUDA"))
        return step
    if not graph_capturable(estimators):
        warnings.warn(
            "CUDA graphs need deterministic, non-annealed estimators; training eagerly instead",
            RuntimeWarning,
            stacklevel=2,
        )
        return step
    return GraphedStep(step)


class CompiledStep(EagerStep):
    """The eager step with its forward through torch.compile (eager again if that fails)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.verified = True
        try:
            self.forward = torch.compile(model)
            self.verified = False  # compiled, not yet run: the first call may fall back
        except Exception as exc:  # no compiler for this platform / python
            fallback_warning("torch.compile", exc)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on batch `x`; on the first call a compiler failure is undone and retried eagerly."""
        if self.verified:
            return super().__call__(x)
        self.verified = True
        snapshot = snapshot_training(self.model, self.optimizer)
        try:
            return super().__call__(x)
        except Exception as exc:  # compiler failure at its first real use: undo, go eager
            restore_training(self.model, self.optimizer, snapshot)
            fallback_warning("torch.compile", exc)
            self.forward = self.model
            return super().__call__(x)


class GraphedStep:
    """`step` captured once in a CUDA graph and replayed (CUDA only).

    The capture waits until `step` is verified (a compiled forward has run). Warm-up runs on a
    side stream change the weights, so the model and optimiser state are snapshotted before and
    restored in place (same storage, which the graph needs) after. Batches of another shape than
    the captured one (an epoch's last, smaller batch) run through `step` itself.
    """

    verified = True  # a failing capture falls back by itself

    def __init__(self, step: EagerStep) -> None:
        self.step = step
        self.tried = False  # the capture was attempted (once)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.static_out: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on batch `x` by replaying the graph (captured at the first possible call)."""
        if not self.tried and self.step.verified:
            self.tried = True
            try:
                self._capture(x)
            except Exception as exc:
                self.graph = None
                fallback_warning("CUDA graphs", exc)
        if self.graph is None or self.static_x is None or x.shape != self.static_x.shape:
            return self.step(x)
        self.static_x.copy_(x)
        self.graph.replay()
        loss, norm = self.static_out  # type: ignore[misc]
        return loss.clone(), None if norm is None else norm.clone()

    def _capture(self, x: torch.Tensor) -> None:
        step, model, optimizer = self.step, self.step.model, self.step.optimizer
        self.static_x = x.clone()
        snapshot = snapshot_training(model, optimizer)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                step(self.static_x)
        torch.cuda.current_stream(x.device).wait_stream(side)
        restore_training(model, optimizer, snapshot)  # also sets the gradients to None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_out = step(self.static_x)
        self.graph = graph


def snapshot_training(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Copies of the model's state and the optimiser's per-parameter state."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": {
            id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
            for p, s in optimizer.state.items()
        },
    }


def restore_training(
    model: nn.Module, optimizer: torch.optim.Optimizer, snapshot: dict[str, Any]
) -> None:
    """Put a `snapshot_training` back, in place, and set the gradients to None.

    In place, so tensors keep their storage (a captured graph refers to it). Optimiser state
    created after the snapshot is zeroed: for Adam that is a fresh state.
    """
    with torch.no_grad():
        for key, value in model.state_dict().items():
            value.copy_(snapshot["model"][key])
        for param, state in optimizer.state.items():
            saved = snapshot["optimizer"].get(id(param), {})
            for key, value in state.items():
                if torch.is_tensor(value) and key in saved:
                    value.copy_(saved[key])
                elif torch.is_tensor(value):
                    value.zero_()
                else:
                    state[key] = saved.get(key, 0)
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None


def fallback_warning(what: str, exc: BaseException) -> None:
    """Warn that `what` failed and training goes on eagerly."""
    text = " ".join(str(exc).split())[:200]
    warnings.warn(
        f"{what} unavailable ({type(exc).__name__}: {text}); training eagerly instead",
        RuntimeWarning,
        stacklevel=3,
    )
