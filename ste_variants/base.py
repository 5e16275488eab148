"""The estimator base class, hyperparameter declarations and the one autograd Function.

An estimator class holds metadata (formulas as text, hyperparameters, paper) and wires two
small pieces of math from :mod:`ste_variants.functional`: ``backward_rule`` (dL/dx from g, x
and the forward's noise) and, for stochastic estimators, ``sample_noise``. The forward is the
exact step ``1{x + noise > 0}`` computed inside an ``autograd.Function``, so it is exactly 0 or 1
for every finite x (the ``x + (q - x).detach()`` idiom is not).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ste_variants.spec import (
    EstimatorSpecError,
    format_spec,
    format_value,
    shown,
    unknown_param_message,
)

__all__ = ["Estimator", "Param"]


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, default and valid range.

    Attributes:
        name: Keyword in specs.
        default: Default value.
        doc: One line on what it does.
        kind: ``"float"``, ``"int"`` or ``"str"``.
        low, high: Range bounds, numbers only. Registration requires both, finite, and chosen
            so that the backward is finite for every finite x in every float dtype.
        low_open, high_open: Whether the bound itself is excluded.
        choices: Allowed values for ``"str"``.
    """

    name: str
    default: Any
    doc: str = ""
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def range_text(self) -> str:
        """The valid range as text, e.g. ``(0, inf)`` or ``one of st, sigmoid``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        low = "-inf" if self.low is None else format_value(float(self.low))
        high = "inf" if self.high is None else format_value(float(self.high))
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"

    def check(self, value: object, estimator: str) -> Any:
        """Convert and validate ``value``; raise a one-line EstimatorSpecError if bad."""
        where = f"{estimator}: hyperparameter {self.name!r}"
        if self.kind == "str":
            if not isinstance(value, str):
                raise EstimatorSpecError(f"{where} must be a string, got {shown(value)}")
            if self.choices and value not in self.choices:
                raise EstimatorSpecError(f"{where} must be {self.range_text()}, got {shown(value)}")
            return value
        # numbers.Real also admits numpy scalars (e.g. from a pandas grid); bool is no number here.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise EstimatorSpecError(f"{where} must be a number, got {shown(value)}")
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float):
            raise EstimatorSpecError(f"{where} must be finite, got {format_value(as_float)}")
        if self.kind == "int":
            if not as_float.is_integer():
                raise EstimatorSpecError(f"{where} must be an integer, got {shown(value)}")
            number: float = int(value)
        else:
            number = as_float
        too_low = self.low is not None and (
            number < self.low or (self.low_open and number == self.low)
        )
        too_high = self.high is not None and (
            number > self.high or (self.high_open and number == self.high)
        )
        if too_low or too_high:
            raise EstimatorSpecError(
                f"{where} must be in {self.range_text()}, got {format_value(number)}"
            )
        return number

    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata (unbounded ends are None)."""
        return {
            "default": self.default,
            "type": self.kind,
            "low": self.low,
            "high": self.high,
            "low_inclusive": self.low is not None and not self.low_open,
            "high_inclusive": self.high is not None and not self.high_open,
            "choices": list(self.choices) if self.choices else None,
            "range": self.range_text(),
            "doc": self.doc,
        }


# |x| from 1e-6 to 1e6, log-spaced, for the base class's numeric peak.
_PEAK_GRID = torch.logspace(-6, 6, 24_001, dtype=torch.float64)


