"""The epoch-record keys of the exact-gradient checkpoints and their settings, without torch.

`runners.gradients.during` computes them; the analysis lists the same keys
(`analysis.stats.metrics.GRADIENT_ERROR_METRICS`) with their directions.
"""

from __future__ import annotations

from typing import Any

PREFIX = "gerr_"
FRACTIONS = (0.0, 0.1, 0.5, 1.0)  # of training: the checkpoints
MS = (1, 16)  # estimates averaged, for the rmse and cosine keys
BUDGETS = (16,)  # objective evaluations per example, for the equal-cost key
ESTIMATES = 256  # estimates per checkpoint
MAX_BITS = 16  # enumerate up to this many latents, else the local-expectation reference
REFERENCE_DRAWS = 256
RESAMPLES = 500
TIME_KEY = f"{PREFIX}time_s"
KEYS = (
    f"{PREFIX}bias",
    f"{PREFIX}bias_p",
    f"{PREFIX}variance",
    *(f"{PREFIX}rmse_m{m}" for m in MS),
    *(f"{PREFIX}cosine_m{m}" for m in MS),
    *(f"{PREFIX}rmse_e{e}" for e in BUDGETS),
)


def record_keys(summary: dict[str, Any]) -> dict[str, Any]:
    """The `gerr_*` values of one layer's summary (`runners.gradients.stats.summarise`)."""
    if summary.get("bias") is None:
        return dict.fromkeys(KEYS)
    by_m = {int(r["m"]): r for r in summary["by_m"]}
    by_e = {int(r["evaluations"]): r for r in summary["by_evaluations"]}
    out: dict[str, Any] = {
        f"{PREFIX}bias": summary["bias"],
        f"{PREFIX}bias_p": summary["bias_p"],
        f"{PREFIX}variance": summary["variance"],
    }
    for m in MS:
        out[f"{PREFIX}rmse_m{m}"] = by_m[m]["rel_rmse"]
        out[f"{PREFIX}cosine_m{m}"] = by_m[m]["cosine"]
    for e in BUDGETS:
        out[f"{PREFIX}rmse_e{e}"] = by_e[e]["rel_rmse"] if e in by_e else None
    return out
