"""Our training loop as `train_run` runs it, a chunk of steps at a time, for the benchmarks."""

from __future__ import annotations

import time
from typing import Any

import torch

from runners.config import RunConfig
from runners.training.data import batch_bounds, epoch_permutation, get_batch
from runners.training.recipe import EagerStep, build_model, build_optimizer, derive_seed
from runners.training.session import torch_settings


class OursLoop:
    """Our hot loop as `train_run` runs it, a chunk of steps at a time (for alternation).

    Args:
        config: the run (dataset, device, precision...).
        data: `runners.training.data.RunData` on the device.
        plain: without the fast path of `runners.training.kernels` (plain nn layers, torch's default
            Adam): the reference row that shows what the fast path adds.
    """

    def __init__(
        self, config: RunConfig, data: Any, device: torch.device, plain: bool = False
    ) -> None:
        self.config, self.data, self.device = config, data, device
        self.model = build_model(config, device, fast=not plain)
        self.optimizer = build_optimizer(config, self.model, fast=not plain)
        self.generator = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
        self.bounds = batch_bounds(len(data.train), config.batch_size)
        self.position, self.order = len(self.bounds), None
        self.images = 0

    def steps(self, n: int) -> float:
        """Train n steps; the wall time in seconds (ends with a device sync)."""
        images = self.data.train.images
        config, device = self.config, self.device
        step = EagerStep(self.model, self.optimizer, device=device, precision=config.precision)
        with torch_settings(config, device):
            start = time.perf_counter()
            for _ in range(n):
                if self.position == len(self.bounds):
                    order = epoch_permutation(len(self.data.train), self.generator)
                    self.order, self.position = order.to(self.device), 0
                begin, end = self.bounds[self.position]
                self.position += 1
                x = get_batch(images, self.order[begin:end])
                loss, _ = step(x)
                self.images += end - begin
            loss.item()
            return time.perf_counter() - start
