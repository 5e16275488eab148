"""Estimator specs: the safe ``"name(key=value, ...)"`` parser and canonical formatting.

A spec string is parsed with a small hand-written tokenizer (never ``eval``). Values are
numbers (``4``, ``0.5``, ``1e-3``), booleans (``true``/``false``), quoted strings (``'st'``) or
bare words (``st``); the estimator's hyperparameter declarations then check and convert them.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Iterable, Mapping

__all__ = [
    "EstimatorSpecError",
    "close_matches",
    "format_spec",
    "format_value",
    "parse_spec_string",
    "shown",
    "unknown_param_message",
]

# ASCII only: `\d` would also accept other scripts' digits ("٤", full-width "４"), which int()
# and float() then read silently.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
# Longer integers are read as floats: int() refuses over 4,300 digits, and no hyperparameter
# needs more than a float's precision (the range check then names the value).
_MAX_INT_DIGITS = 18
# Messages quote at most this many characters of a spec, name or value.
_MAX_SHOWN = 60
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlong = 2, 4, 4, 40
# Integral floats above this print with repr: "1e+20" reads better than twenty-one digits.
_MAX_INT_PRINT = 1e15


class EstimatorSpecError(ValueError):
    """A bad estimator spec: unknown name or hyperparameter, bad value, malformed string.

    The message is always one line of bounded length (long specs, names and values are quoted
    cut short, see :func:`shown`), so the CLI can print it as ``ste-ablate: error: ...``.
    """


def shown(value: object) -> str:
    """``repr(value)``, cut to about 60 characters with the full length noted when longer.

    Containers are shown a few levels and items deep (`reprlib`): a value built from YAML
    aliases can be far too large to print in full.
    """
    if isinstance(value, str):
        if len(value) + 2 <= _MAX_SHOWN:
            return repr(value)
        return f"{value[: _MAX_SHOWN - 10]!r}... ({len(value)} characters)"
    try:
        text = _SHORT.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_SHOWN else f"{text[: _MAX_SHOWN - 4]} ..."


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
            raise EstimatorSpecError(f"malformed estimator spec {shown(spec)}: unexpected {char!r}")
        else:
            current.append(char)
    if quote:
        raise EstimatorSpecError(f"malformed estimator spec {shown(spec)}: unclosed quote")
    parts.append("".join(current))
    return parts


def _parse_value(text: str, key: str, spec: str) -> object:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.match(text):
        return int(text) if len(text.lstrip("+-")) <= _MAX_INT_DIGITS else float(text)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _NAME.match(text):
        return text
    raise EstimatorSpecError(
        f"malformed estimator spec {shown(spec)}: cannot read the value {shown(text)} of "
        f"{shown(key)} "
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
            f"malformed estimator spec {shown(spec)}: expected 'name' or 'name(key=value, ...)'"
        )
    if not paren:
        return name, {}
    if not rest.endswith(")"):
        raise EstimatorSpecError(f"malformed estimator spec {shown(spec)}: missing closing ')'")
    body = rest[:-1].strip()
    values: dict[str, object] = {}
    if not body:
        return name, values
    for part in _split_args(body, spec):
        key, eq, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not _NAME.match(key) or not raw:
            raise EstimatorSpecError(
                f"malformed estimator spec {shown(spec)}: expected key=value, "
                f"got {shown(part.strip())}"
            )
        if key in values:
            raise EstimatorSpecError(
                f"malformed estimator spec {shown(spec)}: {shown(key)} given twice"
            )
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
    if len(word) > 2 * _MAX_SHOWN:  # nothing registered is that long; spare difflib the work
        return ""
    matches = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def unknown_param_message(estimator: str, key: str, declared: Mapping[str, object]) -> str:
    """One-line message for a hyperparameter the estimator does not have."""
    if not declared:
        return f"{estimator}: unknown hyperparameter {shown(key)} ({estimator} takes none)"
    return (
        f"{estimator}: unknown hyperparameter {shown(key)}{close_matches(key, declared)} "
        f"(known: {', '.join(declared)})"
    )
