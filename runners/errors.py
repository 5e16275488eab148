"""Errors that the CLI turns into one-line messages with a non-zero exit, and the bounded
repr every such message uses for a value it quotes."""

import reprlib

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
