"""Errors that the CLI turns into one-line messages with a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2, nothing written."""

    exit_code = 2
