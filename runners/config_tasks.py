"""The run config's task-dependent parts: each task's defaults, the fields only one task uses,
and which estimators fit which task (from the registry's metadata, before anything runs).

`runners.config` calls `task_problems` while it validates a config; the tasks themselves live in
`runners.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# The article's task is the default: a run id of it is what it was before tasks existed
# (`runners.store.format.identity_of` adds `task` and the `vae_*` fields only for another task).
DEFAULT_TASK = "autoencoder"
TASKS = (DEFAULT_TASK, "bernoulli_vae")

VAE_ARCHS = ("linear", "nonlinear")
# The VAE's training split: the first 5/6 of each dataset's fixed train selection (MNIST: 50000
# of 60000, the reference's train[:50000]); the rest is its validation split.
VAE_TRAIN_SIZES = {"mnist": 50_000, "mnist-mini": 5_000}
MAX_LATENTS = 4096
MAX_EVAL_SAMPLES = 10_000
# Fields whose default (None) is the task's own value, resolved when the config is built: the
# article's recipe for the autoencoder, the DisARM protocol's for the VAE (Keras' Adam betas).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "autoencoder": {
        "estimator": "hardtanh",
        "lr": 1e-3,
        "batch_size": 64,
        "beta1": 0.5,
        "beta2": 0.999,
    },
    "bernoulli_vae": {
        "estimator": "disarm",
        "lr": 1e-4,
        "batch_size": 50,
        "beta1": 0.9,
        "beta2": 0.999,
    },
}
# Fields of the article's model only: a VAE config must leave them at their defaults.
ARTICLE_ONLY = (
    "code_channels",
    "pre_threshold_relu",
    "probe",
    "precision",
    "compile",
    "cuda_graph",
)
# Fields of the VAE only: an autoencoder config must leave them at their defaults.
VAE_ONLY = ("vae_arch", "vae_latents", "vae_eval_samples", "vae_prior_lr", "vae_train_eval")


def task_problems(
    task: str,
    values: Mapping[str, Any],
    want: Callable[[str], bool],
    defaults: Mapping[str, Any],
) -> list[str]:
    """One line per problem: a field of the other task changed from its default (`defaults`),
    an estimator that does not fit the task, a training subset past the VAE's training split.
    `want(field)`: whether problems of that field are reported."""
    foreign = ARTICLE_ONLY if task != DEFAULT_TASK else VAE_ONLY
    errors = [
        f"{name} is not used by task {task!r} (leave it at {defaults[name]!r})"
        for name in foreign
        if values.get(name) != defaults[name] and want(name)
    ]
    if errors or "estimator" not in values:
        return errors
    from ste_variants import get_estimator  # lazily: the registry imports torch

    try:
        kind = type(get_estimator(values["estimator"]))
    except Exception:  # reported by the estimator check
        return errors
    if task == DEFAULT_TASK:
        if kind.family != "threshold" and want("estimator"):
            errors.append(
                f"estimator {kind.name!r} is {kind.family}: it needs a per-example objective at "
                "several samples, which the article's deterministic autoencoder does not have "
                "(use task 'bernoulli_vae')"
            )
        return errors
    if kind.samples_from != "bernoulli" and (want("estimator") or want("task")):
        why = (
            "it does not sample (a deterministic threshold)"
            if kind.samples_from is None
            else f"it samples from the {kind.samples_from.replace('_', ' ')}, not the "
            "encoder's Bernoulli(σ(logits))"
        )
        errors.append(f"estimator {kind.name!r} cannot train task {task!r}: {why}")
    train_size = VAE_TRAIN_SIZES.get(values.get("dataset"))
    subset = values.get("train_subset")
    if train_size and subset is not None and subset > train_size and want("train_subset"):
        errors.append(
            f"train_subset {subset} exceeds the {train_size} training images of "
            f"{values['dataset']} in task {task!r} (the rest is its validation split)"
        )
    return errors
