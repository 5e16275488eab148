"""The `ste-ablate` command line.

Each subcommand lives in `runners.commands.<name>` and exposes `register(subparsers)`, which adds
its parser and sets `func(args) -> int`. Bad input raises `UserError` (or one of the library's
validation errors): printed as one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn

from runners import determinism
from runners.config import KEY_ALIASES, ConfigError
from runners.errors import UserError, close_names
from runners.openmp import prefer_passive_wait

# Order is the order shown by `ste-ablate --help`. Building the parser imports every module:
# modules that load torch are imported inside the command functions, so `--help` starts at once.
COMMAND_MODULES = (
    "estimators",
    "train",
    "run",
    "status",
    "analyze",
    "dashboard",
    "gradcheck",
    "reproduce",
    "bench",
)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage before an error; we print one line and exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="ste-ablate",
        description=(
            "Straight-through estimator ablations: list estimators, train one run, run ablation "
            "grids (local or SLURM) with W&B tracking, and analyse the results."
        ),
    )
    # Subparsers inherit the parser class, so every subcommand errors in one line too.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"runners.commands.{name}").register(sub)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Bad input (printed as one line, exit code 2): UserError, ConfigError, and
    EstimatorSpecError once the estimators are loaded (before that none can have been raised;
    importing them here would load torch for every command)."""
    spec = sys.modules.get("ste_variants.spec")
    return (UserError, ConfigError) + ((spec.EstimatorSpecError,) if spec else ())


def _unknown_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]
) -> str:
    """argparse's "unrecognized arguments", with what a mistyped --flag may have meant."""
    message = f"unrecognized arguments: {' '.join(unknown)}"
    flag = next((u.split("=", 1)[0] for u in unknown if u.startswith("--")), None)
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(getattr(args, "command", None) or "") if sub else None
    if flag is None or command is None:
        return message
    flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    aliases = {
        f"--{spelt}": f"--{new.replace('_', '-')}"
        for old, new in KEY_ALIASES.items()
        for spelt in (old, old.replace("_", "-"))
    }
    close = close_names(flag, flags, aliases)
    return message + (f" (did you mean {' or '.join(close)}?)" if close else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the executors' and the training loop's own handling: a stop like Ctrl-C,
    exit 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` while a command runs (the default would end the process
    without a word and without the exit code 143 the executors give)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tolerant_output() -> None:
    """Characters the terminal's encoding lacks (σ, τ, ∞ under PYTHONIOENCODING=latin-1) are
    printed escaped instead of ending the command with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def _one_line_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """A warning as the user reads it: one line, without the source line that raised it."""
    return f"ste-ablate: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    prefer_passive_wait()  # before any command imports torch
    _tolerant_output()
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    mode = determinism.mode_for_command(argv)
    if mode in determinism.MODES:
        try:  # before any command module loads torch: the kernels are chosen when it loads
            determinism.pin(mode)
        except UserError as exc:
            print(f"ste-ablate: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(_unknown_arguments(parser, args, unknown))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print("ste-ablate: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"ste-ablate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
