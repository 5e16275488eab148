"""Estimator specs: the safe ``"name(key=value, ...)"`` parser and canonical formatting.

A spec string is parsed with a small hand-written tokenizer (never ``eval``). Values are
numbers (``4``, ``0.5``, ``1e-3``), booleans (``true``/``false``), quoted strings (``'st'``) or
bare words (``st``); the estimator's hyperparameter declarations then check and convert them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "EstimatorSpecError",
    "close_matches",
    "format_spec",
    "format_value",
    "parse_spec_string",
    "unknown_param_message",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
# Integral floats above this print with repr: "1e+20" reads better than twenty-one digits.
_MAX_INT_PRINT = 1e15


class EstimatorSpecError(ValueError):
    """A bad estimator spec: unknown name or hyperparameter, bad value, malformed string.

    The message is always one line, so the CLI can print it as ``ste-ablate: error: ...``.
    """


def _split_args(body: str, spec: str) -> list[str]:
    """Split ``a=1, b='x,y'`` on the commas that are outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in body:
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == ",":
            parts.append("".join(current))
            current = []
        elif char in "()[]{}":
            raise EstimatorSpecError(f"malformed estimator spec {spec!r}: unexpected {char!r}")
        else:
            current.append(char)
    if quote:
        raise EstimatorSpecError(f"malformed estimator spec {spec!r}: unclosed quote")
    parts.append("".join(current))
    return parts


def _parse_value(text: str, key: str, spec: str) -> object:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _NAME.match(text):
        return text
    raise EstimatorSpecError(
        f"malformed estimator spec {spec!r}: cannot read the value {text!r} of {key!r} "
        "(use a number, true/false, or a word)"
    )


def parse_spec_string(spec: str) -> tuple[str, dict[str, object]]:
    """Parse ``"name"`` or ``"name(key=value, ...)"`` into the name and raw values.

    Args:
        spec: The spec string.

    Returns:
        ``(name, {key: value})`` with values as int, float, bool or str (not yet validated).

    Raises:
        EstimatorSpecError: The string is malformed (one-line message).
    """
    text = spec.strip()
    if not text:
        raise EstimatorSpecError("empty estimator spec")
    name, paren, rest = text.partition("(")
    name = name.strip()
    if not _NAME.match(name):
        raise EstimatorSpecError(
            f"malformed estimator spec {spec!r}: expected 'name' or 'name(key=value, ...)'"
        )
    if not paren:
        return name, {}
    if not rest.endswith(")"):
        raise EstimatorSpecError(f"malformed estimator spec {spec!r}: missing closing ')'")
    body = rest[:-1].strip()
    values: dict[str, object] = {}
    if not body:
        return name, values
    for part in _split_args(body, spec):
        key, eq, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not _NAME.match(key) or not raw:
            raise EstimatorSpecError(
                f"malformed estimator spec {spec!r}: expected key=value, got {part.strip()!r}"
            )
        if key in values:
            raise EstimatorSpecError(f"malformed estimator spec {spec!r}: {key!r} given twice")
        values[key] = _parse_value(raw, key, spec)
    return name, values


def format_value(value: object) -> str:
    """Format one hyperparameter value for a canonical spec.

    Integral floats print as ints (``4``), other floats with ``repr`` (``0.5``), strings bare
    when they are plain words and quoted otherwise, booleans as ``true``/``false``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < _MAX_INT_PRINT:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return (
            value if _NAME.match(value) and value.lower() not in ("true", "false") else repr(value)
        )
    return str(value)


def format_spec(name: str, changed: Mapping[str, object]) -> str:
    """Canonical spec: the name, then the non-default values sorted by key (or just the name)."""
    if not changed:
        return name
    args = ", ".join(f"{key}={format_value(changed[key])}" for key in sorted(changed))
    return f"{name}({args})"


def close_matches(word: str, options: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` for the close matches of ``word`` (empty if none)."""
    matches = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def unknown_param_message(estimator: str, key: str, declared: Mapping[str, object]) -> str:
    """One-line message for a hyperparameter the estimator does not have."""
    if not declared:
        return f"{estimator}: unknown hyperparameter {key!r} ({estimator} takes none)"
    return (
        f"{estimator}: unknown hyperparameter {key!r}{close_matches(key, declared)} "
        f"(known: {', '.join(declared)})"
    )
