"""The article's recipe: seeded streams, the model, Adam, and one training step.

- Seeds: the run's seed gives three independent streams (`derive_seed`): "init" (weights),
  "data" (batch order) and "noise" (the estimator's generator). Runs with the same seed and
  different estimators start from the same weights and see the same batches.
- One step (`EagerStep`): zero_grad, forward under autocast, MSE, backward, Adam. Other ways of
  executing the same step (torch.compile, CUDA graphs, K runs as one grouped model) are
  strategies in `runners.speed`; they all follow the `StepStrategy` interface below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from runners.config import RunConfig
from runners.training.device import autocast
from runners.training.kernels import adam, prepare_model
from runners.training.model import BinaryAutoencoder

STREAMS = ("init", "data", "noise")

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one random stream of a run, from sha256("<seed>:<stream>")."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_model(config: RunConfig, device: torch.device, *, fast: bool = True) -> torch.nn.Module:
    """The config's autoencoder with weights from the "init" stream (built on the CPU, moved).

    The model is made ready for fast training by `runners.training.kernels.prepare_model`: on the CPU
    the point layers run as matrix products (same weights, same formula, other rounding) and glibc
    malloc keeps freed memory; on CUDA channels_last. The weights drawn are the article's.
    `fast=False` gives the plain modules (the benchmark's reference row).
    """
    # fork_rng: the global RNG is seeded for the construction only and restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = BinaryAutoencoder(
            estimator=config.estimator,
            code_channels=config.code_channels,
            pre_threshold_relu=config.pre_threshold_relu,
        )
    model = model.to(device)
    return prepare_model(model, device) if fast else model


def build_optimizer(
    config: RunConfig, model: torch.nn.Module, *, fast: bool = True
) -> torch.optim.Optimizer:
    """Adam with the config's lr and betas (the article: 1e-3, (0.5, 0.999)).

    The fused kernel where torch has one for the device (`runners.training.kernels.adam`): the
    article's formula in one pass over the parameters. `fast=False`: torch's default (foreach)
    Adam. With `config.cuda_graph` on CUDA the optimiser is capturable (a graph replays its step).
    """
    betas = (config.beta1, config.beta2)
    if not fast:
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas)
    device = next(model.parameters()).device
    capturable = config.cuda_graph and device.type == "cuda"
    return adam(model.parameters(), config.lr, betas, device, capturable=capturable)


class StepStrategy(Protocol):
    """How one optimisation step of a model executes.

    A call trains on batch `x` and returns (loss, pre-threshold gradient norm) as detached device
    tensors: nothing waits for the device. For one run both are 0-d; for a grouped model of K
    runs both hold one value per member. `verified` is False while the first call may still
    fall back to another way (a compiler that fails at its first use).
    """

    verified: bool

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class EagerStep:
    """The article's training step, executed as written.

    Args:
        model: the model to train; it reconstructs `x`.
        optimizer: its optimiser.
        device, precision: where it runs and "fp32" or "bf16" (autocast around the forward).
        loss: (reconstruction, x) -> loss; the article's MSE. A grouped model gives one loss per
            member, and the sum is back-propagated: each member's gradient is its own.
        grad_norm: () -> the pre-threshold gradient norm of the last backward (default: the
            model's `pre_grad_norm`, None when it has none).
    """

    verified = True

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        precision: str = "fp32",
        loss: Loss = F.mse_loss,
        grad_norm: Callable[[], torch.Tensor | None] | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self.device, self.precision = device, precision
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.grad_norm = grad_norm or (lambda: getattr(model, "pre_grad_norm", None))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train on batch `x`; returns (loss, gradient norm), both detached."""
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device):
            recon = self.forward(x)
        loss = self.loss(recon.float(), x)
        loss.sum().backward()
        self.optimizer.step()
        norm = self.grad_norm()
        return loss.detach(), None if norm is None else norm.detach()
