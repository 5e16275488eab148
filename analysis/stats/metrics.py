"""Which way is better for each metric, and the metric names the run store writes.

Shared by the statistics and the figures, so that a rank, a "best" mark and an axis label
always agree on the direction.
"""

from __future__ import annotations

from runners.store.format import TIMING_KEYS

# Epoch-record metrics in the order of docs/architecture.md section 3 (the tidy table keeps it).
EPOCH_METRICS: tuple[str, ...] = (
    "images_seen",
    "train_mse",
    "test_mse",
    "test_psnr",
    "mean_image_mse",
    "bit_entropy",
    "dead_bits",
    "unique_codes",
    "bit_flip_rate",
    "active_rate",
    "grad_norm_pre",
    "epoch_time_s",
    "images_per_s",
    "probe_accuracy",
    *(
        # The Bernoulli VAE task (docs/tasks.md): the training objective (mean -ELBO of the
        # epoch's steps), -ELBO on the fixed training subset, the K-sample bound on the test
        # set, the running variance of the encoder's gradient, objective evaluations per step.
        "train_loss",
        "train_neg_elbo",
        "test_iwae_bound",
        "grad_var",
        "evaluations",
    ),
)
# Gradient diagnostics (runners.training.diagnostics; docs/diagnostics.md), in the figure's order.
DIAGNOSTIC_METRICS: tuple[str, ...] = (
    "diag_flip_corr",
    "diag_descent_agreement",
    "diag_coverage",
    "diag_cosine_smoothed_tau0_1",
    "diag_cosine_smoothed_tau1",
    "diag_rel_to_identity",
    "diag_grad_snr",
)
# The run's estimator against the exact expected gradient at a few checkpoints (`gerr_*`:
# runners.gradients.names; docs/gradients.md), in the figure's order.
GRADIENT_ERROR_METRICS: tuple[str, ...] = (
    "gerr_bias",
    "gerr_variance",
    "gerr_rmse_m1",
    "gerr_rmse_m16",
    "gerr_rmse_e16",
    "gerr_cosine_m1",
    "gerr_cosine_m16",
    "gerr_bias_p",
)
# Scalars that only summary.json carries (attached to the run's last epoch).
SUMMARY_METRICS: tuple[str, ...] = ("wall_time_s",)
# How fast a run went, not what it learnt: left out when comparing results (the store's list).
TIMING_METRICS: tuple[str, ...] = tuple(sorted(TIMING_KEYS))

_LOWER = {
    "train_mse",
    "test_mse",
    "dead_bits",
    "epoch_time_s",
    "wall_time_s",
    "train_loss",
    "diag_time_s",
    "train_neg_elbo",
    "test_iwae_bound",
    "grad_var",
    "evaluations",  # objective evaluations per step: a cost
}
_HIGHER = {"test_psnr", "probe_accuracy", "bit_entropy", "unique_codes", "images_per_s"}
# Fidelity to the exact flip effects: higher is more faithful (rel_to_identity has no direction).
_HIGHER |= {m for m in DIAGNOSTIC_METRICS if m != "diag_rel_to_identity"}
# Distance to the exact gradient: lower is better, the cosine higher (a p-value has no direction).
_LOWER |= {
    m for m in GRADIENT_ERROR_METRICS if "_rmse_" in m or m in ("gerr_bias", "gerr_variance")
}
_LOWER |= {"gerr_time_s"}
_HIGHER |= {m for m in GRADIENT_ERROR_METRICS if "_cosine_" in m}

LABELS: dict[str, str] = {
    "images_seen": "images trained on",
    "mean_image_mse": "test MSE of the mean training image",
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
    "diag_flip_corr": "flip corr. (exact vs linear)",
    "diag_descent_agreement": "descent agreement",
    "diag_coverage": "coverage",
    "diag_cosine_smoothed_tau0_1": "cosine with R (τ=0.1)",
    "diag_cosine_smoothed_tau1": "cosine with R (τ=1)",
    "diag_rel_to_identity": "distance to identity STE",
    "diag_grad_snr": "gradient SNR",
    "diag_time_s": "diagnostics time (s)",
    "train_loss": "training objective",
    "train_neg_elbo": "−ELBO, training subset (nats)",
    "test_iwae_bound": "test bound, K-sample IWAE (nats)",
    "grad_var": "encoder gradient variance",
    "evaluations": "objective evaluations / step",
    "gerr_bias": "bias ‖E ĝ − ∇‖/‖∇‖",
    "gerr_variance": "variance tr Cov ĝ / ‖∇‖²",
    "gerr_rmse_m1": "rel. RMSE, 1 estimate",
    "gerr_rmse_m16": "rel. RMSE, mean of 16",
    "gerr_rmse_e16": "rel. RMSE at 16 evaluations",
    "gerr_cosine_m1": "cosine with ∇, 1 estimate",
    "gerr_cosine_m16": "cosine with ∇, mean of 16",
    "gerr_bias_p": "p-value of zero bias",
    "gerr_time_s": "exact-gradient check time (s)",
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
