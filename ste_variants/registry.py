"""The estimator registry: register by name, resolve specs, describe, load plugins.

Third-party packages add estimators through the entry-point group ``ste_variants``: each entry
point names a module (importing it runs its ``@register_estimator`` decorators) or an
:class:`Estimator` subclass (registered if it is not yet). Plugins load lazily, once, at the
first lookup; a broken plugin is a warning, not a crash.
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

from ste_variants.base import Estimator
from ste_variants.spec import EstimatorSpecError, close_matches, parse_spec_string, shown

__all__ = [
    "ENTRY_POINT_GROUP",
    "canonical_spec",
    "describe",
    "get_estimator",
    "list_estimators",
    "load_plugins",
    "register_estimator",
]

ENTRY_POINT_GROUP = "ste_variants"
# "threshold": a custom backward through a 0/1 threshold; "unbiased": objective evaluations.
FAMILIES = ("threshold", "unbiased")

_REGISTRY: dict[str, type[Estimator]] = {}
_plugins_loaded = False
_plugin_lock = threading.RLock()  # a plugin may look names up while it loads

E = TypeVar("E", bound=type[Estimator])


def register_estimator(cls: E) -> E:
    """Class decorator: add an :class:`Estimator` subclass to the registry under ``cls.name``.

    Raises:
        TypeError: ``cls`` is not an Estimator subclass or lacks its metadata.
        ValueError: The name is already registered (silently replacing an estimator would
            change results).
    """
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise TypeError(f"register_estimator expects an Estimator subclass, got {cls!r}")
    name = cls.name
    if not name or not name.isidentifier():
        raise TypeError(f"{cls.__qualname__}.name must be an identifier, got {name!r}")
    missing = [attr for attr in ("backward_text", "paper") if not getattr(cls, attr)]
    if missing:
        raise TypeError(f"estimator {name!r} lacks metadata: {', '.join(missing)}")
    if cls.family not in FAMILIES:
        raise TypeError(f"estimator {name!r}: family must be one of {FAMILIES}, got {cls.family!r}")
    if cls.family == "threshold" and cls.backward_rule is Estimator.backward_rule:
        raise TypeError(f"estimator {name!r} does not implement backward_rule")
    if cls.family == "unbiased" and not callable(getattr(cls, "estimate", None)):
        raise TypeError(f"estimator {name!r} (unbiased) does not implement estimate")
    seen = [p.name for p in cls.hyperparams]
    if len(seen) != len(set(seen)):
        raise TypeError(f"estimator {name!r} declares a hyperparameter twice")
    unbounded = [
        p.name
        for p in cls.hyperparams
        if p.kind != "str" and not all(b is not None and math.isfinite(b) for b in (p.low, p.high))
    ]
    if unbounded:
        # An unbounded slope or temperature overflows to inf somewhere, and inf·0 is NaN.
        raise TypeError(
            f"estimator {name!r}: hyperparameter {unbounded[0]!r} needs finite low and high bounds"
        )
    if name in _REGISTRY:
        raise ValueError(
            f"estimator {name!r} is already registered by {_REGISTRY[name].__module__}"
        )
    try:  # the defaults must satisfy their own declared ranges
        cls()
    except EstimatorSpecError as exc:
        raise TypeError(f"estimator {name!r} has an invalid default: {exc}") from exc
    _REGISTRY[name] = cls
    return cls


def _unregister(name: str) -> None:
    """Remove ``name`` (for tests of registration and plugins)."""
    _REGISTRY.pop(name, None)


def load_plugins(*, force: bool = False) -> list[str]:
    """Load the ``ste_variants`` entry points (once, unless ``force``).

    Returns:
        The names of the entry points that loaded without error.
    """
    global _plugins_loaded
    with _plugin_lock:
        if _plugins_loaded and not force:
            return []
        _plugins_loaded = True
        loaded: list[str] = []
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = entry.load()
                if isinstance(obj, type) and issubclass(obj, Estimator):
                    if _REGISTRY.get(obj.name) is not obj:
                        register_estimator(obj)
                loaded.append(entry.name)
            except Exception as exc:  # a broken plugin must not break the registry
                detail = str(exc).splitlines()[0] if str(exc) else ""
                warnings.warn(
                    f"ste_variants: plugin {entry.name!r} ({entry.value}) failed to load: "
                    f"{type(exc).__name__}: {detail}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return loaded


def _registry() -> dict[str, type[Estimator]]:
    load_plugins()
    return _REGISTRY


def list_estimators() -> list[str]:
    """Registered names: built-ins in registration order, then plugins."""
    return list(_registry())


def _lookup(name: str) -> type[Estimator]:
    registry = _registry()
    if name not in registry:
        hint = close_matches(name, registry)
        raise EstimatorSpecError(
            f"unknown estimator {shown(name)}{hint}"
            + ("" if hint else " (see `ste-ablate estimators`)")
        )
    return registry[name]


def get_estimator(spec: str | Mapping[str, Any] | Estimator) -> Estimator:
    """Resolve a spec into a fresh estimator (an Estimator instance is returned as is).

    Args:
        spec: ``"sigmoid"``, ``"sigmoid(beta=4)"``, ``{"name": "sigmoid", "beta": 4}`` or an
            Estimator.

    Raises:
        EstimatorSpecError: Unknown name or hyperparameter, bad value, malformed string.
    """
    if isinstance(spec, Estimator):
        return spec
    if isinstance(spec, str):
        name, params = parse_spec_string(spec)
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise EstimatorSpecError(f"estimator mapping needs a string 'name', got {shown(spec)}")
        bad_keys = [k for k in params if not isinstance(k, str)]
        if bad_keys:
            raise EstimatorSpecError(
                f"{shown(name)}: hyperparameter names must be strings: {shown(bad_keys)}"
            )
    else:
        raise EstimatorSpecError(
            f"an estimator spec is a name, 'name(key=value)', a mapping or an Estimator; "
            f"got {type(spec).__name__}"
        )
    return _lookup(name)(**params)


def canonical_spec(spec: str | Mapping[str, Any] | Estimator) -> str:
    """The canonical string of a spec: equal to ``get_estimator(spec).spec``."""
    return get_estimator(spec).spec


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def describe(spec: str | Mapping[str, Any] | Estimator) -> dict[str, Any]:
    """Metadata of an estimator (JSON-ready).

    Args:
        spec: A name or any spec; hyperparameters given in it appear as ``value``.

    Returns:
        A dict with ``name``, ``spec``, ``summary``, ``forward``, ``backward`` (text), ``backward_short``,
        ``params`` ({name: {default, value, type, low, high, ..., doc}}), ``paper``, ``arxiv``,
        ``cite``, ``stochastic``, ``annealed``, ``family`` ("threshold" or "unbiased"),
        ``samples_from`` ("bernoulli", "hard_sigmoid" or None), ``reference_code``, ``area`` (∫ surrogate dx at progress 0, None if
        infinite or no surrogate), ``area_end`` (at progress 1), ``peak`` (max of the surrogate
        at progress 0; None for the unbiased family), ``peak_end`` (at progress 1), ``area_note`` and ``doc``. Area and peak are those of the
        noise-free surrogate (eval mode for stochastic estimators), on the 0/1 step.
    """
    est = get_estimator(spec)
    cls = type(est)
    params = {}
    for p in cls.hyperparams:
        info = p.describe()
        info["value"] = est.params[p.name]
        params[p.name] = info
    fresh = cls(**est.params)
    if cls.family == "threshold":
        area_start, peak_start = _clean(fresh.area()), fresh.peak()
        fresh.set_progress(1.0)
        area_end, peak_end = _clean(fresh.area()), fresh.peak()
    else:  # no surrogate to measure
        area_start = peak_start = area_end = peak_end = None
    doc = (cls.__doc__ or "").strip()
    return {
        "name": cls.name,
        "spec": est.spec,
        "summary": doc.splitlines()[0] if doc else "",
        "forward": cls.forward_text,
        "backward": cls.backward_text,
        "backward_short": cls.backward_short or cls.backward_text,
        "params": params,
        "paper": cls.paper,
        "arxiv": cls.arxiv,
        "cite": cls.cite,
        "stochastic": cls.stochastic,
        "annealed": cls.annealed,
        "family": cls.family,
        "samples_from": cls.samples_from,
        "reference_code": cls.reference_code,
        "area": area_start,
        "area_end": area_end,
        "peak": peak_start,
        "peak_end": peak_end,
        "area_note": cls.area_note,
        "doc": doc,
    }
