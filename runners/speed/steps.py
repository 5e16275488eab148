"""One optimisation step with the GPU extras of issue 5, each with a fallback to eager.

`TrainStep(compile=True)` runs the forward through torch.compile; if the compiler fails at the
first call, the step's effects are undone and training goes on eagerly with a warning.
`TrainStep(cuda_graph=True)` captures forward, backward and Adam in one CUDA graph after a
warm-up (whose effects are undone), then replays it; any failure falls back to eager. Neither
changes the arithmetic beyond float rounding. Not measured here (no GPU in this session): the
CPU tests run the same code, and the CUDA-graph test is marked `gpu`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from runners.speed.layers import autocast


def graph_capturable(estimators: Any) -> bool:
    """Whether a CUDA graph may capture steps through these estimators: a replay repeats fixed
    kernels, so stochastic ones (fresh noise every step) and annealed ones (progress set from
    Python every step) must train eagerly."""
    return not any(e.stochastic or e.annealed for e in estimators)


class TrainStep:
    """One optimisation step of a (possibly stacked) autoencoder, with optional GPU extras.

    `forward(x)` must return (reconstruction, pre-threshold gradient-norm getter); `loss(recon, x)`
    returns a vector of per-member losses whose sum is back-propagated. A call returns
    (losses, grad_norms) as device tensors: nothing here waits for the device.

    Args:
        model: the module whose parameters `optimizer` updates.
        optimizer: its optimiser (for `cuda_graph`, built with `capturable=True`).
        forward: (x) -> reconstruction.
        loss: (reconstruction, x) -> per-member losses (1-d).
        grad_norms: () -> the pre-threshold gradient norms of the last backward (or None).
        precision: "fp32" or "bf16" (autocast around the forward).
        compile: run `forward` through torch.compile; on any error, warn and run eagerly.
        cuda_graph: capture the whole step in a CUDA graph after the first call (CUDA only,
            deterministic estimators only); on any error, warn and run eagerly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        forward: Callable[[torch.Tensor], torch.Tensor],
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        grad_norms: Callable[[], torch.Tensor | None],
        *,
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.loss, self.grad_norms = loss, grad_norms
        self.device, self.precision = device, precision
        self.eager_forward = forward
        self.forward = forward
        self.compile_unverified = False  # compiled, not yet run: the first call may fall back
        if compile:
            try:
                self.forward = torch.compile(forward)
                self.compile_unverified = True
            except Exception as exc:  # no compiler for this platform / python
                _fallback_warning("torch.compile", exc)
        self.graph: _GraphedStep | None = None
        self.want_graph = cuda_graph and device.type == "cuda"
        if cuda_graph and device.type != "cuda":
            _fallback_warning("CUDA graphs", RuntimeError(f"device is {device}, not CUDA"))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on batch `x`; returns (per-member losses, gradient norms), both detached."""
        if self.graph is not None and x.shape == self.graph.static_x.shape:
            return self.graph.replay(x)
        if self.compile_unverified:
            self.compile_unverified = False
            snapshot = _snapshot(self.model, self.optimizer)
            try:
                return self._eager_step(x)
            except Exception as exc:  # compiler failure at its first real use: undo, go eager
                _restore(self.model, self.optimizer, snapshot)
                _fallback_warning("torch.compile", exc)
                self.forward = self.eager_forward
                return self._eager_step(x)
        if self.want_graph:
            self.want_graph = False
            try:
                self.graph = _GraphedStep(self, x)
            except Exception as exc:
                _fallback_warning("CUDA graphs", exc)
            else:
                return self.graph.replay(x)
        return self._eager_step(x)

    def _eager_step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device):
            recon = self.forward(x)
        losses = self.loss(recon.float(), x)
        losses.sum().backward()
        self.optimizer.step()
        norms = self.grad_norms()
        return losses.detach(), None if norms is None else norms.detach()


class _GraphedStep:
    """The whole step (forward, backward, Adam) captured once and replayed (CUDA only).

    Warm-up runs on a side stream change the weights, so the model and optimiser state are
    snapshotted before and restored in place (same storage, which the graph needs) after.
    """

    def __init__(self, step: TrainStep, x: torch.Tensor) -> None:
        model, optimizer = step.model, step.optimizer
        self.static_x = x.clone()
        snapshot = _snapshot(model, optimizer)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                step._eager_step(self.static_x)
        torch.cuda.current_stream(x.device).wait_stream(side)
        _restore(model, optimizer, snapshot)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            with autocast(step.precision, step.device):
                recon = step.forward(self.static_x)
            losses = step.loss(recon.float(), self.static_x)
            losses.sum().backward()
            optimizer.step()
            norms = step.grad_norms()
        self.static_losses = losses.detach()
        self.static_norms = None if norms is None else norms.detach()

    def replay(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.static_x.copy_(x)
        self.graph.replay()
        norms = None if self.static_norms is None else self.static_norms.clone()
        return self.static_losses.clone(), norms


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": {
            id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
            for p, s in optimizer.state.items()
        },
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, snapshot: dict[str, Any]) -> None:
    # In place, so tensors keep their storage (a captured graph refers to it).
    with torch.no_grad():
        for key, value in model.state_dict().items():
            value.copy_(snapshot["model"][key])
        for param, state in optimizer.state.items():
            saved = snapshot["optimizer"].get(id(param), {})
            for key, value in state.items():
                # A state that did not exist before is zeroed: for Adam that is a fresh state.
                if torch.is_tensor(value) and key in saved:
                    value.copy_(saved[key])
                elif torch.is_tensor(value):
                    value.zero_()
                else:
                    state[key] = saved.get(key, 0)
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None


def _fallback_warning(what: str, exc: BaseException) -> None:
    text = " ".join(str(exc).split())[:200]
    warnings.warn(
        f"{what} unavailable ({type(exc).__name__}: {text}); training eagerly instead",
        RuntimeWarning,
        stacklevel=3,
    )
