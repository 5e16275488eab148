"""A trained model and a probe batch as a `measure.Problem`: its logits, objective and layers.

Two kinds of model:
- a model with `logits(x)` and `objective(x, logits)` (the Bernoulli VAE,
  `runners.tasks.vae_model`): the logits are the encoder's, f is its −ELBO with the logits held
  fixed (docs/tasks.md);
- the article's autoencoder (`pre_threshold`, `decode`): the logits are the threshold's inputs,
  read as a stochastic code P(b_i = 1) = σ(x_i) (the law the stochastic estimators sample in
  training), and f_k(b) is image k's reconstruction MSE. In eval mode, so images are independent.

The encoder's layers are its modules that hold parameters, named as in the state dict.
"""

from __future__ import annotations

from typing import Any

import torch

from runners.gradients.measure import Problem


def encoder_layers(encoder: torch.nn.Module, prefix: str = "encoder") -> dict[str, dict]:
    """The encoder's modules that hold parameters: name → {parameter name: parameter}."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for module_name, module in encoder.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if own:
            layer = f"{prefix}.{module_name}" if module_name else prefix
            layers[layer] = {f"{layer}.{name}": p for name, p in own.items()}
    return layers


def problem_for(model: Any, x: torch.Tensor) -> Problem:
    """The problem of `model` (a VAE or the article's autoencoder) on the probe batch `x`.

    `x`: the VAE's binary images (B, 784), or the autoencoder's normalised images (B, 1, 28, 28).
    Call it inside `runners.training.diagnostics.eval_mode(model)` for the autoencoder (BatchNorm in eval mode).
    """
    if hasattr(model, "objective") and hasattr(model, "logits"):
        logits = model.logits(x)
        return Problem(logits, model.objective(x, logits), encoder_layers(model.encoder))
    logits = model.pre_threshold(x).flatten(1)
    return Problem(logits, _reconstruction_objective(model, x), encoder_layers(model.encoder))


def _reconstruction_objective(model: Any, images: torch.Tensor):
    """f_k(b) = image k's MSE after decoding code b: b (S, B, C) → (S, B)."""
    channels = model.code_channels

    def f(b: torch.Tensor) -> torch.Tensor:
        lead = b.shape[:-1]
        recon = model.decode(b.reshape(-1, channels, 1, 1)).flatten(1)
        target = images.flatten(1).expand(*lead, -1).reshape(recon.shape)
        return (recon - target).pow(2).mean(dim=1).view(lead)

    return f
