"""Errors that the CLI turns into one-line messages with a non-zero exit, the bounded repr
every such message uses for a value it quotes, and the one "did you mean" for unknown names."""

import difflib
import reprlib
from collections.abc import Iterable, Mapping

SHORT_REPR_MAX = 120
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, nothing written."""

    exit_code = 2


def short_repr(value: object) -> str:
    """`repr(value)` in at most SHORT_REPR_MAX characters, however large or deep `value` is (a
    YAML alias bomb quoted in full takes minutes and gigabytes)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<a {value.bit_length()}-bit integer>" if isinstance(value, int) else "<value>"
    return text if len(text) <= SHORT_REPR_MAX else text[: SHORT_REPR_MAX - 3] + "..."


def unknown_name(
    key: object, names: Iterable[str], what: str, aliases: Mapping[str, str] | None = None
) -> str:
    """``unknown WHAT 'key' (did you mean 'x' or 'y'?)``: `close_names` among `names`."""
    close = close_names(key, names, aliases)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {what} {short_repr(key)}{hint}"


def close_names(
    key: object, names: Iterable[str], aliases: Mapping[str, str] | None = None
) -> list[str]:
    """Up to three of `names` that `key` may have meant: its alias first, then close matches.

    `aliases` maps names people use to the one meant where spelling is no guide (difflib finds
    ``lr`` nowhere near ``learning_rate``); an alias counts only when its target is in `names`.
    """
    names = list(names)
    meant = (aliases or {}).get(str(key).lower())
    close = [meant] if meant in names else []
    close += [c for c in difflib.get_close_matches(str(key), names, n=3, cutoff=0.6) if c != meant]
    return close[:3]
