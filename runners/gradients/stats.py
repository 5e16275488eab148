"""Bias, variance and error of a gradient estimator against a reference, with bootstrap intervals.

numpy only. The input is a `LayerSums`: R independent estimates g_r of one layer's gradient
(a vector), reduced to G equal groups of R/G draws, against the reference g* (docs/gradients.md).
With d_r = g_r − g*, the group means m_g − g* and the per-draw ‖d_r‖², every quantity below is
unbiased (μ = E g_r, V = tr Cov g_r, σ²_ref = the reference's own variance, 0 when exact):

    V̂      = R/(R−1) · (mean_r ‖d_r‖² − ‖d̄‖²)
    ‖μ−g*‖² ≈ ‖d̄‖² − V̂/R − σ²_ref                 (squared bias)
    ‖μ‖²    ≈ ‖d̄ + g*‖² − V̂/R,   ⟨g*, μ⟩ ≈ ⟨g*, d̄ + g*⟩,   ‖g*‖² ≈ ‖g*_ref‖² − σ²_ref

and for the mean of M independent estimates, ḡ_M:

    rel. RMSE(M) = √(E‖ḡ_M − g*‖²) / ‖g*‖ = √(‖μ−g*‖² + V/M) / ‖g*‖
                   (the squared bias's estimate clipped at 0; its lower bound at least V/M)
    cosine(M)    = E⟨g*, ḡ_M⟩ / (‖g*‖ √(E‖ḡ_M‖²)) = ⟨g*, μ⟩ / (‖g*‖ √(‖μ‖² + V/M))

(the cosine is the ratio of expectations, the first-order value of E[cos]; it tends to
cos(μ, g*) as M grows). Intervals: the basic (pivotal) bootstrap over the G groups, with the
bootstrap world's own truth (the empirical mean d̄ and population variance) as its centre, so a
statistic that is unbiased but skewed near zero (the squared bias) is not pushed away from zero;
near zero bias that interval is conservative (the resampled squared norm spreads more than the
true one), so whether a bias is there at all is decided by a sign-flip test (`sign_flip_p`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class LayerSums:
    """Sufficient statistics of R estimates of one layer's gradient against a reference.

    Attributes:
        gram: (G, G), ⟨m_g − g*, m_h − g*⟩ for the group means m_g.
        along: (G,), ⟨m_g − g*, g*⟩.
        square: (G,), the mean over group g's draws of ‖d_r‖².
        norm2: ‖g*‖² of the reference.
        draws: R (G divides it).
        ref_var: the reference's own variance, Σ_j Var(g*_j) (0 when exact).
        ref_gram: a noisy reference's draws in Gr groups: (Gr, Gr), ⟨r_j − r̄, r_k − r̄⟩ for
            their group means r_j (None when exact).
        cross: (G, Gr), ⟨m_g − g*, r_j − r̄⟩ (None when exact).
    """

    gram: np.ndarray
    along: np.ndarray
    square: np.ndarray
    norm2: float
    draws: int
    ref_var: float = 0.0
    ref_gram: np.ndarray | None = None
    cross: np.ndarray | None = None

    def __add__(self, other: LayerSums) -> LayerSums:
        """The sums of the concatenation of two layers' vectors (same draws and groups)."""
        noisy = self.ref_gram is not None and other.ref_gram is not None
        return LayerSums(
            gram=self.gram + other.gram,
            along=self.along + other.along,
            square=self.square + other.square,
            norm2=self.norm2 + other.norm2,
            draws=self.draws,
            ref_var=self.ref_var + other.ref_var,
            ref_gram=self.ref_gram + other.ref_gram if noisy else None,
            cross=self.cross + other.cross if noisy else None,
        )


def _moments(sums: LayerSums, weights: np.ndarray, population: bool) -> dict[str, np.ndarray]:
    """(b2, V, mu2, dot, n2) for rows of group weights (each row sums to 1).

    population=True gives the bootstrap world's truth (no small-sample corrections).
    """
    e2 = np.einsum("bg,gh,bh->b", weights, sums.gram, weights)
    a = weights @ sums.along
    mean_square = weights @ sums.square
    r = sums.draws
    if population:
        variance = mean_square - e2
        correction = 0.0
    else:
        variance = r / (r - 1) * (mean_square - e2)
        correction = variance / r
    return {
        "b2": e2 - correction - sums.ref_var,
        "V": variance,
        "mu2": e2 + 2 * a + sums.norm2 - correction,
        "dot": sums.norm2 + a,
        "n2": np.full_like(e2, sums.norm2 - sums.ref_var),
    }