class _Step(torch.autograd.Function):
    """Exact forward from the estimator's step; backward delegated to its rule."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, step: Any, rule: Any, noise: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.rule = rule
        ctx.save_for_backward(x, noise)
        return step(x, noise).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, noise = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad = ctx.rule(grad_output, x, noise)
        return grad.to(x.dtype), None, None, None


class Estimator:
    """Base class: a 0/1 threshold ``1{x > 0}`` with a surrogate gradient.

    Subclasses set the class metadata below and implement :meth:`backward_rule`; stochastic
    ones also implement :meth:`sample_noise`, annealed ones :meth:`coefficients`. Register a
    subclass with ``@register_estimator``.
    """

    name: ClassVar[str] = ""
    forward_text: ClassVar[str] = "1{x > 0} (0 at x = 0)"
    backward_text: ClassVar[str] = ""
    backward_short: ClassVar[str] = ""  # for tables; backward_text when empty
    paper: ClassVar[str] = ""  # full citation
    arxiv: ClassVar[str | None] = None
    cite: ClassVar[str] = ""  # short citation for tables, e.g. "Bengio et al. 2013"
    hyperparams: ClassVar[tuple[Param, ...]] = ()
    stochastic: ClassVar[bool] = False
    annealed: ClassVar[bool] = False
    area_note: ClassVar[str] = ""  # how the area depends on params / progress / scaling
    # "threshold": a 0/1 threshold with a custom backward (``backward_rule``); "unbiased": an
    # estimator that evaluates the objective at several samples (``estimate``, ste_variants.
    # unbiased). Which tasks an estimator fits is decided from this and ``samples_from``.
    family: ClassVar[str] = "threshold"
    # The distribution the training-mode forward samples: "bernoulli" (1{u < σ(x)}, or the
    # same law through other noise), "hard_sigmoid" (BinaryNet), or None (no sampling).
    samples_from: ClassVar[str | None] = None
    # Reference implementations checked against (text; empty when none was read).
    reference_code: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        declared = {p.name: p for p in self.hyperparams}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise EstimatorSpecError(unknown_param_message(self.name, unknown[0], declared))
        # Defaults are checked too: a plugin's bad default fails at registration.
        values = {
            p.name: p.check(params.get(p.name, p.default), self.name) for p in self.hyperparams
        }
        self._params = values
        self.progress = 0.0
        # True: draw noise so that the sampled bits are 1{u < σ(x)} of the generator's uniforms
        # wherever the definition allows (same law; pairs estimators of one seed bit for bit).
        # A run setting, not a hyperparameter: the article task leaves it False.
        self.paired_noise = False
        self.validate()

    def validate(self) -> None:
        """Cross-parameter checks (e.g. ``low < high``); raise EstimatorSpecError."""

    # --- identity -------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """All hyperparameters, defaults filled in (a copy)."""
        return dict(self._params)

    @property
    def spec(self) -> str:
        """Canonical spec: non-default hyperparameters only, sorted by name."""
        changed = {p.name: self._params[p.name] for p in self.hyperparams}
        changed = {k: v for k, v in changed.items() if v != self._default(k)}
        return format_spec(self.name, changed)

    def _default(self, key: str) -> Any:
        return next(p.default for p in self.hyperparams if p.name == key)

    def __repr__(self) -> str:
        return f"<Estimator {self.spec}>"

    # --- progress -------------------------------------------------------------------------
    def set_progress(self, progress: float) -> None:
        """Set the fraction of training done, in [0, 1]; annealed estimators follow it."""
        progress = float(progress)
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress!r}")
        self.progress = progress

    def coefficients(self) -> dict[str, Any]:
        """Hyperparameters in effect now (annealed estimators resolve their schedule here)."""
        return dict(self._params)

    # --- math (subclasses) ----------------------------------------------------------------
    def backward_rule(
        self, g: torch.Tensor, x: torch.Tensor, noise: torch.Tensor | None, **coeffs: Any
    ) -> torch.Tensor:
        """dL/dx from the incoming gradient ``g``, the input ``x`` and the forward's noise."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """The forward as a bool tensor: ``x > 0``, or ``x + noise > 0`` with noise.

        Noise is float64 so that ``x + noise`` is exact enough for any x the dtype holds.
        """
        if noise is None:
            return x > 0
        return (x.to(noise.dtype) + noise.to(x.device)) > 0

    def sample_noise(
        self, x: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Noise added to x before the threshold in training mode (None: deterministic)."""
        return None

    def area(self) -> float | None:
        """∫ surrogate(x) dx over the real line now; None when infinite."""
        return None

    def peak(self) -> float:
        """max over x of surrogate(x) now (noise-free); the base class searches a grid.

        Built-ins give it in closed form; a test checks each against a dense grid.
        """
        x = torch.cat([torch.zeros(1, dtype=torch.float64), _PEAK_GRID, -_PEAK_GRID])
        return float(self.surrogate(x).max())

    # --- use ------------------------------------------------------------------------------
    def __call__(
        self,
        x: torch.Tensor,
        training: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Binarize ``x``: exact 0/1 of ``x > 0`` (stochastic ones sample when training)."""
        noise = self.sample_noise(x, generator) if (self.stochastic and training) else None
        coeffs = self.coefficients()

        def rule(g: torch.Tensor, x_: torch.Tensor, noise_: torch.Tensor | None) -> torch.Tensor:
            return self.backward_rule(g, x_, noise_, **coeffs)

        return _Step.apply(x, self.step, rule, noise)

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        """backward / g at x for g = 1 (noise-free, current progress): for plots and tests."""
        g = torch.ones_like(x)
        with torch.no_grad():
            return self.backward_rule(g, x, None, **self.coefficients()).to(x.dtype)

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The declared defaults."""
        return {p.name: p.default for p in cls.hyperparams}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Build once to validate ``params`` (raises EstimatorSpecError)."""
        cls(**params)
