"""The reference article's task: the binary autoencoder on MNIST, scored by test MSE.

Everything here is the article's recipe as `runners.training` defines it (model, Adam, step,
evaluation, codes, probe, diagnostics, figure); this module only presents it as a task.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from runners.config import RunConfig
from runners.speed.strategies import model_step
from runners.training.data import RunData, get_batch, normalize, prepare_data
from runners.training.diagnostics import epoch_diagnostics, probe_indices
from runners.training.evaluate import (
    FIGURE_IMAGES,
    encode_all,
    evaluate,
    figure_digits,
    reconstruct,
    save_reconstruction_png,
)
from runners.training.metrics import code_stats, probe_accuracy, psnr
from runners.training.recipe import build_model, build_optimizer


class AutoencoderTask:
    """The article's binary autoencoder (`runners.tasks.base.Task`)."""

    name = "autoencoder"
    groupable = True
    train_key = "train_mse"
    divergence_key = "test_mse"
    summary_keys = ("test_mse", "test_psnr", "bit_entropy", "dead_bits")

    def prepare_data(self, config: RunConfig, device: torch.device) -> RunData:
        return prepare_data(
            config.dataset, config.train_subset, config.test_subset, device, config.data_root
        )

    def build_model(
        self, config: RunConfig, device: torch.device, *, fast: bool = True
    ) -> torch.nn.Module:
        return build_model(config, device, fast=fast)

    def build_optimizer(
        self, config: RunConfig, model: torch.nn.Module, *, fast: bool = True
    ) -> torch.optim.Optimizer:
        return build_optimizer(config, model, fast=fast)

    def init_extra(self, model: torch.nn.Module) -> dict[str, Any]:
        return {}  # the article's state is its model, optimiser and generators

    def step(self, state: Any) -> Any:
        config = state.config
        return model_step(
            state.model,
            state.optimizer,
            device=state.device,
            precision=config.precision,
            compile=config.compile,
            cuda_graph=config.cuda_graph,
            estimators=[state.model.estimator],
        )

    def batch(self, state: Any, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return get_batch(images, index)

    def evaluate(self, state: Any, data: RunData, epoch: int, final: bool) -> dict[str, Any]:
        config, model = state.config, state.model
        result = evaluate(model, data.test.images, config.precision)
        stats = code_stats(result.codes, state.prev_codes)
        state.prev_codes = result.codes
        norms = state.epoch_grad_norms
        record: dict[str, Any] = {
            "test_mse": result.mse,
            "test_psnr": psnr(result.mse),
            "grad_norm_pre": math.fsum(norms) / len(norms) if norms else None,
            **stats,
        }
        if final:
            train_codes = encode_all(model, data.train.images, config.precision)
            record["probe_accuracy"] = probe_accuracy(
                config.probe, train_codes, data.train.labels, result.codes, data.test.labels
            )
        return record

    def diagnostics(self, state: Any, data: RunData) -> dict[str, Any]:
        """The gradient diagnostics of the run's estimator on the probe batch (`diag_*` keys;
        docs/diagnostics.md), or none with `diagnostics: off`."""
        if state.config.diagnostics != "epoch":
            return {}
        test = data.test.images
        probe = normalize(
            test[probe_indices(len(test), state.config.diagnostics_probe).to(test.device)]
        )
        return epoch_diagnostics(state.model, probe)

    def describe_record(self, record: dict[str, Any]) -> str:
        return (
            f"train_mse={record['train_mse']:.5f} "
            f"test_mse={record['test_mse']:.5f} psnr={record['test_psnr']:.2f}dB "
            f"entropy={record['bit_entropy']:.3f} dead={record['dead_bits']} "
            f"{record['images_per_s']:.0f} img/s"
        )

    def write_figure(self, state: Any, data: RunData, path: Path) -> bool:
        chosen = figure_digits(data.test.labels, FIGURE_IMAGES)
        images = data.test.images[torch.tensor(chosen, device=data.test.images.device)]
        originals, recons = reconstruct(state.model, images, state.config.precision)
        labels = [int(data.test.labels[i]) for i in chosen]
        save_reconstruction_png(path, originals, recons, labels)
        return True


TASK = AutoencoderTask()
