"""Estimators' gradients against the reference, per layer: the measurement behind `gradcheck`.

A `Problem` is one model at fixed parameters on a fixed batch: the encoder's logits (with their
graph to the encoder's parameters), the per-example objective and the encoder's layers. For each
estimator, R independent estimates of ∇_ℓ F are drawn (`sampling.Sampler`, C at a time), pulled
back to every layer's parameters (one vectorised vector-Jacobian product per chunk), and reduced
on the fly to the sufficient statistics of `stats.LayerSums` (G group means per layer): memory is
G × (parameter count) float64 plus one chunk of C estimates, never R full gradients.
Layers: "logits" (the (B, n) logit gradient itself), each encoder layer, and "total" (every
encoder parameter as one vector).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from runners.gradients import stats
from runners.gradients.exact import Objective, Reference, backprop, group_spans
from runners.gradients.sampling import Sampler

LOGITS = "logits"
TOTAL = "total"
DRAWS = 1024  # estimates per estimator
GROUPS = 64  # bootstrap units
CHUNK = 64  # estimates drawn and pulled back at once
GROUP_BYTES = 512 * 2**20  # at most this much for the group means (G shrinks to fit)
MS = tuple(stats.powers_of_two(1024))
BUDGETS = tuple(stats.powers_of_two(2048))


@dataclass(frozen=True)
class Problem:
    """One model at fixed parameters on a fixed batch.

    Attributes:
        logits: (B, n), with their graph to the parameters in `layers`.
        objective: the per-example objective f, b (S, B, n) → (S, B), parameters fixed.
        layers: layer name → {parameter name: parameter}, in the model's order.
    """

    logits: torch.Tensor
    objective: Objective
    layers: dict[str, dict[str, torch.Tensor]]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter, keyed by its name."""
        return {name: p for layer in self.layers.values() for name, p in layer.items()}

    def vectors(self, logit_grads: torch.Tensor, batched: bool) -> dict[str, torch.Tensor]:
        """Logit gradients (R, B, n) or (B, n) as one flat vector per layer ((R, P) or (P,))."""
        pulled = backprop(self.logits, self.params, logit_grads, batched=batched)
        start = 1 if batched else 0
        out = {LOGITS: logit_grads.double().flatten(start)}
        for layer, params in self.layers.items():
            out[layer] = torch.cat([pulled[name].flatten(start) for name in params], dim=-1)
        return out


def reference_vectors(
    problem: Problem, ref: Reference
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, torch.Tensor | None]]:
    """Per layer: the reference, its own variance (0 when exact), and the centred group means
    of a noisy reference's draws (None when exact)."""
    vectors = problem.vectors(ref.grad, batched=False)
    noise = {name: 0.0 for name in vectors}
    spread: dict[str, torch.Tensor | None] = {name: None for name in vectors}
    if not ref.exact and ref.group_means is not None and ref.group_means.shape[0] > 1:
        groups = ref.group_means.shape[0]
        for name, vec in problem.vectors(ref.group_means, batched=True).items():
            spread[name] = vec - vec.mean(dim=0)
            noise[name] = float(vec.var(dim=0).sum()) / groups
        noise[LOGITS] = float(ref.stderr.pow(2).sum())  # from every draw, not the groups
    return vectors, noise, spread


def measure(
    problem: Problem,
    ref: Reference,
    sampler: Sampler,
    *,
    draws: int = DRAWS,
    groups: int = GROUPS,
    chunk: int = CHUNK,
    generator: torch.Generator | None = None,
) -> dict[str, stats.LayerSums]:
    """The sufficient statistics of `draws` estimates (rounded up to a multiple of the groups)."""
    target, noise, spread = reference_vectors(problem, ref)
    size = sum(v.numel() for name, v in target.items() if name != LOGITS)
    groups = max(2, min(groups, draws, GROUP_BYTES // max(1, 8 * size)))
    per_group = -(-draws // groups)
    draws = groups * per_group
    sums = {name: torch.zeros(groups, v.numel(), dtype=torch.float64) for name, v in target.items()}
    square = {name: torch.zeros(groups, dtype=torch.float64) for name in target}
    done = 0
    while done < draws:
        count = min(chunk, draws - done)
        estimates = sampler.draw(problem.logits, problem.objective, count, generator)
        for name, vec in problem.vectors(estimates, batched=True).items():
            d = (vec - target[name]).cpu()
            for g, lo, hi in group_spans(torch.arange(done, done + count) // per_group):
                sums[name][g] += d[lo:hi].sum(0)
                square[name][g] += d[lo:hi].pow(2).sum()
        done += count
    out = {}
    for name, vec in target.items():
        means = sums[name] / per_group
        ref_groups = None if spread[name] is None else spread[name].cpu()
        out[name] = stats.LayerSums(
            gram=(means @ means.T).numpy(),
            along=(means @ vec.cpu()).numpy(),
            square=(square[name] / per_group).numpy(),
            norm2=float(vec.pow(2).sum()),
            draws=groups * per_group,
            ref_var=noise[name],
            ref_gram=None if ref_groups is None else (ref_groups @ ref_groups.T).numpy(),
            cross=None if ref_groups is None else (means @ ref_groups.T).numpy(),
        )
    total = [out[layer] for layer in problem.layers]
    out[TOTAL] = sum(total[1:], total[0])
    return out


def compare(
    problem: Problem,
    ref: Reference,
    estimators: Sequence[Any],
    *,
    draws: int = DRAWS,
    groups: int = GROUPS,
    chunk: int = CHUNK,
    ms: Sequence[float] = MS,
    budgets: Sequence[float] = BUDGETS,
    seed: int = 0,
    resamples: int = stats.RESAMPLES,
) -> list[dict[str, Any]]:
    """Each estimator's bias, variance and M-sample error per layer (JSON-ready rows).

    Every estimator draws from a generator seeded with `seed` (estimators that sample
    1{u < σ(ℓ)} then share their bits), and the bootstrap uses numpy's `default_rng(seed)`.
    """
    rows = []
    for estimator in estimators:
        sampler = Sampler(estimator)
        started = time.perf_counter()
        sums = measure(
            problem,
            ref,
            sampler,
            draws=draws,
            groups=groups,
            chunk=chunk,
            generator=torch.Generator().manual_seed(seed),
        )
        layers = {
            name: stats.summarise(
                s,
                ms,
                evaluations=sampler.evaluations,
                budgets=budgets,
                resamples=resamples,
                seed=seed,
            )
            for name, s in sums.items()
        }
        rows.append(
            {
                "estimator": sampler.spec,
                "evaluations": sampler.evaluations,
                "draws": sums[LOGITS].draws,
                "groups": int(sums[LOGITS].gram.shape[0]),
                "seconds": time.perf_counter() - started,
                "layers": layers,
            }
        )
    return rows
