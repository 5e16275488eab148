"""Names and constants of the training records that the command line reads without torch.

The modules that compute the records (`metrics`, `diagnostics`) import torch; these names do not,
so `ste-ablate <command> --help` and the commands that only read stores start at once.
"""

from __future__ import annotations

TAUS = (0.1, 1.0)  # temperatures of the diagnostics' smoothed-loss gradient R_τ
DRAWS = 8  # the diagnostics' noise draws per stochastic estimator


def tau_name(tau: float) -> str:
    """τ in a metric name: 1 → "1", 0.1 → "0_1" (no dots: W&B reads them as nesting)."""
    return f"{tau:g}".replace(".", "_")
