"""Which way is better for each metric, and the metric names the run store writes.

Shared by the statistics and the figures, so that a rank, a "best" mark and an axis label
always agree on the direction.
"""

from __future__ import annotations

# Epoch-record metrics in the order of docs/architecture.md section 3 (the tidy table keeps it).
EPOCH_METRICS: tuple[str, ...] = (
    "train_mse",
    "test_mse",
    "test_psnr",
    "bit_entropy",
    "dead_bits",
    "unique_codes",
    "bit_flip_rate",
    "active_rate",
    "grad_norm_pre",
    "epoch_time_s",
    "images_per_s",
    "probe_accuracy",
)
# Scalars that only summary.json carries (attached to the run's last epoch).
SUMMARY_METRICS: tuple[str, ...] = ("wall_time_s",)
# How fast a run went, not what it learnt: left out when comparing results.
TIMING_METRICS: tuple[str, ...] = ("epoch_time_s", "images_per_s", "wall_time_s")

_LOWER = {
    "train_mse",
    "test_mse",
    "dead_bits",
    "epoch_time_s",
    "wall_time_s",
    "train_loss",
}
_HIGHER = {"test_psnr", "probe_accuracy", "bit_entropy", "unique_codes", "images_per_s"}

LABELS: dict[str, str] = {
    "train_mse": "train MSE",
    "test_mse": "test MSE",
    "test_psnr": "test PSNR (dB)",
    "bit_entropy": "bit entropy (bits)",
    "dead_bits": "dead bits",
    "unique_codes": "unique codes",
    "bit_flip_rate": "bit flip rate",
    "active_rate": "active rate",
    "grad_norm_pre": "gradient norm before the threshold",
    "epoch_time_s": "epoch time (s)",
    "images_per_s": "images / s",
    "probe_accuracy": "probe accuracy",
    "wall_time_s": "wall time (s)",
}


def direction(metric: str, override: str | None = None) -> str:
    """Return "lower" or "higher": which values of `metric` are better.

    Args:
        metric: metric name (e.g. "test_mse").
        override: "lower" or "higher" to force a direction (for metrics not listed here).

    Raises:
        ValueError: the metric has no known direction and no override was given.
    """
    if override is not None:
        if override not in ("lower", "higher"):
            raise ValueError(f"direction must be 'lower' or 'higher', not {override!r}")
        return override
    if metric in _LOWER:
        return "lower"
    if metric in _HIGHER:
        return "higher"
    raise ValueError(
        f"no known direction for metric {metric!r}; say which values are better "
        "(--direction lower|higher)"
    )


def lower_is_better(metric: str, override: str | None = None) -> bool:
    """True when smaller values of `metric` are better."""
    return direction(metric, override) == "lower"


def label(metric: str) -> str:
    """A readable axis label for `metric`."""
    return LABELS.get(metric, metric.replace("_", " "))
