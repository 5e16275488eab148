"""What a run records: the scalars of its epoch records (metrics.jsonl) and summary.json, which
values of each are better, and how a figure labels each.

`METRICS` is the one table: a new metric is one row here (and the code that computes it). Every
list the training, the store, the command line and the analysis read is derived from it. Standard
library only, like `runners.store.format`: the analysis and the commands read it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# The gradient diagnostics (docs/diagnostics.md; `runners.training.diagnostics` computes them).
DIAGNOSTICS_PREFIX = "diag_"  # every diagnostic key of the epoch record starts with it
TAUS = (0.1, 1.0)  # temperatures of the diagnostics' smoothed-loss gradient R_τ
DRAWS = 8  # the diagnostics' noise draws per stochastic estimator

# The exact-gradient checkpoints (docs/gradients.md; `runners.gradients.during` computes them).
GRADIENT_ERROR_PREFIX = "gerr_"
GRADIENT_ERROR_MS = (1, 16)  # estimates averaged, for the rmse and cosine keys
GRADIENT_ERROR_BUDGETS = (16,)  # objective evaluations per example, for the equal-cost key
GRADIENT_ERROR_TIME = f"{GRADIENT_ERROR_PREFIX}time_s"  # seconds the checkpoint took

# Keys of an epoch record that are not metrics: its place in training and a per-bit list.
RECORD_INDEX = ("epoch", "step")
RECORD_LISTS = ("bit_rates",)  # one activation rate per code bit (the autoencoder)

# Which task's runs record a metric (config field `task`); None: every task's.
AUTOENCODER, VAE = "autoencoder", "bernoulli_vae"
# Where a metric is: every epoch record, the diagnostics' epochs, the checkpoints' epochs, or
# summary.json only (attached to the run's last epoch in the analysis).
EPOCH, DIAGNOSTIC, GRADIENT_ERROR, SUMMARY = "epoch", "diagnostic", "gradient_error", "summary"
LOWER, HIGHER = "lower", "higher"


def tau_name(tau: float) -> str:
    """τ in a metric name: 1 → "1", 0.1 → "0_1" (no dots: W&B reads them as nesting)."""
    return f"{tau:g}".replace(".", "_")


def smoothed_cosine(tau: float) -> str:
    """The diagnostic (without its prefix) comparing the gradient with R_τ."""
    return f"cosine_smoothed_tau{tau_name(tau)}"


def _estimates(m: int) -> str:
    return "1 estimate" if m == 1 else f"mean of {m}"


@dataclass(frozen=True)
class Metric:
    """One scalar a run records.

    Attributes:
        name: its key in the epoch record or summary.json.
        group: EPOCH, DIAGNOSTIC, GRADIENT_ERROR or SUMMARY (where it is recorded).
        direction: LOWER or HIGHER (which values are better), or None (neither: a count, a
            p-value, a distance from another estimator).
        label: a readable axis label.
        timing: how fast the run went, not what it learnt (left out when runs are compared).
        task: the task whose runs record it (AUTOENCODER, VAE), or None for every task's.
    """

    name: str
    group: str
    direction: str | None
    label: str
    timing: bool = False
    task: str | None = None


_G = GRADIENT_ERROR_PREFIX
# In the order of docs/architecture.md section 3 (the tidy table keeps it), then the figures'.
_ROWS: tuple[Metric, ...] = (
    Metric("images_seen", EPOCH, None, "images trained on"),
    Metric("train_mse", EPOCH, LOWER, "train MSE", task=AUTOENCODER),
    Metric("test_mse", EPOCH, LOWER, "test MSE", task=AUTOENCODER),
    Metric("test_psnr", EPOCH, HIGHER, "test PSNR (dB)", task=AUTOENCODER),
    Metric("mean_image_mse", EPOCH, None, "test MSE of the mean training image", task=AUTOENCODER),
    Metric("bit_entropy", EPOCH, HIGHER, "bit entropy (bits)", task=AUTOENCODER),
    Metric("dead_bits", EPOCH, LOWER, "dead bits", task=AUTOENCODER),
    Metric("unique_codes", EPOCH, HIGHER, "unique codes", task=AUTOENCODER),
    Metric("bit_flip_rate", EPOCH, None, "bit flip rate", task=AUTOENCODER),
    Metric("active_rate", EPOCH, None, "active rate", task=AUTOENCODER),
    Metric("grad_norm_pre", EPOCH, None, "gradient norm before the threshold", task=AUTOENCODER),
    Metric("epoch_time_s", EPOCH, LOWER, "epoch time (s)", timing=True),
    Metric("images_per_s", EPOCH, HIGHER, "images / s", timing=True),
    # The last epoch's record only.
    Metric("probe_accuracy", EPOCH, HIGHER, "probe accuracy", task=AUTOENCODER),
    # The Bernoulli VAE (docs/tasks.md): the training objective (mean −ELBO of the epoch's
    # steps), −ELBO on the fixed training subset, the K-sample bound on the test set, the
    # running variance of the encoder's gradient, objective evaluations per step (a cost).
    Metric("train_loss", EPOCH, LOWER, "training objective", task=VAE),
    Metric("train_neg_elbo", EPOCH, LOWER, "−ELBO, training subset (nats)", task=VAE),
    Metric("test_iwae_bound", EPOCH, LOWER, "test bound, K-sample IWAE (nats)", task=VAE),
    Metric("grad_var", EPOCH, LOWER, "encoder gradient variance", task=VAE),
    Metric("evaluations", EPOCH, LOWER, "objective evaluations / step", task=VAE),
    Metric("wall_time_s", SUMMARY, LOWER, "wall time (s)", timing=True),
    # Fidelity to the exact flip effects: higher is more faithful (the distance to the identity
    # STE has no better direction). With `diagnostics: epoch`; the autoencoder's threshold only.
    *(
        Metric(f"{DIAGNOSTICS_PREFIX}{name}", DIAGNOSTIC, direction, label, task=AUTOENCODER)
        for name, direction, label in (
            ("flip_corr", HIGHER, "flip corr. (exact vs linear)"),
            ("descent_agreement", HIGHER, "descent agreement"),
            ("coverage", HIGHER, "coverage"),
            *((smoothed_cosine(t), HIGHER, f"cosine with R (τ={t:g})") for t in TAUS),
            ("rel_to_identity", None, "distance to identity STE"),
            ("grad_snr", HIGHER, "gradient SNR"),
        )
    ),
    Metric("diag_time_s", DIAGNOSTIC, LOWER, "diagnostics time (s)", timing=True, task=AUTOENCODER),
    # Distance to the exact expected gradient: lower is better, the cosine higher (a p-value
    # has no direction). With `gradient_error: checkpoints`, at the checkpoints' epochs.
    Metric(f"{_G}bias", GRADIENT_ERROR, LOWER, "bias ‖E ĝ − ∇‖/‖∇‖"),
    Metric(f"{_G}variance", GRADIENT_ERROR, LOWER, "variance tr Cov ĝ / ‖∇‖²"),
    *(
        Metric(f"{_G}rmse_m{m}", GRADIENT_ERROR, LOWER, f"rel. RMSE, {_estimates(m)}")
        for m in GRADIENT_ERROR_MS
    ),
    *(
        Metric(f"{_G}rmse_e{e}", GRADIENT_ERROR, LOWER, f"rel. RMSE at {e} evaluations")
        for e in GRADIENT_ERROR_BUDGETS
    ),
    *(
        Metric(f"{_G}cosine_m{m}", GRADIENT_ERROR, HIGHER, f"cosine with ∇, {_estimates(m)}")
        for m in GRADIENT_ERROR_MS
    ),
    Metric(f"{_G}bias_p", GRADIENT_ERROR, None, "p-value of zero bias"),
    Metric(
        GRADIENT_ERROR_TIME, GRADIENT_ERROR, LOWER, "exact-gradient check time (s)", timing=True
    ),
)


def _by_name(rows: tuple[Metric, ...]) -> dict[str, Metric]:
    table: dict[str, Metric] = {}
    for row in rows:
        if row.name in table:
            raise ValueError(f"metric {row.name!r} is listed twice")
        table[row.name] = row
    return table


METRICS: dict[str, Metric] = _by_name(_ROWS)  # the table, by name, in its order


def metric_names(
    group: str, *, timing: bool | None = None, task: str | None = None
) -> tuple[str, ...]:
    """The metrics of `group` in table order; only timings (True) or none (False); only those a
    run of `task` records (every task's and its own)."""
    return tuple(
        m.name
        for m in METRICS.values()
        if m.group == group
        and (timing is None or m.timing == timing)
        and (task is None or m.task in (None, task))
    )


# Epoch-record metrics in the order of docs/architecture.md section 3.
EPOCH_METRICS = metric_names(EPOCH)
# Scalars that only summary.json carries.
SUMMARY_METRICS = metric_names(SUMMARY)
# The gradient diagnostics and the exact-gradient checkpoints in their figures' order (no times).
DIAGNOSTIC_METRICS = metric_names(DIAGNOSTIC, timing=False)
GRADIENT_ERROR_METRICS = metric_names(GRADIENT_ERROR, timing=False)
# Record and summary keys that measure time: left out when runs are compared (bit-identity, ties).
TIMING_KEYS = frozenset(m.name for m in METRICS.values() if m.timing)


def direction(metric: str, override: str | None = None) -> str:
    """Return "lower" or "higher": which values of `metric` are better.

    Args:
        metric: metric name (e.g. "test_mse").
        override: "lower" or "higher" to force a direction (for metrics without one here).

    Raises:
        ValueError: the metric has no known direction and no override was given.
    """
    if override is not None:
        if override not in (LOWER, HIGHER):
            raise ValueError(f"direction must be 'lower' or 'higher', not {override!r}")
        return override
    known = METRICS.get(metric)
    if known is None or known.direction is None:
        raise ValueError(
            f"no known direction for metric {metric!r}; say which values are better "
            "(--direction lower|higher)"
        )
    return known.direction


def lower_is_better(metric: str, override: str | None = None) -> bool:
    """True when smaller values of `metric` are better."""
    return direction(metric, override) == LOWER


def label(metric: str) -> str:
    """A readable axis label for `metric` (its name with spaces when not in the table)."""
    known = METRICS.get(metric)
    return known.label if known is not None else metric.replace("_", " ")
