"""The run's own estimator against the exact gradient at a few checkpoints of its training.

With the run-config field `gradient_error: checkpoints`, the epoch records of the epochs that end
nearest to 0%, 10%, 50% and 100% of training (0% → the first epoch's end) carry `gerr_*` keys
(`runners.store.records.GRADIENT_ERROR_METRICS`): the bias, its p-value, the variance, and the relative RMSE and
cosine of the mean of M estimates, for every encoder parameter as one vector (docs/gradients.md).
They flow into metrics.jsonl, W&B, the tidy table and the analysis like every record key.

Never changes training: the model is in eval mode and the global RNG is forked (`runners.training.diagnostics.eval_mode`), the
estimator is a fresh copy of the run's (at the run's progress), the noise comes from a generator
of its own (seeded by the epoch), gradients come from `torch.autograd.grad` (no `.grad` is
written).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from runners.gradients.exact import reference_generator, reference_gradient
from runners.gradients.measure import TOTAL, compare
from runners.gradients.problems import problem_for
from runners.store.records import (
    GRADIENT_ERROR_BUDGETS,
    GRADIENT_ERROR_METRICS,
    GRADIENT_ERROR_MS,
    GRADIENT_ERROR_PREFIX,
    GRADIENT_ERROR_TIME,
)
from runners.training.data import normalize
from runners.training.diagnostics import eval_mode, probe_indices
from ste_variants import get_estimator

NOISE_SEED = 1_000_051  # the measurement's own noise (plus the epoch): never the run's stream
PROBE_SEED = 1_000_037  # the probe batch's binarisation (the images: diagnostics' probe_indices)
FRACTIONS = (0.0, 0.1, 0.5, 1.0)  # of training: the checkpoints
ESTIMATES = 256  # estimates per checkpoint
MAX_BITS = 16  # enumerate up to this many latents, else the local-expectation reference
REFERENCE_DRAWS = 256
RESAMPLES = 500


def probe_batch(model: Any, images: torch.Tensor, size: int) -> torch.Tensor:
    """The probe batch of `size` test images (uint8, (N, 1, 28, 28)) in the model's input form.

    The same images as the gradient diagnostics' probe (`probe_indices`); a VAE (a model with
    an `objective`) gets them binarised once with a fixed seed (flattened to 784), the article's
    autoencoder normalised.
    """
    chosen = images[probe_indices(len(images), size).to(images.device)]
    if not hasattr(model, "objective"):
        return normalize(chosen)
    grey = chosen.flatten(1).to(torch.float64) / 255.0
    u = torch.rand(
        grey.shape, generator=torch.Generator().manual_seed(PROBE_SEED), dtype=torch.float64
    )
    return (u.to(grey.device) < grey).to(torch.float32)


def epoch_gradient_error(model: Any, test_images: torch.Tensor, epoch: int, config: Any) -> dict:
    """The `gerr_*` keys of the epoch record when `epoch` is a checkpoint (else none).

    Off unless the config's `gradient_error` is "checkpoints", and for estimators that do not
    sample Bernoulli(σ(logits)).
    """
    if config.gradient_error != "checkpoints" or not applies(model.estimator):
        return {}
    if epoch not in checkpoint_epochs(config.epochs):
        return {}
    x = probe_batch(model, test_images, config.gradient_error_probe)
    return gradient_error_record(model, x, model.estimator, epoch=epoch)


def checkpoint_epochs(epochs: int, fractions: tuple[float, ...] = FRACTIONS) -> set[int]:
    """The epochs whose end is nearest to each fraction of training (at least the first)."""
    return {min(epochs, max(1, round(f * epochs))) for f in fractions}


def applies(estimator: Any) -> bool:
    """Whether the estimator samples Bernoulli(σ(logits)) (the others have no such gradient)."""
    return type(estimator).samples_from == "bernoulli"


def gradient_error_record(
    model: Any,
    x: torch.Tensor,
    estimator: Any,
    *,
    epoch: int,
    estimates: int = ESTIMATES,
    max_bits: int = MAX_BITS,
) -> dict[str, Any]:
    """The `gerr_*` keys of one checkpoint: `estimator` on `model`'s weights and probe batch `x`.

    `estimator` is the run's (its spec and progress are copied; the object is not used).
    """
    began = time.perf_counter()
    own = get_estimator(estimator.spec)
    own.set_progress(estimator.progress)
    seed = NOISE_SEED + epoch
    with eval_mode(model):
        problem = problem_for(model, x)
        ref = reference_gradient(
            problem.logits,
            problem.objective,
            max_bits=max_bits,
            draws=REFERENCE_DRAWS,
            generator=reference_generator(seed),
        )
        (row,) = compare(
            problem,
            ref,
            [own],
            draws=estimates,
            ms=GRADIENT_ERROR_MS,
            budgets=GRADIENT_ERROR_BUDGETS,
            seed=seed,
            resamples=RESAMPLES,
        )
    summary = row["layers"][TOTAL]
    record = record_keys(summary)
    record[GRADIENT_ERROR_TIME] = time.perf_counter() - began
    return record


def record_keys(summary: dict[str, Any]) -> dict[str, Any]:
    """The `gerr_*` values of one layer's summary (`runners.gradients.stats.summarise`)."""
    if summary.get("bias") is None:
        return dict.fromkeys(GRADIENT_ERROR_METRICS)
    by_m = {int(r["m"]): r for r in summary["by_m"]}
    by_e = {int(r["evaluations"]): r for r in summary["by_evaluations"]}
    prefix = GRADIENT_ERROR_PREFIX
    out: dict[str, Any] = {
        f"{prefix}bias": summary["bias"],
        f"{prefix}bias_p": summary["bias_p"],
        f"{prefix}variance": summary["variance"],
    }
    for m in GRADIENT_ERROR_MS:
        out[f"{prefix}rmse_m{m}"] = by_m[m]["rel_rmse"]
        out[f"{prefix}cosine_m{m}"] = by_m[m]["cosine"]
    for e in GRADIENT_ERROR_BUDGETS:
        out[f"{prefix}rmse_e{e}"] = by_e[e]["rel_rmse"] if e in by_e else None
    return out
