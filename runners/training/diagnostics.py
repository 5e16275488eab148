"""Gradient diagnostics: how faithful an estimator's gradient is to the exact effect of a bit flip.

On a fixed probe batch of P images, with the model in eval mode (so images are independent), let
x be the threshold's input, b its 0/1 output and L_n image n's reconstruction MSE. The 512-bit
code is small enough to measure the truth: D[n, i] = L_n(b with bit i flipped) − L_n(b), for every
image and bit. The decoder's first layer is affine, so a flip adds ± one column of it to that
layer's output (a rank-one change): P × C flips cost P × C evaluations of the rest of the decoder.

Against it (definitions and references in docs/diagnostics.md):
- G = ∂L_n/∂b and D̂ = G·(1 − 2b), the first-order picture every STE shares;
- E = ∂L_n/∂x through the estimator's own backward (autograd), mean (and variance) over S noise
  draws for stochastic estimators, drawn from a generator of the diagnostics' own;
- R_τ = σ′(x/τ)/τ · (L_n(b_i=1) − L_n(b_i=0)), the exact gradient when bit i alone is smoothed
  by logistic noise at temperature τ (a local-expectation gradient).

Nothing here changes the model: it is switched to eval mode and back, no `.grad` is written (the
gradients come from `torch.autograd.grad`), BatchNorm statistics are not updated (eval mode) and
the global RNG is left as it was.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from runners.store.records import DIAGNOSTICS_PREFIX, DRAWS, TAUS, smoothed_cosine
from ste_variants.base import Estimator

PROBE_SEED = 1_000_037  # the probe batch: the same test images for every run of a test set
NOISE_SEED = 1_000_039  # the diagnostics' own noise stream (never the run's)
CHUNK_ROWS = 2048  # flipped codes decoded at once (memory: ~2 KB of activations per row)


@dataclass(frozen=True)
class FlipEffects:
    """The probe batch's exact and first-order flip effects (float64, shape (P, C) unless noted).

    Attributes:
        x: the threshold's input.
        b: the code, 0/1.
        loss: L_n(b), shape (P,).
        flip: D, the exact effect of flipping each bit on its image's loss.
        grad: G = ∂L_n/∂b.
    """

    x: torch.Tensor
    b: torch.Tensor
    loss: torch.Tensor
    flip: torch.Tensor
    grad: torch.Tensor

    @property
    def sign(self) -> torch.Tensor:
        """1 − 2b: the direction of a flip (+1 turns a bit on, −1 off)."""
        return 1.0 - 2.0 * self.b

    @property
    def linearised(self) -> torch.Tensor:
        """D̂ = G·(1 − 2b), the flip effect a first-order expansion predicts."""
        return self.grad * self.sign

    @property
    def on_minus_off(self) -> torch.Tensor:
        """L_n(b_i = 1) − L_n(b_i = 0) = D·(1 − 2b)."""
        return self.flip * self.sign


def probe_indices(test_images: int, size: int) -> torch.Tensor:
    """The probe batch: `size` test images (all when fewer), chosen by a fixed seed."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randperm(test_images, generator=generator)[: min(size, test_images)]