def _rel_bias2(m: dict[str, np.ndarray]) -> np.ndarray:
    return m["b2"] / m["n2"]


def _rel_mse(mc: float):
    return lambda m: (np.maximum(m["b2"], 0.0) + m["V"] / mc) / m["n2"]


def _cosine(mc: float):
    return lambda m: m["dot"] / np.sqrt(m["n2"] * np.maximum(m["mu2"] + m["V"] / mc, 1e-300))


def _rel_variance(m: dict[str, np.ndarray]) -> np.ndarray:
    return m["V"] / m["n2"]


class _Bootstrap:
    """The point estimates, the resampled ones and the bootstrap world's truth."""

    def __init__(self, sums: LayerSums, resamples: int, seed: int) -> None:
        groups = sums.gram.shape[0]
        uniform = np.full((1, groups), 1.0 / groups)
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(groups, np.full(groups, 1.0 / groups), size=resamples)
        self.point = _moments(sums, uniform, population=False)
        self.truth = _moments(sums, uniform, population=True)
        self.replicates = _moments(sums, counts / groups, population=False)

    def interval(self, stat, level: float) -> tuple[float, list[float], float]:
        """(estimate, basic bootstrap interval, bootstrap standard deviation) of `stat`."""
        estimate = float(stat(self.point)[0])
        centre = float(stat(self.truth)[0])
        reps = stat(self.replicates)
        reps = reps[np.isfinite(reps)]
        if reps.size < 2:
            return estimate, [estimate, estimate], 0.0
        lo_q, hi_q = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
        return estimate, [estimate - (hi_q - centre), estimate - (lo_q - centre)], float(reps.std())


