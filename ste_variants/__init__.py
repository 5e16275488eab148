"""Straight-through estimators for a 0/1 threshold, in a registry (pure torch).

    from ste_variants import get_estimator, Binarize
    est = get_estimator("sigmoid(beta=4)")
    y = est(x, training=True)          # exact 0/1 of x > 0, surrogate gradient backward

See ``list_estimators()``, ``describe(name)`` and docs/estimators.md.
"""

# Importing the estimator modules registers the built-ins; listing order is import order
# (deterministic first: annealed imports it; categorical imports stochastic).
from ste_variants import (  # noqa: F401
    annealed,
    categorical,
    deterministic,
    spiking,
    stochastic,
    unbiased,
)
from ste_variants.base import Estimator, Param
from ste_variants.module import Binarize
from ste_variants.registry import (
    ENTRY_POINT_GROUP,
    canonical_spec,
    describe,
    get_estimator,
    list_estimators,
    load_plugins,
    register_estimator,
)
from ste_variants.spec import EstimatorSpecError
from ste_variants.unbiased import Estimate, estimate_gradient, evaluations_per_step

__all__ = [
    "ENTRY_POINT_GROUP",
    "Binarize",
    "Estimate",
    "Estimator",
    "EstimatorSpecError",
    "Param",
    "canonical_spec",
    "describe",
    "estimate_gradient",
    "evaluations_per_step",
    "get_estimator",
    "list_estimators",
    "load_plugins",
    "register_estimator",
]