def image_losses(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (the mean over pixels, as the training loss), shape (N,)."""
    return (recon.flatten(1) - target.flatten(1)).pow(2).mean(dim=1)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode and the global RNG untouched; both restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        model.train(was_training)


def flip_effects(model: Any, images: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> FlipEffects:
    """Exact flip effects D, the code and G of normalised `images` (N, 1, 28, 28), eval mode.

    `model` is a `BinaryAutoencoder` (pre_threshold, decoder whose first layer is affine).
    """
    first, rest = model.decoder[0], model.decoder[1:]
    with torch.no_grad():
        x = model.pre_threshold(images).flatten(1)
        b = (x > 0).to(x.dtype)
        count, channels = b.shape
        # The first layer's columns: its output for each one-hot code minus its output for zero.
        basis = torch.eye(channels, device=x.device, dtype=x.dtype).view(channels, channels, 1, 1)
        columns = first(basis) - first(torch.zeros_like(basis[:1]))
        start = first(b.view(count, channels, 1, 1))
        loss = image_losses(rest(start), images)
        sign = (1.0 - 2.0 * b).view(count, channels, 1, 1, 1)
        flip = torch.empty_like(x)
        per_chunk = max(1, chunk_rows // channels)
        for lo in range(0, count, per_chunk):
            hi = min(count, lo + per_chunk)
            flipped = start[lo:hi, None] + sign[lo:hi] * columns[None]  # (k, C, ...)
            recon = rest(flipped.flatten(0, 1)).view(hi - lo, channels, -1)
            target = images[lo:hi].flatten(1)[:, None]
            flip[lo:hi] = (recon - target).pow(2).mean(dim=2) - loss[lo:hi, None]
    code = b.detach().clone().requires_grad_(True)
    recon = model.decode(code.view(count, channels, 1, 1))
    (grad,) = torch.autograd.grad(image_losses(recon, images).sum(), code)
    return FlipEffects(
        x=x.double(), b=b.double(), loss=loss.double(), flip=flip.double(), grad=grad.double()
    )


def estimator_gradient(
    model: Any,
    images: torch.Tensor,
    x: torch.Tensor,
    estimator: Estimator,
    *,
    draws: int = DRAWS,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """E = ∂L_n/∂x through `estimator`'s real backward: (mean, variance over draws or None).

    A stochastic estimator samples its forward as in training (from `generator`, never the
    run's stream) and the variance is over `draws` samples; a deterministic one is evaluated once.
    """
    channels = x.shape[1]
    leaf = x.detach().to(images.dtype).clone().requires_grad_(True)
    stochastic = estimator.stochastic
    grads = []
    for _ in range(draws if stochastic else 1):
        code = estimator(leaf, training=stochastic, generator=generator)
        recon = model.decode(code.view(-1, channels, 1, 1))
        (grad,) = torch.autograd.grad(image_losses(recon, images).sum(), leaf)
        grads.append(grad.double())
    stacked = torch.stack(grads)
    variance = stacked.var(dim=0) if stochastic and draws > 1 else None
    return stacked.mean(dim=0), variance


def summarise(
    effects: FlipEffects, mean: torch.Tensor, variance: torch.Tensor | None
) -> dict[str, float | None]:
    """The diagnostics of one estimator's gradient `mean` (and `variance`), without the prefix."""
    flip = effects.flip
    weight = flip.abs()
    total = float(weight.sum())
    moving = mean != 0
    toward = mean * effects.sign < 0  # x − ηE moves x toward the threshold
    agree = moving & (toward == (flip < 0))
    out: dict[str, float | None] = {
        "flip_corr": spearman(flip, effects.linearised),
        "descent_agreement": float((weight * agree).sum()) / total if total > 0 else None,
        "coverage": float((weight * moving).sum()) / total if total > 0 else None,
    }
    for tau in TAUS:
        out[smoothed_cosine(tau)] = cosine(mean, smoothed_gradient(effects, tau))
    identity = float(torch.linalg.vector_norm(effects.grad))
    difference = float(torch.linalg.vector_norm(mean - effects.grad))
    out["rel_to_identity"] = difference / identity if identity > 0 else None
    out["grad_snr"] = None
    if variance is not None:
        noise = math.sqrt(float(variance.sum()))
        out["grad_snr"] = float(torch.linalg.vector_norm(mean)) / noise if noise > 0 else None
    return out


def smoothed_gradient(effects: FlipEffects, tau: float) -> torch.Tensor:
    """R_τ = σ′(x/τ)/τ · (L_n(b_i=1) − L_n(b_i=0)): d/dx of the loss with bit i ~ Bernoulli(σ(x/τ))."""
    s = torch.sigmoid(effects.x / tau)
    return s * (1.0 - s) / tau * effects.on_minus_off


def cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Cosine of two tensors as flat vectors (None when either is zero)."""
    norms = float(torch.linalg.vector_norm(a)) * float(torch.linalg.vector_norm(b))
    return float((a * b).sum()) / norms if norms > 0 else None


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rank correlation of two tensors as flat vectors (ties get their mean rank)."""
    ra, rb = _ranks(a.flatten().double()), _ranks(b.flatten().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return cosine(ra, rb)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values)
    _, inverse, counts = torch.unique_consecutive(
        values[order], return_inverse=True, return_counts=True
    )
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() + 1.0) / 2.0  # 0-based mean rank of each tie group
    ranks = torch.empty_like(values)
    ranks[order] = mean_rank[inverse]
    return ranks


def diagnose(
    model: Any,
    images: torch.Tensor,
    estimators: Sequence[Estimator],
    *,
    draws: int = DRAWS,
) -> list[dict[str, float | None]]:
    """The diagnostics of each estimator on the same weights and probe batch (eval mode).

    Args:
        model: a `BinaryAutoencoder`; its mode, weights, gradients and statistics are unchanged.
        images: the probe batch, normalised, on the model's device.
        estimators: the estimators compared (their current progress is the annealing's).
        draws: noise draws per stochastic estimator.
    """
    with eval_mode(model):
        effects = flip_effects(model, images)
        generator = torch.Generator().manual_seed(NOISE_SEED)
        results = []
        for estimator in estimators:
            mean, variance = estimator_gradient(
                model, images, effects.x, estimator, draws=draws, generator=generator
            )
            results.append(summarise(effects, mean, variance))
    return results


def epoch_diagnostics(model: Any, images: torch.Tensor, draws: int = DRAWS) -> dict[str, Any]:
    """The epoch record's diagnostics of the model's own estimator (keys `diag_*`: the table of
    `runners.store.records`)."""
    (result,) = diagnose(model, images, [model.estimator], draws=draws)
    return {f"{DIAGNOSTICS_PREFIX}{key}": value for key, value in result.items()}