def summarise(
    sums: LayerSums,
    ms: Sequence[float],
    *,
    evaluations: float = 1.0,
    budgets: Sequence[float] = (),
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Bias, variance and the M-sample error of one layer, JSON-ready.

    Args:
        sums: the layer's sufficient statistics.
        ms: sample counts M for the error rows.
        evaluations: objective evaluations per estimate (per example), for the budget rows.
        budgets: evaluation budgets E; each row uses M = E / evaluations (rows with M < 1 left out).
        resamples: bootstrap resamples of the groups (a numpy Generator seeded with `seed`).
        level: the intervals' coverage.
    """
    if sums.norm2 - sums.ref_var <= 0:
        return {"norm": 0.0, "bias": None, "variance": None, "by_m": [], "by_evaluations": []}
    boot = _Bootstrap(sums, resamples, seed)
    b2, b2_ci, b2_sd = boot.interval(_rel_bias2, level)
    p_value = sign_flip_p(sums, resamples, seed)
    var, var_ci, _ = boot.interval(_rel_variance, level)
    out: dict[str, Any] = {
        "norm": float(np.sqrt(sums.norm2)),
        "ref_rel_stderr": float(np.sqrt(sums.ref_var / sums.norm2)),
        "bias": float(np.sqrt(max(b2, 0.0))),
        "bias_ci": [float(np.sqrt(max(v, 0.0))) for v in b2_ci],
        "bias2": b2,
        "bias2_ci": b2_ci,
        "bias_z": b2 / b2_sd if b2_sd > 0 else None,
        "bias_p": p_value,
        "variance": var,
        "variance_ci": var_ci,
        "variance_abs": float(boot.point["V"][0]),
        "by_m": [_row(boot, float(m), float(m) * evaluations, level) for m in ms],
        "by_evaluations": [
            _row(boot, e / evaluations, float(e), level) for e in budgets if e >= evaluations
        ],
    }
    return out


def _row(boot: _Bootstrap, m: float, evaluations: float, level: float) -> dict[str, Any]:
    mse, mse_ci, _ = boot.interval(_rel_mse(m), level)
    # The squared bias is never negative: the error is at least the variance part, V/M.
    _, var_ci, _ = boot.interval(_rel_variance, level)
    mse_ci = [max(mse_ci[0], var_ci[0] / m, 0.0), max(mse_ci[1], mse)]
    cos, cos_ci, _ = boot.interval(_cosine(m), level)
    return {
        "m": m,
        "evaluations": evaluations,
        "rel_rmse": float(np.sqrt(max(mse, 0.0))),
        "rel_rmse_ci": [float(np.sqrt(max(v, 0.0))) for v in mse_ci],
        "cosine": cos,
        "cosine_ci": [max(-1.0, min(1.0, v)) for v in cos_ci],
    }


def sign_flip_p(sums: LayerSums, resamples: int, seed: int) -> float:
    """p-value of "no bias" (μ = g*): a sign-flip test on the group means.

    Exact reference: T = Σ_{g≠h} ⟨y_g, y_h⟩ / (G(G − 1)) with y_g = m_g − g*, unbiased for
    ‖μ − g*‖²; under no bias the y_g are centred and (group means of many draws) nearly
    symmetric, so T is compared with its values under random signs s_g ∈ {±1} (exact for
    symmetric group means).

    Noisy reference (`ref_gram` given): the difference of two means, d̄ = m̄ − r̄, whose noise
    under no bias is that of both; T = ‖d̄‖² is compared with ‖D*‖², D* = a·Σ_g s_g (m_g − m̄)
    − c·Σ_j t_j (r_j − r̄) with independent signs and a = √(G/(G−1))/G, c = √(Gr/(Gr−1))/Gr,
    so that D* has the covariance of m̄ − r̄ (approximate: centred group means).
    """
    groups = sums.gram.shape[0]
    rng = np.random.default_rng([seed, 1])
    signs = rng.choice([-1.0, 1.0], size=(resamples, groups))
    if sums.ref_gram is None or sums.cross is None:
        pairs = groups * (groups - 1)
        trace = float(np.trace(sums.gram))
        observed = (float(sums.gram.sum()) - trace) / pairs - sums.ref_var
        flipped = (np.einsum("bg,gh,bh->b", signs, sums.gram, signs) - trace) / pairs
        return float((1 + np.count_nonzero(flipped >= observed)) / (resamples + 1))
    ref_groups = sums.ref_gram.shape[0]
    centre = np.eye(groups) - 1.0 / groups
    gram = centre @ sums.gram @ centre
    cross = centre @ sums.cross
    a = np.sqrt(groups / (groups - 1)) / groups
    c = np.sqrt(ref_groups / (ref_groups - 1)) / ref_groups
    ref_signs = rng.choice([-1.0, 1.0], size=(resamples, ref_groups))
    flipped = (
        a * a * np.einsum("bg,gh,bh->b", signs, gram, signs)
        - 2 * a * c * np.einsum("bg,gj,bj->b", signs, cross, ref_signs)
        + c * c * np.einsum("bj,jk,bk->b", ref_signs, sums.ref_gram, ref_signs)
    )
    observed = float(sums.gram.sum()) / groups**2  # ‖m̄ − r̄‖²
    return float((1 + np.count_nonzero(flipped >= observed)) / (resamples + 1))


def bias_detected(summary: dict[str, Any], alpha: float = 0.05) -> bool:
    """Whether the bias is distinguishable from 0: the sign-flip test's p-value below `alpha`."""
    p = summary.get("bias_p")
    return p is not None and p < alpha


def powers_of_two(top: int) -> list[int]:
    """1, 2, 4, ..., up to `top`."""
    out, m = [], 1
    while m <= top:
        out.append(m)
        m *= 2
    return out


def layer_sums(
    estimates: np.ndarray,
    reference: np.ndarray,
    groups: int,
    ref_var: float = 0.0,
    ref_groups: np.ndarray | None = None,
) -> LayerSums:
    """The `LayerSums` of R explicit estimates (R, P) against `reference` (P,), in G groups.

    `ref_groups` (Gr, P): a noisy reference's group means (`reference` is their mean).
    """
    draws = estimates.shape[0]
    if draws % groups:
        raise ValueError(f"{groups} groups do not divide {draws} draws")
    d = (estimates - reference).reshape(groups, draws // groups, -1)
    means = d.mean(axis=1)
    centred = None if ref_groups is None else ref_groups - ref_groups.mean(axis=0)
    return LayerSums(
        gram=means @ means.T,
        along=means @ reference,
        square=(d**2).sum(axis=2).mean(axis=1),
        norm2=float(reference @ reference),
        draws=draws,
        ref_var=ref_var,
        ref_gram=None if centred is None else centred @ centred.T,
        cross=None if centred is None else means @ centred.T,
    )
